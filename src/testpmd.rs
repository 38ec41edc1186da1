//! Driving DPDK's `dpdk-testpmd`, the reference DPDK application: the peer
//! `nfhost bench` measures against, and the memif client that shows an unmodified
//! DPDK NF running on an nfhost VF.
//!
//! testpmd runs interactive (`-i`), its answers read line by line from its stdout.
//! It is in Debian's `dpdk-dev` package; its memif driver is
//! `librte-net-memif23`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The testpmd binary.
pub const TESTPMD: &str = "dpdk-testpmd";
/// How long a testpmd may take to answer a command.
const ANSWER: Duration = Duration::from_secs(20);

/// Where `dpdk-testpmd` is, if installed.
pub fn find() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(TESTPMD))
            .find(|p| p.is_file())
    })
}

/// One interactive testpmd, driven through its command line on stdin. Dropping it
/// quits it (killed if it does not end within 5 s).
#[derive(Debug)]
pub struct Testpmd {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Testpmd {
    /// Starts `exe` with EAL options `eal` and application options `app`.
    pub fn spawn(exe: &Path, eal: &[String], app: &[String]) -> std::io::Result<Self> {
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
    pub fn wait_for(&self, what: &str) -> Result<String, String> {
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

    /// RX and TX packets of port `port`, from `show port stats`.
    pub fn port_stats(&mut self, port: u16) -> Result<(u64, u64), String> {
        while self.lines.try_recv().is_ok() {}
        writeln!(self.stdin, "show port stats {port}").map_err(|e| e.to_string())?;
        let number = |line: String| {
            line.split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| format!("unreadable testpmd line {line:?}"))
        };
        let rx = number(self.wait_for("RX-packets:")?)?;
        let tx = number(self.wait_for("TX-packets:")?)?;
        Ok((rx, tx))
    }

    /// Runs a command at testpmd's prompt (`stop`, `start`, `set fwd io`…).
    pub fn command(&mut self, command: &str) -> Result<(), String> {
        writeln!(self.stdin, "{command}").map_err(|e| e.to_string())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The TX packets of every port, summed, from `show port stats all`.
    pub fn tx_packets(&mut self, ports: usize) -> Result<u64, String> {
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

/// EAL options of one instance: no hugepages, no PCI, nothing left in /var/run.
pub fn eal(name: &str, lcores: &str, main: &str, vdevs: &[String]) -> Vec<String> {
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

/// A testpmd whose one port is a memif client of `socket` (a path, not an
/// abstract socket) with `secret` and `mac`, forwarding in `mode` (`macswap`,
/// `io`…) from the port back to itself. `prefix` names its EAL files (unique per
/// instance on a machine). Its forwarding lcore is CPU 1 where there are two.
/// Returns once testpmd says it forwards (its memif link comes up when the server
/// answers).
pub fn memif_client(
    exe: &Path,
    prefix: &str,
    socket: &Path,
    secret: &str,
    mac: &str,
    mode: &str,
) -> Result<Testpmd, String> {
    let vdev = format!(
        "net_memif0,role=client,id=0,socket={},socket-abstract=no,secret={secret},mac={mac}",
        socket.display()
    );
    let two = std::thread::available_parallelism().map_or(1, usize::from) >= 2;
    let (lcores, main) = if two { ("0,1", "0") } else { ("0", "0") };
    let app = [
        "-i".to_owned(),
        "--auto-start".to_owned(),
        "--disable-link-check".to_owned(),
        "--total-num-mbufs=16384".to_owned(),
        "--port-topology=loop".to_owned(),
        format!("--forward-mode={mode}"),
    ];
    let testpmd = Testpmd::spawn(exe, &eal(prefix, lcores, main, &[vdev]), &app)
        .map_err(|e| format!("starting {TESTPMD}: {e}"))?;
    testpmd.wait_for("Start automatic packet forwarding")?;
    Ok(testpmd)
}
