//! NF processes: each NF runs as a child of its own (`nfhost nf run …`, self-exec),
//! holding nothing but its end of a socketpair to its VF. A crash or a wild pointer in
//! an NF cannot reach the host or another tenant; when the child dies its socket
//! closes and the engine scrubs the VF.
//!
//! The child's end of the socket becomes its stdin: the one fd the standard library
//! lets a parent hand to a child without `unsafe`, and the one a child can find
//! without being told (`NFHOST_VF_FD=0`). Nothing else is inherited but stdout and
//! stderr for its log: every other fd of nfhost is close-on-exec, and the child's
//! environment is emptied but for the variables below. Its configuration is not on
//! its command line or in its environment: it asks for it over the socket
//! (`GetConfig`). It runs in its own process group and, first thing, enters its
//! sandbox ([`super::sandbox`]).

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
use rustix::process::{Pid, Signal, kill_process};
use thiserror::Error;

use super::sandbox::NfUser;

pub use vf_abi::attach::{ENV_VF_FD, ENV_VF_TOKEN};
/// Environment variable carrying the parent's pid, so the child can tell whether its
/// parent already died before it asked to die with it.
pub const ENV_PARENT_PID: &str = "NFHOST_PARENT_PID";

/// In the child: die with the parent (PR_SET_PDEATHSIG). An NF must never outlive
/// the nfhost that started it, or a restarted nfhost would run it twice.
pub fn die_with_parent() -> std::io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
    // The parent may have died between fork and the call above.
    let expected = std::env::var(ENV_PARENT_PID)
        .ok()
        .and_then(|p| p.parse::<i32>().ok());
    let parent = rustix::process::getppid()
        .map(Pid::as_raw_nonzero)
        .map(|p| p.get());
    if expected.is_some() && parent != expected {
        return Err(std::io::Error::other(
            "the nfhost that started this NF is gone",
        ));
    }
    Ok(())
}

/// How NF processes are started: from which executable, as whom.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The `nfhost` executable to self-exec.
    pub exe: PathBuf,
    /// Who NF processes become; `None` keeps nfhost's own user.
    pub user: Option<NfUser>,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct NfLaunch {
    /// The `nfhost` executable to self-exec.
    pub exe: PathBuf,
    /// Instance name (for logs and `ps`).
    pub name: String,
    /// NF kind (`l2fwd`, `monitor`, …).
    pub kind: String,
    /// The token the child presents in `Hello`.
    pub token: String,
    /// Who the child becomes; `None` keeps nfhost's own user.
    pub user: Option<NfUser>,
    /// An `exec` NF's binary; `None` runs the built-in `kind`.
    pub binary: Option<UserBinary>,
}

/// A user's NF binary (an `exec` NF), built on `nf-sdk`: nfhost starts it through
/// `nfhost nf exec`, which enters the sandbox and then executes it, so a user's
/// binary never runs with nfhost's privileges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserBinary {
    /// Absolute path.
    pub path: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment, besides `NFHOST_VF_FD` and `NFHOST_VF_TOKEN`.
    pub env: Vec<(String, String)>,
}

/// Environment variables an NF child keeps from nfhost's (logging only).
const KEPT_ENV: &[&str] = &["RUST_LOG", "RUST_BACKTRACE", "NFHOST_LOG_FORMAT"];

/// Starting an NF process failed.
#[derive(Debug, Error)]
pub enum SpawnError {
    /// The socketpair could not be created.
    #[error("creating the VF socketpair failed")]
    Socket(#[source] rustix::io::Errno),
    /// The executable could not be started.
    #[error("starting {exe} failed")]
    Exec {
        /// The executable.
        exe: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running NF process. Dropping it kills and reaps the child.
#[derive(Debug)]
pub struct NfProcess {
    child: Child,
    name: String,
}

impl NfProcess {
    /// Starts the child; returns it and the host's end of its VF socket, to hand to
    /// the engine with [`super::engine::EngineHandle::attach`].
    pub fn spawn(launch: &NfLaunch) -> Result<(NfProcess, OwnedFd), SpawnError> {
        spawner::run(launch.clone())
    }

    fn spawn_here(launch: &NfLaunch) -> Result<(NfProcess, OwnedFd), SpawnError> {
        // What this process inherited stays here: the child gets its socket,
        // stdout and stderr, and nothing else.
        if let Err(e) = nfhost_sys::fd::cloexec_inherited() {
            tracing::warn!(error = %e, "cannot list this process's descriptors; an NF may inherit some");
        }
        let (host, child_end) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(SpawnError::Socket)?;
        let mut command = Command::new(&launch.exe);
        match &launch.binary {
            None => command.args(["nf", "run", "--kind", &launch.kind, "--name", &launch.name]),
            Some(_) => command.args(["nf", "exec", "--name", &launch.name]),
        };
        command.env_clear().envs(
            KEPT_ENV
                .iter()
                .filter_map(|k| Some((k, std::env::var_os(k)?))),
        );
        if let Some(user) = launch.user {
            command
                .arg("--uid")
                .arg(user.uid.to_string())
                .arg("--gid")
                .arg(user.gid.to_string());
        }
        if let Some(binary) = &launch.binary {
            command
                .arg("--")
                .arg(&binary.path)
                .args(&binary.args)
                .envs(binary.env.iter().map(|(k, v)| (k, v)));
        }
        let child = command
            .env(ENV_VF_FD, "0")
            .env(ENV_VF_TOKEN, &launch.token)
            .env(ENV_PARENT_PID, std::process::id().to_string())
            .stdin(Stdio::from(child_end))
            .process_group(0)
            .spawn()
            .map_err(|source| SpawnError::Exec {
                exe: launch.exe.clone(),
                source,
            })?;
        Ok((
            NfProcess {
                child,
                name: launch.name.clone(),
            },
            host,
        ))
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends a signal (SIGTERM to stop, SIGKILL to simulate a crash).
    pub fn signal(&self, signal: Signal) -> std::io::Result<()> {
        let pid = Pid::from_raw(self.child.id() as i32)
            .ok_or_else(|| std::io::Error::other("child has no pid"))?;
        kill_process(pid, signal).map_err(std::io::Error::from)
    }

    /// Whether it exited, without waiting.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Waits for it to exit.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait()
    }

    /// CPU time (user + system) the child used so far, from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> Option<std::time::Duration> {
        process_cpu_time(self.child.id())
    }
}

impl Drop for NfProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Children are forked from one thread that lives as long as the process: the
/// kernel's parent-death signal follows the parent *thread*, so a child forked from a
/// short-lived worker thread would be killed when that thread retires.
mod spawner {
    use std::os::fd::OwnedFd;
    use std::sync::mpsc;
    use std::sync::{Mutex, OnceLock};

    use super::{NfLaunch, NfProcess, SpawnError};

    type Reply = mpsc::Sender<Result<(NfProcess, OwnedFd), SpawnError>>;

    static JOBS: OnceLock<Mutex<mpsc::Sender<(NfLaunch, Reply)>>> = OnceLock::new();

    pub(super) fn run(launch: NfLaunch) -> Result<(NfProcess, OwnedFd), SpawnError> {
        let jobs = JOBS.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<(NfLaunch, Reply)>();
            let started = std::thread::Builder::new()
                .name("nf-spawner".into())
                .spawn(move || {
                    for (launch, reply) in rx {
                        let _ = reply.send(NfProcess::spawn_here(&launch));
                    }
                });
            if let Err(e) = started {
                tracing::error!(error = %e, "cannot start the NF spawner thread");
            }
            Mutex::new(tx)
        });
        let (reply_tx, reply_rx) = mpsc::channel();
        let gone = || SpawnError::Exec {
            exe: launch.exe.clone(),
            source: std::io::Error::other("the NF spawner thread is not running"),
        };
        let sent = jobs
            .lock()
            .map_err(|_| gone())?
            .send((launch.clone(), reply_tx));
        sent.map_err(|_| gone())?;
        reply_rx.recv().map_err(|_| gone())?
    }
}

/// CPU time of a process from `/proc/PID/stat` (fields 14 and 15, in clock ticks).
pub fn process_cpu_time(pid: u32) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it follow ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI nfhost runs on.
    Some(std::time::Duration::from_millis((utime + stime) * 10))
}

/// The path of the running `nfhost` executable, for self-exec.
pub fn current_exe() -> std::io::Result<PathBuf> {
    std::env::current_exe()
}

/// Whether `path` looks runnable (exists).
pub fn exe_exists(path: &Path) -> bool {
    path.is_file()
}
