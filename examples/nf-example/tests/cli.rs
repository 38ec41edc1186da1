//! The example NF's command line, without nfhost: it says what it needs.

use std::process::Command;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nf-example"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("nf-example runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn without_nfhost_it_says_how_to_start_it() {
    let (code, err) = run(&[], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("not started by nfhost"), "{err}");
    let (code, err) = run(&["--socket", "/nonexistent/attach.sock"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("go together"), "{err}");
}

#[test]
fn an_endpoint_that_is_not_there_is_named() {
    let (code, err) = run(
        &["--socket", "/nonexistent/attach.sock", "--secret", "x"],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/attach.sock"), "{err}");
}
