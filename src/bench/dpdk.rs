//! The peer to beat: DPDK's memif NF, measured on this machine in the same run.
//!
//! Two `dpdk-testpmd` processes joined by two memif links, as the 1-NF bench joins the
//! gen wire and one NF: a generator (`flowgen`, 64-byte frames, memif server on both
//! links, draining what comes back) and the NF (`macswap` between its two memif ports, memif client). Each
//! testpmd has one forwarding lcore, busy-polling, on its own CPU. The figure is the
//! NF's forwarded packets per second (its ports' TX counters over the window), the
//! counterpart of the frames the 1-NF bench sees leave to the wire.
//!
//! `dpdk-testpmd` is in Debian's `dpdk-dev` package; the memif driver is
//! `librte-net-memif23`. Without them the bench says so and reports nothing.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The testpmd binary.
const TESTPMD: &str = "dpdk-testpmd";
/// How long a testpmd may take to answer a command.
const ANSWER: Duration = Duration::from_secs(20);

/// Where `dpdk-testpmd` is, if installed.
pub fn testpmd() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(TESTPMD))
            .find(|p| p.is_file())
    })
}

/// One interactive testpmd, driven through its command line on stdin.
struct Testpmd {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Testpmd {
    fn spawn(exe: &Path, eal: &[String], app: &[String]) -> std::io::Result<Self> {
        // testpmd's stdout is a pipe here, which stdio would buffer in blocks: line
        // buffering (coreutils' `stdbuf`) lets its answers arrive as it prints them.
        let mut child = Command::new("stdbuf")
            .arg("-oL")
            .arg(exe)
            .args(eal)
            .arg("--")
            .args(app)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Testpmd {
            child,
            stdin,
            lines,
        })
    }

    /// Waits for a line containing `what`; the lines before it are skipped.
    fn wait_for(&self, what: &str) -> Result<String, String> {
        let deadline = Instant::now() + ANSWER;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return Ok(line),
                Ok(_) => {}
                Err(_) => return Err(format!("testpmd printed no {what:?} within {ANSWER:?}")),
            }
        }
    }

    /// The TX packets of every port, summed, from `show port stats all`.
    fn tx_packets(&mut self, ports: usize) -> Result<u64, String> {
        while self.lines.try_recv().is_ok() {}
        writeln!(self.stdin, "show port stats all").map_err(|e| e.to_string())?;
        let mut total = 0;
        for _ in 0..ports {
            let line = self.wait_for("TX-packets:")?;
            total += line
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| format!("unreadable testpmd line {line:?}"))?;
        }
        Ok(total)
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

/// EAL options of one instance: no hugepages, no PCI, nothing left in /var/run.
fn eal(name: &str, lcores: &str, main: &str, vdevs: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "-l",
        lcores,
        "--main-lcore",
        main,
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        "--file-prefix",
        name,
        "--log-level",
        "error",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for vdev in vdevs {
        args.push("--vdev".into());
        args.push(vdev.clone());
    }
    args
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
