//! NFs of the user's own, built from `examples/nf-example` (which depends on nf-sdk
//! alone): one run by nfhost as an `exec` NF and one attached from outside as an
//! `external` NF, as the two hops of a chain carrying gen-wire traffic. The
//! external one is killed (its VF is scrubbed and waits), refused with a wrong
//! secret, attached again with the same secret while a silent connection is
//! pending (closed after the Hello timeout), and refused as a second connection;
//! deleting the chain removes its endpoint.

#[path = "common/server.rs"]
mod server;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use nfhost_api::proto;
use server::{
    Clients, GEN, Server, TempDir, create_chain, events, get_nf, runtime, vf_stats, wait_until,
};

/// The example NF's binary, built next to nfhost's by `cargo test --workspace`.
fn example_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_nfhost")).with_file_name("nf-example");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p nf-example` (cargo test --workspace does)",
        path.display()
    );
    path
}

fn state(rt: &tokio::runtime::Runtime, c: &mut Clients, name: &str) -> i32 {
    get_nf(rt, c, name).status.unwrap_or_default().state
}

/// `nf-example` attaching to an endpoint from outside nfhost.
fn attach(socket: &str, secret: &str) -> Child {
    Command::new(example_binary())
        .args(["--socket", socket, "--secret", secret])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nf-example starts")
}

/// Waits for a refused client to give up, and returns its stderr.
fn refused(child: Child) -> String {
    let out = child.wait_with_output().expect("nf-example ends");
    assert!(
        !out.status.success(),
        "a refused client exits with an error"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn exec_and_external_nfs_from_the_example_crate_carry_a_chain() {
    let data = TempDir::new("external");
    let rt = runtime();
    let server = Server::start(&data.0, GEN);
    let mut c = Clients::new(server.channel(&rt));

    let mut chain = nfhost_api::chain_file::parse_chain(include_str!("../examples/edge.toml"))
        .expect("example chain parses");
    chain.name = "chains/own".into();
    chain.nfs = vec![
        proto::ChainNf {
            name: "mine".into(),
            kind: "exec".into(),
            config: r#"{"swap_macs": false}"#.into(),
            exec: Some(proto::ExecSpec {
                path: example_binary().display().to_string(),
                ..Default::default()
            }),
        },
        proto::ChainNf {
            name: "theirs".into(),
            kind: "external".into(),
            config: r#"{"swap_macs": true}"#.into(),
            exec: None,
        },
    ];
    let chain = create_chain(&rt, &mut c, chain);
    let last = chain.vfs[1].clone();

    // The exec NF runs; the external one waits at its endpoint.
    wait_until("the exec NF runs", 20, || {
        state(&rt, &mut c, "mine") == proto::NfState::Running as i32
    });
    let theirs = get_nf(&rt, &mut c, "theirs");
    assert_eq!(theirs.status.unwrap().state, proto::NfState::Waiting as i32);
    let endpoint = theirs.endpoint.expect("an external NF shows its endpoint");
    assert!(
        endpoint.socket.ends_with("/pf0-vf1/attach.sock"),
        "{endpoint:?}"
    );
    assert_eq!(endpoint.secret.len(), 23);
    assert!(endpoint.secret.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(endpoint.mac.len(), 17, "{endpoint:?}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&endpoint.socket).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // Attached from outside with the secret: the chain carries traffic through both.
    let mut external = attach(&endpoint.socket, &endpoint.secret);
    wait_until("the external NF attached", 20, || {
        state(&rt, &mut c, "theirs") == proto::NfState::Running as i32
    });
    wait_until("traffic through both", 20, || {
        vf_stats(&rt, &mut c, &last).tx_packets > 500
    });
    wait_until("the exec NF's report", 20, || {
        get_nf(&rt, &mut c, "mine")
            .status
            .unwrap()
            .report
            .contains("by_ethertype")
    });
    let exec_pid = get_nf(&rt, &mut c, "mine").status.unwrap().pid;
    let cmdline = std::fs::read(format!("/proc/{exec_pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("nf-example"),
        "the exec NF is the binary"
    );
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("swap_macs"),
        "no config in argv"
    );

    // Killed: its VF is scrubbed and waits for the next process.
    external.kill().unwrap();
    external.wait().unwrap();
    wait_until("waiting again", 20, || {
        state(&rt, &mut c, "theirs") == proto::NfState::Waiting as i32
    });
    assert!(
        events(&rt, &mut c)
            .iter()
            .any(|e| e.nf == "nfs/theirs"
                && e.message.contains("scrubbed after nfs/theirs detached"))
    );

    // A wrong secret is refused and counted, and changes nothing.
    let err = refused(attach(&endpoint.socket, "not-the-secret-at-all-xx"));
    assert!(
        err.contains("PermissionDenied") || err.contains("refused"),
        "{err}"
    );
    assert!(
        !err.contains(&endpoint.secret),
        "the secret is never echoed"
    );
    assert_eq!(vf_stats(&rt, &mut c, &last).attach_refused, 1);
    assert_eq!(state(&rt, &mut c, "theirs"), proto::NfState::Waiting as i32);

    // A connection that says nothing holds nothing: the same secret attaches a new
    // process meanwhile, and traffic flows again; the silent one is closed after
    // the Hello timeout (5 s) and counted.
    let silent = rustix::net::socket(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        None,
    )
    .unwrap();
    let addr = rustix::net::SocketAddrUnix::new(endpoint.socket.as_str()).unwrap();
    rustix::net::connect(&silent, &addr).unwrap();
    let before = vf_stats(&rt, &mut c, &last).tx_packets;
    let mut external = attach(&endpoint.socket, &endpoint.secret);
    wait_until("attached again", 20, || {
        state(&rt, &mut c, "theirs") == proto::NfState::Running as i32
    });
    wait_until("the silent connection closed", 20, || {
        vf_stats(&rt, &mut c, &last).attach_refused == 2
    });
    let mut buf = [0u8; 16];
    let (n, _) = rustix::net::recv(&silent, &mut buf, rustix::net::RecvFlags::empty()).unwrap();
    assert_eq!(n, 0, "the silent connection reads its end");
    wait_until("traffic again", 20, || {
        vf_stats(&rt, &mut c, &last).tx_packets > before + 500
    });

    // A second connection while one is attached is refused, the first keeps going.
    refused(attach(&endpoint.socket, &endpoint.secret));
    assert_eq!(vf_stats(&rt, &mut c, &last).attach_refused, 3);
    let before = vf_stats(&rt, &mut c, &last).tx_packets;
    wait_until("the first still carries", 20, || {
        vf_stats(&rt, &mut c, &last).tx_packets > before + 500
    });
    assert_eq!(
        get_nf(&rt, &mut c, "theirs").endpoint.unwrap().secret,
        endpoint.secret
    );

    // Deleting the chain closes the endpoint and removes its socket.
    rt.block_on(c.chain.delete_chain(proto::DeleteChainRequest {
        name: "chains/own".into(),
    }))
    .unwrap();
    wait_until("the endpoint gone", 20, || {
        !std::path::Path::new(&endpoint.socket).exists()
    });
    // The external process learns it: its socket closed, it ends.
    wait_until("the external NF ends", 20, || {
        external.try_wait().unwrap().is_some()
    });
    server.stop();
}
