//! Every `nfctl` command against a real `nfhost serve`.

#[path = "common/server.rs"]
mod server;

use std::process::{Command, Output};

use server::{Server, TempDir, wait_until};

fn nfctl(server: &Server, args: &[&str]) -> Output {
    Command::new(server::nfctl_bin())
        .arg("--server")
        .arg(server.url())
        .args(args)
        .output()
        .expect("nfctl runs")
}

/// Runs nfctl, asserts success, returns stdout.
fn ok(server: &Server, args: &[&str]) -> String {
    let out = nfctl(server, args);
    assert!(
        out.status.success(),
        "nfctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs nfctl, asserts failure, returns stderr.
fn fails(server: &Server, args: &[&str]) -> String {
    let out = nfctl(server, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "nfctl {args:?} should fail with 1"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn every_nfctl_command_against_the_real_server() {
    let data = TempDir::new("nfctl");
    let s = Server::start(&data.0, server::GEN);

    // PF.
    let pf = json(&ok(&s, &["-o", "json", "pf", "get"]));
    assert_eq!(pf["num_vfs"], 8);
    ok(&s, &["pf", "set-vfs", "8", "--dry-run"]);
    let err = fails(&s, &["pf", "set-vfs", "4"]);
    assert!(
        err.contains("FailedPrecondition")
            || err.contains("failed precondition")
            || err.contains("set the count to 0"),
        "{err}"
    );

    // VFs.
    let vfs = json(&ok(&s, &["-o", "json", "vf", "list"]));
    assert_eq!(vfs.as_array().map(Vec::len), Some(8));
    ok(
        &s,
        &[
            "vf",
            "set",
            "5",
            "--vlan",
            "7",
            "--qos",
            "3",
            "--spoofchk",
            "off",
            "--trust",
            "on",
            "--link-state",
            "enable",
            "--max-tx-rate",
            "1000",
            "--mtu",
            "9000",
        ],
    );
    let vf5 = json(&ok(&s, &["-o", "json", "vf", "get", "5"]));
    assert_eq!(
        (
            vf5["vlan"].as_u64(),
            vf5["qos"].as_u64(),
            vf5["mtu"].as_u64()
        ),
        (Some(7), Some(3), Some(9000))
    );
    assert_eq!(vf5["trust"], true);
    ok(&s, &["vf", "reset", "5"]);
    let err = fails(&s, &["vf", "set", "5", "--mtu", "10"]);
    assert!(err.contains("MTU 10 is out of range"), "{err}");

    // NFs.
    ok(
        &s,
        &["nf", "create", "solo", "--kind", "l2fwd", "--vf", "7"],
    );
    let nfs = ok(&s, &["nf", "list"]);
    assert!(nfs.contains("solo"), "{nfs}");
    let solo = json(&ok(&s, &["-o", "json", "nf", "get", "solo"]));
    assert_eq!(solo["vf"], "pfs/0/vfs/7");
    let err = fails(&s, &["nf", "get", "ghost"]);
    assert!(err.contains("nfs/ghost not found"), "{err}");
    let err = fails(&s, &["nf", "create", "x", "--kind", "teleport"]);
    assert!(err.contains("nf.kind"), "field violation missing: {err}");

    // Chains.
    ok(&s, &["chain", "apply", "examples/edge.toml", "--dry-run"]);
    assert!(
        !ok(&s, &["chain", "list"]).contains("edge"),
        "a dry run created the chain"
    );
    let out = ok(&s, &["chain", "apply", "examples/edge.toml"]);
    assert!(out.starts_with("chains/edge: created\n"), "{out}");
    assert!(ok(&s, &["chain", "list"]).contains("edge"));
    let chain = json(&ok(&s, &["-o", "json", "chain", "get", "edge"]));
    let pid = |name: &str| {
        json(&ok(&s, &["-o", "json", "nf", "get", name]))["status"]["pid"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_until("the chain's NFs running", 10, || {
        pid("mon") != 0 && pid("fwd") != 0
    });
    // Attached to its VF and in its loop: the monitor has reported.
    wait_until("the monitor reporting", 10, || {
        json(&ok(&s, &["-o", "json", "nf", "get", "mon"]))["status"]["report"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    });
    let (mon, fwd) = (pid("mon"), pid("fwd"));

    // Applying it again: nothing to change. Edited: the changed NF takes its new
    // config in place.
    let out = ok(&s, &["chain", "apply", "examples/edge.toml"]);
    assert!(out.starts_with("chains/edge: unchanged\n"), "{out}");
    assert_eq!((pid("mon"), pid("fwd")), (mon, fwd));
    let edited = TempDir::new("nfctl-edit");
    let file = edited.0.join("edge.toml");
    std::fs::write(
        &file,
        include_str!("../examples/edge.toml").replace("top = 5", "top = 3"),
    )
    .expect("write the edited chain file");
    let file = file.to_string_lossy().into_owned();
    let out = ok(&s, &["chain", "apply", &file, "--dry-run"]);
    assert!(
        out.contains("valid (dry run, nothing changed): would reconfigure mon"),
        "{out}"
    );
    assert_eq!(pid("mon"), mon, "a dry run restarted the NF");
    let out = ok(&s, &["chain", "apply", &file]);
    assert!(
        out.starts_with(
            "chains/edge: updated: mon reconfigured in place (same process); fwd unchanged\n"
        ),
        "{out}"
    );
    let after = json(&ok(&s, &["-o", "json", "chain", "get", "edge"]));
    assert_eq!(after["vfs"], chain["vfs"], "the hops kept their VFs");
    assert_eq!(after["nfs"][0]["config"], "{\"top\":3}");
    assert_eq!(pid("fwd"), fwd, "the unchanged NF kept running");
    assert_eq!(pid("mon"), mon, "the monitor took its new config in place");
    // Changing the hops is refused, with what to do instead.
    std::fs::write(
        edited.0.join("edge.toml"),
        include_str!("../examples/edge.toml").replace("\"l2fwd\"", "\"monitor\""),
    )
    .expect("write the edited chain file");
    let err = fails(&s, &["chain", "apply", &file]);
    assert!(
        err.contains("FAILED_PRECONDITION")
            && err.contains("delete and re-create the chain to change its hops")
            && err.contains("nfctl chain delete edge"),
        "{err}"
    );
    let last_vf = chain["vfs"][1]
        .as_str()
        .map(str::to_owned)
        .expect("two hops");

    // Telemetry: traffic through the chain shows in stats; events list what happened.
    wait_until("traffic in stats", 10, || {
        let stats = json(&ok(&s, &["-o", "json", "stats"]));
        stats["vfs"]
            .as_array()
            .and_then(|v| v.iter().find(|x| x["vf"] == last_vf.as_str()))
            .and_then(|x| x["tx_packets"].as_u64())
            .is_some_and(|n| n > 100)
    });
    let table = ok(&s, &["stats"]);
    assert!(table.contains("mon") && table.contains("fwd"), "{table}");

    // A two-way chain shows both directions.
    ok(&s, &["chain", "apply", "examples/stick.toml"]);
    let view = ok(&s, &["chain", "get", "stick"]);
    assert!(view.contains("vlan 200, two-way"), "{view}");
    assert!(
        view.contains("vlan 100 ⇄ stick-fw ⇄ stick-mon ⇄ vlan 200"),
        "{view}"
    );
    assert!(ok(&s, &["chain", "list"]).contains("vlan 200, two-way"));
    let stick = json(&ok(&s, &["-o", "json", "chain", "get", "stick"]));
    assert_eq!(stick["egress"]["two_way"], true, "{stick}");
    ok(&s, &["chain", "delete", "stick"]);
    let events = ok(&s, &["events", "--limit", "50"]);
    assert!(events.contains("chains/edge"), "{events}");

    // Deletes.
    ok(&s, &["chain", "delete", "edge"]);
    ok(&s, &["nf", "delete", "solo"]);
    assert!(!ok(&s, &["nf", "list"]).contains("solo"));
    let err = fails(&s, &["chain", "delete", "edge"]);
    assert!(err.contains("not found"), "{err}");
    s.stop();
}

#[test]
fn nfctl_creates_exec_and_external_nfs_and_shows_the_endpoint() {
    let data = TempDir::new("nfctl-kinds");
    let s = Server::start(&data.0, server::GEN);

    // external: waits at its endpoint, whose keys are what a client needs.
    ok(&s, &["nf", "create", "theirs", "--kind", "external"]);
    let nf = json(&ok(&s, &["-o", "json", "nf", "get", "theirs"]));
    let endpoint = &nf["endpoint"];
    let socket = endpoint["socket"].as_str().expect("socket");
    assert!(
        socket.ends_with("/attach.sock") && std::path::Path::new(socket).exists(),
        "{nf}"
    );
    let memif = endpoint["memif_socket"].as_str().expect("memif_socket");
    assert!(
        memif.ends_with("/memif.sock") && std::path::Path::new(memif).exists(),
        "{nf}"
    );
    assert_eq!(endpoint["secret"].as_str().map(str::len), Some(23), "{nf}");
    assert_eq!(endpoint["mac"].as_str().map(str::len), Some(17), "{nf}");
    wait_until("waiting", 10, || {
        ok(&s, &["nf", "get", "theirs"]).contains("waiting")
    });
    let text = ok(&s, &["nf", "get", "theirs"]);
    assert!(text.contains("Socket") && text.contains("Secret"), "{text}");

    // exec: the binary, its arguments after `--`, its environment.
    let binary =
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_nfhost")).with_file_name("nf-example");
    let path = binary.to_str().expect("UTF-8 path");
    ok(
        &s,
        &[
            "nf",
            "create",
            "mine",
            "--kind",
            "exec",
            "--path",
            path,
            "--env",
            "MODE=test",
            "--",
        ],
    );
    let nf = json(&ok(&s, &["-o", "json", "nf", "get", "mine"]));
    assert_eq!(nf["exec"]["path"], path, "{nf}");
    assert_eq!(nf["exec"]["env"]["MODE"], "test", "{nf}");
    wait_until("the exec NF runs", 20, || {
        ok(&s, &["nf", "get", "mine"]).contains("running")
    });

    // What is refused, and why.
    let err = fails(&s, &["nf", "create", "nopath", "--kind", "exec"]);
    assert!(err.contains("--path"), "{err}");
    let err = fails(
        &s,
        &[
            "nf",
            "create",
            "stray",
            "--kind",
            "l2fwd",
            "--path",
            "/bin/true",
        ],
    );
    assert!(err.contains("--kind exec only"), "{err}");
    let err = fails(
        &s,
        &[
            "nf",
            "create",
            "ghost",
            "--kind",
            "exec",
            "--path",
            "/no/such/nf",
        ],
    );
    assert!(err.contains("not an executable file"), "{err}");
    let err = fails(
        &s,
        &[
            "nf",
            "create",
            "rel",
            "--kind",
            "exec",
            "--path",
            "nf-example",
        ],
    );
    assert!(err.contains("absolute path"), "{err}");

    // Deleting the external NF removes its endpoint.
    ok(&s, &["nf", "delete", "theirs"]);
    wait_until("the endpoint gone", 10, || {
        !std::path::Path::new(socket).exists()
    });
    s.stop();
}
