//! NF processes as nfhost starts them, seen from outside: their configs are not on
//! their command lines or in their environments (a 3,000-rule firewall, over the
//! attach socket's packet size, starts), they do not run as root, keep no
//! capabilities and inherit nothing but their attach socket; an over-size request
//! is refused with the right code; a stopped NF is found unresponsive and
//! restarted, and an idle stopped one is left alone.

#[path = "common/http.rs"]
mod http;
#[path = "common/server.rs"]
mod server;

use std::time::{Duration, Instant};

use nfhost_api::proto;
use server::{Clients, GEN, Server, TempDir, events, free_port, get_nf, runtime, wait_until};
use tonic::Code;

/// A firewall config of `n` distinct rules, each carrying `marker` in its port
/// range so that it can be searched for.
fn firewall_rules(n: usize) -> String {
    let rules: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"action": "allow", "proto": "tcp", "src": "10.{}.{}.0/24", "dport": "{}-{}"}}"#,
                (i / 250) % 250,
                i % 250,
                1000 + i,
                61000 + i % 1000
            )
        })
        .collect();
    format!(r#"{{"default": "deny", "rules": [{}]}}"#, rules.join(", "))
}

fn nf_status(rt: &tokio::runtime::Runtime, c: &mut Clients, name: &str) -> proto::NfStatus {
    get_nf(rt, c, name).status.unwrap_or_default()
}

fn create_nf(
    rt: &tokio::runtime::Runtime,
    c: &mut Clients,
    nf: proto::Nf,
) -> Result<proto::Nf, tonic::Status> {
    rt.block_on(c.nf.create_nf(proto::CreateNfRequest {
        nf: Some(nf),
        validate_only: false,
    }))
    .map(tonic::Response::into_inner)
}

/// `Key:\tvalues` lines of `/proc/PID/status`.
fn status_field(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
        .to_owned()
}

#[test]
fn a_large_config_travels_off_the_command_line_to_an_unprivileged_nf() {
    let data = TempDir::new("sandbox");
    let rt = runtime();
    let server = Server::start(&data.0, GEN);
    let mut c = Clients::new(server.channel(&rt));

    // 3,000 rules: about 200 KB, three times the attach socket's packet limit.
    let config = firewall_rules(3000);
    assert!(config.len() > 3 * 64 * 1024, "{} bytes", config.len());
    let created = create_nf(
        &rt,
        &mut c,
        proto::Nf {
            name: "bigfw".into(),
            kind: "firewall".into(),
            config: config.clone(),
            ..Default::default()
        },
    )
    .expect("a 3,000-rule firewall is accepted");
    assert_eq!(created.config, config);
    wait_until("the firewall runs", 20, || {
        let s = nf_status(&rt, &mut c, "bigfw");
        s.state == proto::NfState::Running as i32 && s.pid != 0
    });
    let pid = nf_status(&rt, &mut c, "bigfw").pid;
    // Up with its 3,000 rules, which it says in its first report.
    wait_until("the firewall's report", 20, || {
        nf_status(&rt, &mut c, "bigfw")
            .report
            .contains(r#""rules":3000"#)
    });
    assert_eq!(nf_status(&rt, &mut c, "bigfw").pid, pid, "it stays up");

    // Not in argv (what `ps` shows), not in the environment.
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .replace('\0', " ");
    assert!(
        cmdline.contains("nf run") && cmdline.contains("bigfw"),
        "{cmdline}"
    );
    for needle in ["rules", "10.0.7.0", "\"allow\""] {
        assert!(!cmdline.contains(needle), "{needle} in argv: {cmdline}");
    }
    if let Ok(out) = std::process::Command::new("ps")
        .args(["-o", "args=", "-p", &pid.to_string()])
        .output()
    {
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            shown.contains("bigfw") && !shown.contains("rules"),
            "ps shows {shown}"
        );
    }
    let environ = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
        .replace('\0', "\n");
    assert!(
        !environ.contains("rules"),
        "config in the environment: {environ}"
    );
    assert!(
        !environ.contains("PATH="),
        "nfhost's environment leaked: {environ}"
    );

    // Not root, no capabilities, no way to gain any, its own process group.
    let uids: Vec<u32> = status_field(pid, "Uid")
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect();
    assert_eq!(uids.len(), 4);
    assert!(uids.iter().all(|u| *u != 0), "NF runs as uid {uids:?}");
    if rustix::process::geteuid().is_root() {
        assert!(
            uids.iter().all(|u| *u == 65534),
            "root's NFs run as nobody: {uids:?}"
        );
        assert_eq!(status_field(pid, "Groups"), "", "supplementary groups kept");
    }
    for caps in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(status_field(pid, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let pgrp: u32 = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pgrp, pid, "its own process group");

    // Nothing of nfhost's inherited: beyond stdin (its attach socket, whose peer
    // is nfhost's), stdout and stderr, no descriptor of the NF is one nfhost has
    // open, except the shared memory and eventfds nfhost handed it over the socket.
    let identities = |pid: u32| -> Vec<(u32, String, (u64, u64))> {
        let mut out = Vec::new();
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
        {
            let Ok(n) = fd.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let (Ok(target), Ok(meta)) =
                (std::fs::read_link(fd.path()), std::fs::metadata(fd.path()))
            else {
                continue;
            };
            use std::os::unix::fs::MetadataExt;
            out.push((
                n,
                target.to_string_lossy().into_owned(),
                (meta.dev(), meta.ino()),
            ));
        }
        out
    };
    let nfhost_fds = identities(server.child.id());
    let nf_fds = identities(pid);
    assert!(
        nf_fds
            .iter()
            .any(|(n, t, _)| *n == 0 && t.starts_with("socket:")),
        "{nf_fds:?}"
    );
    for (n, target, id) in nf_fds.iter().filter(|(n, _, _)| *n > 2) {
        let handed = target.starts_with("anon_inode:") || target.starts_with("/memfd:");
        let shared = nfhost_fds.iter().find(|(_, _, i)| i == id);
        assert!(
            handed || shared.is_none(),
            "NF fd {n} -> {target} is nfhost's {shared:?}"
        );
    }

    // Over 1 MiB: INVALID_ARGUMENT naming the limit; over the 4 MiB message limit:
    // RESOURCE_EXHAUSTED. Neither leaves anything behind.
    let big = |name: &str, len: usize| proto::Nf {
        name: name.into(),
        kind: "l2fwd".into(),
        config: format!("{{\"pad\": \"{}\"}}", "x".repeat(len)),
        ..Default::default()
    };
    let refused = create_nf(&rt, &mut c, big("tooconfig", 1_500_000)).unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("1048576"),
        "{}",
        refused.message()
    );
    let refused = create_nf(&rt, &mut c, big("toorequest", 5_000_000)).unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let names: Vec<String> = rt
        .block_on(c.nf.list_nfs(proto::ListNfsRequest::default()))
        .unwrap()
        .into_inner()
        .nfs
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["nfs/bigfw"]);
    server.stop();
}

#[test]
fn a_stopped_nf_is_found_unresponsive_and_restarted_an_idle_one_is_not() {
    let data = TempDir::new("liveness");
    let rt = runtime();
    let http_port = free_port();
    let http_addr = format!("127.0.0.1:{http_port}");
    let mut flags = GEN.to_vec();
    flags.extend(["--nf-liveness-ms", "500", "--http", &http_addr]);
    let server = Server::start(&data.0, &flags);
    let mut c = Clients::new(server.channel(&rt));

    let mut chain = nfhost_api::chain_file::parse_chain(include_str!("../examples/edge.toml"))
        .expect("example chain parses");
    chain.name = "chains/live".into();
    chain.nfs[0].name = "livemon".into();
    chain.nfs[1].name = "livefwd".into();
    let chain = rt
        .block_on(c.chain.create_chain(proto::CreateChainRequest {
            chain: Some(chain),
            validate_only: false,
        }))
        .unwrap()
        .into_inner();
    create_nf(
        &rt,
        &mut c,
        proto::Nf {
            name: "idle".into(),
            kind: "l2fwd".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let tx = |c: &mut Clients| {
        rt.block_on(
            c.telemetry
                .get_stats(proto::GetStatsRequest { active_only: false }),
        )
        .unwrap()
        .into_inner()
        .vfs
        .iter()
        .find(|s| s.vf == *chain.vfs.last().unwrap())
        .map_or(0, |s| s.tx_packets)
    };
    wait_until("traffic", 20, || tx(&mut c) > 500);
    wait_until("the idle NF runs", 20, || {
        nf_status(&rt, &mut c, "idle").state == proto::NfState::Running as i32
    });
    let busy = nf_status(&rt, &mut c, "livefwd").pid;
    let idle = nf_status(&rt, &mut c, "idle").pid;
    let signal = |pid: u32, sig: rustix::process::Signal| {
        rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), sig)
            .unwrap();
    };
    let stopped = Instant::now();
    signal(idle, rustix::process::Signal::STOP);
    signal(busy, rustix::process::Signal::STOP);

    // The stopped hop with traffic waiting: an event, a count, a restart.
    wait_until("the unresponsive event", 20, || {
        events(&rt, &mut c)
            .iter()
            .any(|e| e.kind == proto::EventKind::NfUnresponsive as i32 && e.nf == "nfs/livefwd")
    });
    assert!(
        stopped.elapsed() >= Duration::from_millis(500),
        "found before the timeout"
    );
    wait_until("a new livefwd process", 20, || {
        let s = nf_status(&rt, &mut c, "livefwd");
        s.state == proto::NfState::Running as i32 && s.pid != busy && s.pid != 0
    });
    let status = nf_status(&rt, &mut c, "livefwd");
    assert_eq!(status.unresponsive, 1, "{status:?}");
    assert!(
        status.last_exit.contains("unresponsive"),
        "{}",
        status.last_exit
    );
    let before = tx(&mut c);
    wait_until("traffic again", 20, || tx(&mut c) > before + 500);
    // /metrics is sampled once a second.
    let unresponsive = |nf: &str| {
        let (_, metrics) = http::get(http_port, "/metrics");
        http::samples(&metrics, "nfhost_nf_unresponsive_total")
            .iter()
            .find(|(labels, _)| http::label(labels, "nf") == Some(nf))
            .map(|(_, v)| *v)
    };
    wait_until("the metric", 10, || unresponsive("livefwd") == Some(1.0));

    // The idle NF, stopped with nothing to do for three timeouts and more, is
    // left alone.
    let watched = Duration::from_millis(1500);
    std::thread::sleep(watched.saturating_sub(stopped.elapsed()));
    assert_eq!(unresponsive("idle"), Some(0.0));
    let s = nf_status(&rt, &mut c, "idle");
    assert_eq!((s.pid, s.unresponsive), (idle, 0), "{s:?}");
    assert!(
        !events(&rt, &mut c)
            .iter()
            .any(|e| e.nf == "nfs/idle" && e.kind == proto::EventKind::NfUnresponsive as i32)
    );
    signal(idle, rustix::process::Signal::CONT);
    server.stop();
}

/// A root nfhost that lost the capabilities to switch users (a container that
/// dropped them) would start every NF only to see it fail: it refuses to start,
/// and says what it needs. (The compose demo had this bug.)
#[test]
fn a_root_nfhost_without_setuid_refuses_to_start_and_says_why() {
    let data = TempDir::new("no-setuid");
    let mut child = std::process::Command::new("setpriv")
        .args([
            "--bounding-set=-all,+net_admin,+net_raw",
            "--inh-caps=-all",
            env!("CARGO_BIN_EXE_nfhost"),
            "serve",
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--wire",
            "gen",
        ])
        .arg("--data-dir")
        .arg(&data.0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux) runs");
    // Without the check it would serve (and start no NF) until killed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("nfhost started without CAP_SETUID instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nfhost started: {stderr}");
    assert!(stderr.contains("CAP_SETUID"), "{stderr}");
}
