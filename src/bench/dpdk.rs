//! The peer to beat: DPDK's memif NF, measured on this machine in the same run.
//!
//! Two `dpdk-testpmd` processes joined by two memif links, as the 1-NF bench joins the
//! gen wire and one NF: a generator (`flowgen`, 64-byte frames, memif server on both
//! links, draining what comes back) and the NF (`macswap` between its two memif ports, memif client). Each
//! testpmd has one forwarding lcore, busy-polling, on its own CPU. The figure is the
//! NF's forwarded packets per second (its ports' TX counters over the window), the
//! counterpart of the frames the 1-NF bench sees leave to the wire.
//!
//! And the same testpmd NF (`macswap`, one memif port, looped) as the client of an
//! nfhost VF's memif endpoint, fed by the gen wire flat out ([`measure_on_nfhost`]):
//! an unmodified DPDK NF on nfhost, beside DPDK's own memif link.
//!
//! `dpdk-testpmd` is in Debian's `dpdk-dev` package; the memif driver is
//! `librte-net-memif23`. Without them the bench says so and reports nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nfhost::dataplane::engine::{ChainEgress, EngineConfig, Isolation, WireConfig};
use nfhost::dataplane::nf_process::current_exe;
use nfhost::dataplane::runner::Runner;
use nfhost::nic::{Owner, VfId, WireMatch};
use nfhost::testpmd::{TESTPMD, Testpmd, eal, memif_client};

/// A private directory for the memif sockets, removed with what is in it.
struct SocketDir(PathBuf);

impl SocketDir {
    fn create() -> Result<Self, String> {
        let path = std::env::temp_dir().join(format!("nfhost-bench-memif-{}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(SocketDir(path))
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Mpps forwarded by testpmd as a memif NF, over `seconds` after a 1 s warm-up.
pub fn measure(exe: &Path, seconds: f64) -> Result<f64, String> {
    let dir = SocketDir::create()?;
    let sock = |i: u32| dir.0.join(format!("memif{i}.sock"));
    let links = |role: &str| -> Vec<String> {
        (0..2)
            .map(|i| format!("net_memif{i},role={role},id=0,socket={}", sock(i).display()))
            .collect()
    };
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    // One forwarding lcore each, on different CPUs where there are two.
    let (gen_lcores, gen_main, nf_lcores, nf_main) = if cpus >= 2 {
        ("0,1", "0", "0,1", "1")
    } else {
        ("0", "0", "0", "0")
    };
    // `flowgen` sends 64-byte frames and, unlike `txonly`, drains what comes back.
    let app = |mode: &str| {
        [
            "-i".to_owned(),
            "--auto-start".to_owned(),
            "--disable-link-check".to_owned(),
            "--total-num-mbufs=16384".to_owned(),
            "--txpkts=64".to_owned(),
            format!("--forward-mode={mode}"),
        ]
    };
    let generator = Testpmd::spawn(
        exe,
        &eal("nfhost-bench-gen", gen_lcores, gen_main, &links("server")),
        &app("flowgen"),
    )
    .map_err(|e| format!("starting {TESTPMD}: {e}"))?;
    let mut nf = Testpmd::spawn(
        exe,
        &eal("nfhost-bench-nf", nf_lcores, nf_main, &links("client")),
        &app("macswap"),
    )
    .map_err(|e| format!("starting {TESTPMD}: {e}"))?;
    generator.wait_for("Start automatic packet forwarding")?;
    nf.wait_for("Start automatic packet forwarding")?;
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let p0 = nf.tx_packets(2)?;
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let p1 = nf.tx_packets(2)?;
    let wall = t0.elapsed().as_secs_f64();
    drop(nf);
    drop(generator);
    if p1 <= p0 {
        return Err("the testpmd memif NF forwarded nothing (did the memif links come up?)".into());
    }
    Ok((p1 - p0) as f64 / wall / 1e6)
}

/// Mpps that testpmd (`macswap`) forwards as the memif client of an nfhost VF, the
/// only hop of a chain fed by the gen wire as fast as it goes (64-byte frames):
/// frames leaving nfhost's wire per second over `seconds` after a 1 s warm-up.
pub fn measure_on_nfhost(exe: &Path, seconds: f64) -> Result<f64, String> {
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    let dir = SocketDir::create()?;
    let config = EngineConfig {
        num_vfs: 2,
        wire: WireConfig::Gen(nfhost::dataplane::r#gen::GenConfig::default()),
        ..Default::default()
    };
    let runner =
        Runner::start(config, current_exe().map_err(|e| fail(&e))?).map_err(|e| fail(&e))?;
    let engine = runner.engine();
    let vf = VfId(0);
    let every_frame = WireMatch {
        vlan: None,
        dst: None,
    };
    engine
        .install_chain(
            &[vf],
            Isolation::Strict,
            every_frame,
            ChainEgress::OneWay(None),
        )
        .map_err(|e| fail(&e))?;
    let endpoints = nfhost::control::endpoints::Endpoints {
        run_dir: dir.0.clone(),
        group: None,
    };
    let (attach, memif) = endpoints.open(vf).map_err(|e| fail(&e))?;
    let secret = nfhost::dataplane::secret::new_secret().map_err(|e| fail(&e))?;
    engine
        .listen(
            vf,
            Owner::new("testpmd"),
            secret.clone(),
            String::new(),
            attach,
            memif,
        )
        .map_err(|e| fail(&e))?;
    let mac = engine.vf(vf).map(|s| s.mac.to_string()).unwrap_or_default();
    let nf = memif_client(
        exe,
        "nfhost-bench-on-vf",
        &endpoints.memif_socket(vf),
        &secret,
        &mac,
        "macswap",
    )?;
    if !engine
        .wait_active(vf, Duration::from_secs(20))
        .map_err(|e| fail(&e))?
    {
        return Err("testpmd did not connect to the VF's memif socket within 20 s".into());
    }
    std::thread::sleep(Duration::from_secs(1));
    let counters = engine.counters().clone();
    let (p0, t0) = (counters.wire.tx_packets.get(), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (p1, t1) = (counters.wire.tx_packets.get(), Instant::now());
    drop(nf);
    runner.stop();
    if p1 <= p0 {
        return Err("testpmd on the VF forwarded nothing".into());
    }
    Ok((p1 - p0) as f64 / (t1 - t0).as_secs_f64() / 1e6)
}
