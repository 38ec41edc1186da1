//! Real traffic through a chain: a client and a server in network namespaces whose
//! only path to each other is nfhost's wire (`scripts/netns-topology.sh`: the
//! client's veth is an access port of VLAN 100, the server's of VLAN 200), with
//! the two-way chain firewall → monitor of `examples/stick.toml`.
//!
//! Checked, once with `afpacket:` wire links and once with `afxdp:` links: no path
//! without the chain; ping through it; iperf3 TCP for 10 s, printed for each wire
//! kind beside iperf3 over a plain Linux bridge joining the same two veths (the
//! path without nfhost), measured in the same run, with the CPU nfhost and its
//! NFs used meanwhile; a TCP port the firewall denies gets no connection; the
//! chain VFs' counters in `/metrics` equal the packets the two hosts' interfaces
//! sent and received; deleting the chain stops the traffic and re-applying it
//! restores it. With `afxdp:`, each link has one XDP program while nfhost runs,
//! and after nfhost is killed with SIGKILL and started again, still one, and
//! traffic flows. Nothing is left behind. The hosts keep checksum offload on
//! (nfhost completes partial checksums).
//!
//! A second test runs the same traffic through a chain whose second hop is DPDK's
//! `dpdk-testpmd` (`io` forwarding), attached over memif to its VF's endpoint: ping
//! and iperf3 cross it, and testpmd's own RX and TX counters equal its VF's.
//!
//! Needs root, iproute2, ethtool, iperf3, ping and dpdk-testpmd, as CI has
//! (`scripts/test.sh` installs them): without them the tests fail and say what is
//! missing. The two tests take turns (one lock): each measures throughput.

#[path = "common/http.rs"]
mod http;
#[path = "common/server.rs"]
mod server;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use nfhost::dataplane::nf_process::process_cpu_time;

use server::{
    Clients, Server, TempDir, create_chain, external_hop, free_port, get_nf, runtime, settled,
    wait_until,
};

/// The tests take turns: both build namespaces and measure throughput.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/netns-topology.sh");
const CHAIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/stick.toml");
const SERVER_IP: &str = "10.77.0.2";

fn run(program: impl AsRef<Path>, args: &[&str]) -> Output {
    let program = program.as_ref();
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()))
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces and links, removed (and checked gone) on drop.
struct Topology {
    prefix: String,
}

impl Topology {
    fn up(prefix: &str) -> Self {
        check(&run(SCRIPT, &["down", prefix]), "removing a stale topology");
        check(&run(SCRIPT, &["up", prefix]), "building the topology");
        Topology {
            prefix: prefix.to_owned(),
        }
    }

    fn script(&self, cmd: &str) {
        check(&run(SCRIPT, &[cmd, &self.prefix]), cmd);
    }

    fn client(&self) -> String {
        format!("{}-client", self.prefix)
    }

    fn server(&self) -> String {
        format!("{}-server", self.prefix)
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", ns];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn ping(&self, count: u32) -> bool {
        let count = count.to_string();
        self.exec(
            &self.client(),
            &["ping", "-c", &count, "-i", "0.2", "-W", "2", SERVER_IP],
        )
        .status
        .success()
    }

    /// iperf3 TCP from the client for `secs`; bits per second received.
    fn iperf(&self, port: u16, secs: u32) -> f64 {
        let out = self.exec(
            &self.client(),
            &[
                "iperf3",
                "-c",
                SERVER_IP,
                "-p",
                &port.to_string(),
                "-t",
                &secs.to_string(),
                "-J",
            ],
        );
        check(&out, "iperf3");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
        json["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .expect("iperf3 reports bits_per_second")
    }

    /// (tx, rx) packets of `ns`'s eth0, from the kernel.
    fn eth0_packets(&self, ns: &str) -> (u64, u64) {
        let out = run("ip", &["-n", ns, "-s", "-j", "link", "show", "eth0"]);
        check(&out, "ip -s link");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip JSON");
        let stats = &json[0]["stats64"];
        (
            stats["tx"]["packets"].as_u64().expect("tx packets"),
            stats["rx"]["packets"].as_u64().expect("rx packets"),
        )
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = run(SCRIPT, &["down", &self.prefix]);
    }
}

fn require_tools() {
    let uid = run("id", &["-u"]);
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "this test needs root (network namespaces, AF_PACKET), as CI runs it"
    );
    for tool in ["ip", "ethtool", "iperf3", "ping"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is missing: scripts/test.sh installs it (apt-get install iproute2 ethtool iperf3 iputils-ping)"
        );
    }
}

/// The sum of one per-VF counter over the VFs `nf` owns (`nfhost_vf_info`) in a
/// `/metrics` text.
fn vf_metric(text: &str, name: &str, nf: &str) -> u64 {
    http::samples_with_owner(text, name)
        .iter()
        .filter(|(labels, _)| http::label(labels, "nf") == Some(nf))
        .map(|(_, v)| *v as u64)
        .sum()
}

/// The wire's drops for the given reasons, from a `/metrics` text.
fn wire_drops(text: &str, reasons: &[&str]) -> u64 {
    http::samples(text, "nfhost_wire_dropped_packets_total")
        .iter()
        .filter(|(labels, _)| http::label(labels, "reason").is_some_and(|r| reasons.contains(&r)))
        .map(|(_, v)| *v as u64)
        .sum()
}

/// Wire drop reasons of frames coming in, and of frames going out.
const WIRE_IN: &[&str] = &["overrun", "oversize", "vlan"];
const WIRE_OUT: &[&str] = &["wire_busy", "no_route", "dma_fault", "malformed"];

struct Snapshot {
    client: (u64, u64),
    server: (u64, u64),
    /// Frames dropped before the firewall VF: on the wire (for example `overrun`,
    /// the kernel's socket buffer full) or at the VF (no free buffer).
    dropped_in: u64,
    /// Frames the monitor VF sent that the wire dropped on their way out.
    dropped_out: u64,
    fw_rx: u64,
    fw_tx: u64,
    mon_rx: u64,
    mon_tx: u64,
}

fn snapshot(topo: &Topology, http_port: u16) -> Snapshot {
    // The engine's counters reach /metrics once a second.
    std::thread::sleep(Duration::from_millis(1300));
    let (status, text) = http::get(http_port, "/metrics");
    assert_eq!(status, 200);
    Snapshot {
        client: topo.eth0_packets(&topo.client()),
        server: topo.eth0_packets(&topo.server()),
        dropped_in: vf_metric(&text, "nfhost_vf_dropped_packets_total", "stick-fw")
            + wire_drops(&text, WIRE_IN),
        dropped_out: wire_drops(&text, WIRE_OUT),
        fw_rx: vf_metric(&text, "nfhost_vf_receive_packets_total", "stick-fw"),
        fw_tx: vf_metric(&text, "nfhost_vf_transmit_packets_total", "stick-fw"),
        mon_rx: vf_metric(&text, "nfhost_vf_receive_packets_total", "stick-mon"),
        mon_tx: vf_metric(&text, "nfhost_vf_transmit_packets_total", "stick-mon"),
    }
}

fn nfctl(server: &Server, args: &[&str]) -> Output {
    let url = server.url();
    let mut all = vec!["--server", url.as_str()];
    all.extend_from_slice(args);
    run(server::nfctl_bin(), &all)
}

/// XDP programs on host interface `link` (`ip -d link show`).
fn xdp_programs(link: &str) -> usize {
    let out = run("ip", &["-d", "link", "show", "dev", link]);
    check(&out, "ip -d link show");
    String::from_utf8_lossy(&out.stdout)
        .matches("prog/xdp id")
        .count()
}

#[test]
fn ping_and_iperf3_cross_a_firewall_chain_and_nothing_else() {
    let _turn = TURN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    require_tools();
    let prefix = format!("nfe{}", std::process::id() % 100_000);
    let topo = Topology::up(&prefix);
    let server_ns = topo.server();
    check(
        &topo.exec(&server_ns, &["iperf3", "-s", "-D", "-p", "5201"]),
        "iperf3 server",
    );
    check(
        &topo.exec(&server_ns, &["iperf3", "-s", "-D", "-p", "8080"]),
        "iperf3 server on the denied port",
    );

    // The same two veths joined by a plain Linux bridge: the path without nfhost.
    topo.script("bridge");
    wait_until("ping over the bridge", 10, || topo.ping(1));
    let bridge_bps = topo.iperf(5201, 10);
    topo.script("unbridge");

    // The same chain with each kind of wire link, in one run.
    let mut figures = Vec::new();
    for kind in ["afpacket", "afxdp"] {
        let run = through_the_chain(&topo, kind);
        figures.push(format!(
            "iperf3 TCP, 10 s, {kind}: links: {:.0} Mbit/s through nfhost (firewall → \
             monitor, strict), {:.0} Mbit/s over a Linux bridge; ratio {:.2}; CPU while \
             it ran: nfhost {:.0}% of a core, NFs {:.0}%",
            run.bps / 1e6,
            bridge_bps / 1e6,
            run.bps / bridge_bps,
            run.nfhost_cpu,
            run.nf_cpu,
        ));
        println!("{}", figures.last().expect("just pushed"));
    }
    // cargo test shows a passing test's output only with --nocapture: the figures
    // also go to a file that scripts/test.sh prints.
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-output");
    std::fs::create_dir_all(&out_dir).expect("test-output/");
    std::fs::write(
        out_dir.join("real-traffic.txt"),
        format!("{}\n", figures.join("\n")),
    )
    .expect("writing test-output/real-traffic.txt");

    drop(topo);
    check(
        &run(SCRIPT, &["check", &prefix]),
        "checking nothing is left behind",
    );
    assert!(!Path::new(&format!("/run/netns/{prefix}-client")).exists());
    for link in [format!("{prefix}c"), format!("{prefix}s")] {
        assert!(
            !Path::new(&format!("/sys/class/net/{link}")).exists(),
            "{link} outlived the test"
        );
    }
}

/// What one run through the chain measured.
struct ChainRun {
    bps: f64,
    /// CPU during iperf3, in % of one core: nfhost's service process and its NF
    /// processes.
    nfhost_cpu: f64,
    nf_cpu: f64,
}

/// The parent of process `pid` (`/proc/PID/stat`: the state, then the parent,
/// after the command name).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// nfhost with `kind:` links on the topology, the stick chain, and the checks:
/// no path without the chain; ping and 10 s of iperf3 through it; counters
/// equal to the hosts' own; the denied port; delete and re-apply. With afxdp:,
/// also: one XDP program per link while nfhost runs, and after a SIGKILL and a
/// restart, still one (not two) and traffic flows.
fn through_the_chain(topo: &Topology, kind: &str) -> ChainRun {
    let prefix = &topo.prefix;
    let client = topo.client();
    let data = TempDir::new(&format!("real-traffic-{kind}"));
    let http_port = free_port();
    let wire = format!("{kind}:{prefix}c@100,{kind}:{prefix}s@200");
    let http_addr = format!("127.0.0.1:{http_port}");
    let args = ["--vfs", "8", "--wire", &wire, "--http", &http_addr];
    let server = Server::start(&data.0, &args);
    let links = [format!("{prefix}c"), format!("{prefix}s")];
    let xdp = kind == "afxdp";
    for link in &links {
        assert_eq!(
            xdp_programs(link),
            usize::from(xdp),
            "{kind}: XDP on {link}"
        );
    }
    let pf = nfctl(&server, &["pf", "get"]);
    check(&pf, "pf get");
    if xdp {
        assert!(
            String::from_utf8_lossy(&pf.stdout).contains(&format!("afxdp:{prefix}c@100 (copy)")),
            "GetPf says how the kernel moves the frames: {}",
            String::from_utf8_lossy(&pf.stdout)
        );
    }
    assert!(!topo.ping(2), "{kind}: ping crossed nfhost without a chain");

    check(&nfctl(&server, &["chain", "apply", CHAIN]), "chain apply");
    wait_until("ping through the chain", 10, || topo.ping(1));
    let before = snapshot(topo, http_port);
    assert!(
        topo.ping(5),
        "{kind}: ping -c 5 through the chain lost packets"
    );
    let nfhost_pid = server.child.id();
    // This nfhost's NF processes (its children), not others of the same name.
    let nf_pids: Vec<u32> = ["stick-fw", "stick-mon"]
        .iter()
        .flat_map(|nf| server::nf_pids(nf))
        .filter(|pid| parent(*pid) == Some(nfhost_pid))
        .collect();
    assert_eq!(nf_pids.len(), 2, "{kind}: the chain's two NF processes");
    let cpu = |pids: &[u32]| {
        pids.iter()
            .filter_map(|p| process_cpu_time(*p))
            .sum::<Duration>()
    };
    let (nfhost0, nfs0) = (cpu(&[nfhost_pid]), cpu(&nf_pids));
    let started = std::time::Instant::now();
    let bps = topo.iperf(5201, 10);
    let secs = started.elapsed().as_secs_f64();
    let percent = |spent: Duration| spent.as_secs_f64() / secs * 100.0;
    let nfhost_cpu = percent(cpu(&[nfhost_pid]).saturating_sub(nfhost0));
    let nf_cpu = percent(cpu(&nf_pids).saturating_sub(nfs0));
    let after = snapshot(topo, http_port);
    assert!(bps > 0.0);

    // Every packet either host sent went into the chain's first VF or was counted
    // as dropped on its way there, and every packet either received came out of the
    // last one: the VF counters are the hosts' own counts of ping and iperf3 (and
    // ARP).
    let sent = (after.client.0 - before.client.0) + (after.server.0 - before.server.0);
    let received = (after.client.1 - before.client.1) + (after.server.1 - before.server.1);
    let fw_rx = after.fw_rx - before.fw_rx;
    let dropped_in = after.dropped_in - before.dropped_in;
    let mon_tx = after.mon_tx - before.mon_tx;
    let dropped_out = after.dropped_out - before.dropped_out;
    println!(
        "{kind}: hosts sent {sent}: firewall VF received {fw_rx}, {dropped_in} counted as \
         dropped before it; mon VF sent {mon_tx}, {dropped_out} counted as dropped on the \
         wire after it, hosts received {received}"
    );
    assert_eq!(
        fw_rx + dropped_in,
        sent,
        "{kind}: firewall VF rx + counted drops vs packets the hosts sent"
    );
    assert!(
        dropped_in <= sent / 100,
        "{kind}: {dropped_in} of {sent} packets dropped on the way in"
    );
    assert_eq!(
        mon_tx,
        received + dropped_out,
        "{kind}: monitor VF tx vs packets the hosts received + counted drops"
    );
    // The last hop sends only what the wire's send buffers can take.
    assert_eq!(
        dropped_out,
        0,
        "{kind}: frames dropped on their way out: {:?}",
        http::samples(
            &http::get(http_port, "/metrics").1,
            "nfhost_wire_dropped_packets_total"
        )
    );
    assert_eq!(after.fw_tx - before.fw_tx, after.mon_rx - before.mon_rx);
    assert!(sent > 10_000, "{kind}: iperf3 moved only {sent} packets");

    // TCP 8080: the SYNs reach the firewall and go no further.
    let before = snapshot(topo, http_port);
    let denied = topo.exec(
        &client,
        &[
            "timeout",
            "10",
            "iperf3",
            "-c",
            SERVER_IP,
            "-p",
            "8080",
            "-t",
            "1",
            "--connect-timeout",
            "2000",
        ],
    );
    assert!(
        !denied.status.success(),
        "{kind}: TCP 8080 got a connection"
    );
    let after = snapshot(topo, http_port);
    assert!(
        after.fw_rx - before.fw_rx > after.fw_tx - before.fw_tx,
        "{kind}: the firewall forwarded everything it got on port 8080"
    );

    // No chain, no path; the chain back, the path back.
    check(
        &nfctl(&server, &["chain", "delete", "stick"]),
        "chain delete",
    );
    assert!(
        !topo.ping(2),
        "{kind}: ping crossed nfhost after the chain was deleted"
    );
    check(
        &nfctl(&server, &["chain", "apply", CHAIN]),
        "chain re-apply",
    );
    wait_until("ping through the re-applied chain", 10, || topo.ping(1));

    if xdp {
        // Killed without a chance to clean up: the kernel detaches the programs
        // with nfhost's fds, and a new nfhost attaches one of its own to each
        // link (replaced, not stacked) and carries the stored chain's traffic.
        server.kill();
        for link in &links {
            assert_eq!(xdp_programs(link), 0, "a killed nfhost's program on {link}");
        }
        let server = Server::start(&data.0, &args);
        for link in &links {
            assert_eq!(
                xdp_programs(link),
                1,
                "XDP programs on {link} after a restart"
            );
        }
        wait_until(
            "ping through the chain after a SIGKILL and a restart",
            15,
            || topo.ping(1),
        );
        server.stop();
    } else {
        server.stop();
    }
    ChainRun {
        bps,
        nfhost_cpu,
        nf_cpu,
    }
}

#[test]
fn ping_and_iperf3_cross_a_testpmd_memif_hop() {
    let _turn = TURN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    require_tools();
    let testpmd = nfhost::testpmd::find().expect(
        "dpdk-testpmd is missing: scripts/test.sh installs it \
         (apt-get install dpdk-dev librte-net-memif23)",
    );
    let prefix = format!("nfm{}", std::process::id() % 100_000);
    let topo = Topology::up(&prefix);
    check(
        &topo.exec(&topo.server(), &["iperf3", "-s", "-D", "-p", "5201"]),
        "iperf3 server",
    );
    let data = TempDir::new("real-traffic-memif");
    let wire = format!("afpacket:{prefix}c@100,afpacket:{prefix}s@200");
    let server = Server::start(&data.0, &["--vfs", "8", "--wire", &wire]);
    let rt = runtime();
    let mut c = Clients::new(server.channel(&rt));

    // examples/stick.toml with testpmd for its second hop.
    let mut chain =
        nfhost_api::chain_file::parse_chain(&std::fs::read_to_string(CHAIN).unwrap()).unwrap();
    chain.nfs[1] = external_hop("stick-pmd");
    let chain = create_chain(&rt, &mut c, chain);
    let vf = chain.vfs[1].clone();
    let endpoint = get_nf(&rt, &mut c, "stick-pmd").endpoint.unwrap();
    let mut pmd = nfhost::testpmd::memif_client(
        &testpmd,
        &format!("nfhost-test-rt-{}", std::process::id()),
        Path::new(&endpoint.memif_socket),
        &endpoint.secret,
        &endpoint.mac,
        "io",
    )
    .expect("testpmd starts and forwards");
    wait_until("ping through testpmd", 20, || topo.ping(1));
    assert!(topo.ping(5), "ping -c 5 through testpmd lost packets");
    let bps = topo.iperf(5201, 5);
    let figures = format!(
        "iperf3 TCP, 5 s: {:.0} Mbit/s through nfhost (firewall → dpdk-testpmd io over memif, strict)",
        bps / 1e6
    );
    println!("{figures}");
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-output");
    std::fs::create_dir_all(&out_dir).expect("test-output/");
    std::fs::write(
        out_dir.join("real-traffic-memif.txt"),
        format!("{figures}\n"),
    )
    .expect("writing test-output/real-traffic-memif.txt");

    // The traffic has stopped: testpmd's counters are its VF's, exactly.
    let after = settled(&rt, &mut c, &vf);
    let last = (after.rx_packets, after.tx_packets);
    let (rx, tx) = pmd.port_stats(0).expect("testpmd's counters");
    println!(
        "testpmd RX {rx}, TX {tx}; its VF rx {}, tx {}",
        last.0, last.1
    );
    assert_eq!((rx, tx), last, "testpmd's RX/TX vs its VF's rx/tx");
    assert!(tx > 1000, "iperf3 moved only {tx} packets through testpmd");

    drop(pmd);
    server.stop();
    drop(topo);
    check(
        &run(SCRIPT, &["check", &prefix]),
        "checking nothing is left behind",
    );
}
