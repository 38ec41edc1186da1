// Shared by several test binaries; each uses part of it.
#![allow(dead_code)]
//! A real `nfhost serve` process for tests: its own data dir and port, health-checked,
//! killed on drop.

use std::path::{Path, PathBuf};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nfhost_api::proto;
use tonic::transport::Channel;

/// The `nfctl` binary beside the `nfhost` binary under test. nfctl is a package of
/// its own (it does not link the server), so Cargo builds it for this test only as
/// part of the workspace: `cargo test --workspace` does (nfctl has tests of its own).
pub fn nfctl_bin() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_nfhost")).with_file_name("nfctl");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, or `cargo build -p nfctl` first",
        path.display()
    );
    path
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "nfhost-test-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Reads the store of a stopped service. A store is let go of a moment after it is
/// dropped, with no signal ([`nfhost::store::holder`]), so this waits for it to be
/// free before opening (after an earlier read of this process) and after reading,
/// so that a service started next finds the store free rather than "in use".
pub fn read_store<T>(dir: &Path, read: impl FnOnce(&nfhost::store::Store) -> T) -> T {
    wait_store_unlocked(dir);
    let value = read(&nfhost::store::Store::open(dir).expect("the store opens"));
    wait_store_unlocked(dir);
    value
}

/// Every key and value of a stopped service's store but the event log and the boot
/// counter: what a refused request must leave as it was.
pub fn state_dump(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    read_store(dir, |store| {
        store
            .dump()
            .into_iter()
            .filter(|(k, _)| !k.starts_with(b"ev/"))
            .collect()
    })
}

/// Returns once nobody holds the store in `dir` open (or there is none).
fn wait_store_unlocked(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(holder) = nfhost::store::holder(dir) {
        assert!(
            Instant::now() < deadline,
            "{holder} still holds the store in {} 10 s after its service stopped",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A running `nfhost serve`.
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Server {
    /// Starts `nfhost serve` on `data` with extra flags; waits until it reports SERVING.
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        let server = Server::spawn(data, extra, Stdio::inherit());
        server.wait_serving();
        server
    }

    /// Starts `nfhost serve` on `data` with extra flags and its log going to
    /// `stderr`; does not wait for it.
    pub fn spawn(data: &Path, extra: &[&str], stderr: Stdio) -> Server {
        let port = free_port();
        // Every server gets its own dashboard port too, unless the test picks one.
        let http = if extra.contains(&"--http") {
            Vec::new()
        } else {
            vec!["--http".to_owned(), format!("127.0.0.1:{}", free_port())]
        };
        // External NFs' endpoints go under the test's directory, not /run/nfhost.
        let run_dir = if extra.contains(&"--run-dir") {
            Vec::new()
        } else {
            vec!["--run-dir".into(), data.join("run").into_os_string()]
        };
        let child = Command::new(env!("CARGO_BIN_EXE_nfhost"))
            .args(["serve", "--grpc", &format!("127.0.0.1:{port}")])
            .args(&http)
            .args(&run_dir)
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("nfhost serve starts");
        Server { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until the health service says SERVING (it needs no credentials).
    pub fn wait_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let rt = runtime();
        loop {
            let url = self.url();
            let ok = rt.block_on(async move {
                let Ok(channel) = Channel::from_shared(url).expect("url").connect().await else {
                    return false;
                };
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .is_ok_and(|r| r.into_inner().status == 1)
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nfhost serve did not become SERVING"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A channel driven by `rt` (a tonic channel lives on the runtime it was made on).
    pub fn channel(&self, rt: &tokio::runtime::Runtime) -> Channel {
        let url = self.url();
        rt.block_on(async move {
            Channel::from_shared(url)
                .expect("url")
                .connect()
                .await
                .expect("connect")
        })
    }

    /// SIGKILL, no goodbye.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "nfhost serve exited with {status} on SIGTERM"
                );
                return;
            }
            assert!(Instant::now() < deadline, "nfhost serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small runtime for blocking test code.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Typed clients over one channel.
pub struct Clients {
    pub pf: proto::pf_service_client::PfServiceClient<Channel>,
    pub vf: proto::vf_service_client::VfServiceClient<Channel>,
    pub nf: proto::nf_service_client::NfServiceClient<Channel>,
    pub chain: proto::chain_service_client::ChainServiceClient<Channel>,
    pub telemetry: proto::telemetry_service_client::TelemetryServiceClient<Channel>,
}

impl Clients {
    pub fn new(channel: Channel) -> Self {
        Clients {
            pf: proto::pf_service_client::PfServiceClient::new(channel.clone()),
            vf: proto::vf_service_client::VfServiceClient::new(channel.clone()),
            nf: proto::nf_service_client::NfServiceClient::new(channel.clone()),
            chain: proto::chain_service_client::ChainServiceClient::new(channel.clone()),
            telemetry: proto::telemetry_service_client::TelemetryServiceClient::new(channel),
        }
    }
}

/// The stored recent events (up to 1000), oldest first.
pub fn events(rt: &tokio::runtime::Runtime, c: &mut Clients) -> Vec<proto::Event> {
    rt.block_on(
        c.telemetry
            .list_events(proto::ListEventsRequest { limit: 1000 }),
    )
    .expect("events")
    .into_inner()
    .events
}

/// PIDs of running `nfhost nf run --name NAME` processes.
pub fn nf_pids(name: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_nf = args.windows(2).any(|w| w[0] == b"nf" && w[1] == b"run");
        let named = args
            .windows(2)
            .any(|w| w[0] == b"--name" && w[1] == name.as_bytes());
        // Zombies have an empty cmdline and are not running.
        if is_nf && named {
            pids.push(pid);
        }
    }
    pids
}

/// `nfhost serve` flags for a gen wire of 20 kpps on VLAN 100 and 8 VFs: what the
/// example chains classify.
#[allow(dead_code)]
pub const GEN: &[&str] = &[
    "--wire",
    "gen",
    "--gen-rate",
    "20000",
    "--gen-vlans",
    "100",
    "--vfs",
    "8",
];

/// The NF `name` as `GetNf` shows it.
#[allow(dead_code)]
pub fn get_nf(rt: &tokio::runtime::Runtime, c: &mut Clients, name: &str) -> proto::Nf {
    rt.block_on(c.nf.get_nf(proto::GetNfRequest { name: name.into() }))
        .expect("get nf")
        .into_inner()
}

/// Polls until `f` is true, or panics with `what` after `secs`.
pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The counters of `vf` (its resource name, `pfs/0/vfs/N`).
pub fn vf_stats(rt: &tokio::runtime::Runtime, c: &mut Clients, vf: &str) -> proto::VfStats {
    rt.block_on(
        c.telemetry
            .get_stats(proto::GetStatsRequest { active_only: false }),
    )
    .expect("stats")
    .into_inner()
    .vfs
    .into_iter()
    .find(|s| s.vf == vf)
    .expect("the VF's stats")
}

/// Sets the link state of `vf` (`pfs/0/vfs/N`): enabled or disabled.
pub fn set_vf_link(rt: &tokio::runtime::Runtime, c: &mut Clients, vf: &str, up: bool) {
    let state = if up {
        proto::LinkState::Enable
    } else {
        proto::LinkState::Disable
    };
    rt.block_on(c.vf.update_vf(proto::UpdateVfRequest {
        vf: Some(proto::Vf {
            name: vf.into(),
            link_state: state as i32,
            ..Default::default()
        }),
        update_mask: vec!["link_state".into()],
        validate_only: false,
    }))
    .expect("link state set");
}

/// A chain hop that a process outside nfhost attaches to.
pub fn external_hop(name: &str) -> proto::ChainNf {
    proto::ChainNf {
        name: name.into(),
        kind: "external".into(),
        config: String::new(),
        exec: None,
    }
}

/// Creates `chain`; panics if it is refused.
pub fn create_chain(
    rt: &tokio::runtime::Runtime,
    c: &mut Clients,
    chain: proto::Chain,
) -> proto::Chain {
    rt.block_on(c.chain.create_chain(proto::CreateChainRequest {
        chain: Some(chain),
        validate_only: false,
    }))
    .expect("the chain is accepted")
    .into_inner()
}

/// Waits until `vf`'s rx and tx counters stop moving (the stats are published
/// every 100 ms), and returns them.
pub fn settled(rt: &tokio::runtime::Runtime, c: &mut Clients, vf: &str) -> proto::VfStats {
    let mut last = vf_stats(rt, c, vf);
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(400));
        let now = vf_stats(rt, c, vf);
        if (now.rx_packets, now.tx_packets) == (last.rx_packets, last.tx_packets) {
            return now;
        }
        last = now;
    }
    panic!("{vf}'s counters did not settle");
}
