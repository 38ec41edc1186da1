//! Runs NFs on an engine: spawns NF processes, attaches them to their VFs, waits until
//! their loops are up, and installs chains. Used by `nfhost demo`, `nfhost bench` and
//! the tests; the control plane's reconciler drives the same steps.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use super::engine::{ChainEgress, EngineConfig, EngineError, EngineHandle, Isolation};
use super::nf_process::{Launcher, NfLaunch, NfProcess, SpawnError, UserBinary};
use super::sandbox::{DEFAULT_NF_USER, SandboxError};
use super::secret::new_token;
use crate::nic::{Owner, VfId, WireMatch};

/// How long an NF may take from spawn to a running loop.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);

/// Something went wrong running NFs.
#[derive(Debug, Error)]
pub enum RunnerError {
    /// The engine refused.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The NF process could not start.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// No attach token could be drawn.
    #[error("drawing an attach token failed")]
    Token(#[source] std::io::Error),
    /// The NF user could not be resolved.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The NF did not come up in time.
    #[error("NF {name} on {vf} did not attach within {timeout:?} (see its stderr above)")]
    AttachTimeout {
        /// Its name.
        name: String,
        /// Its VF.
        vf: VfId,
        /// The limit.
        timeout: Duration,
    },
}

/// One NF to run.
#[derive(Debug, Clone)]
pub struct NfSpec {
    /// Instance name (the VF's owner).
    pub name: String,
    /// Kind.
    pub kind: String,
    /// JSON config (empty for defaults).
    pub config: String,
    /// For an `exec` NF: the user's binary, run instead of a built-in kind.
    pub binary: Option<UserBinary>,
}

impl NfSpec {
    /// An NF of `kind` with its default config.
    pub fn new(name: &str, kind: &str) -> Self {
        NfSpec {
            name: name.to_owned(),
            kind: kind.to_owned(),
            config: String::new(),
            binary: None,
        }
    }
}

/// Starts the NF process for `spec` and registers its socket with the engine for `vf`
/// (which assigns the VF to the NF), with a fresh random attach token and the
/// config the NF will ask for.
pub fn spawn_attached(
    engine: &EngineHandle,
    launcher: &Launcher,
    vf: VfId,
    spec: &NfSpec,
) -> Result<NfProcess, RunnerError> {
    let token = new_token().map_err(RunnerError::Token)?;
    let launch = NfLaunch {
        exe: launcher.exe.clone(),
        name: spec.name.clone(),
        kind: spec.kind.clone(),
        token: token.clone(),
        user: launcher.user,
        binary: spec.binary.clone(),
    };
    let (process, sock) = NfProcess::spawn(&launch)?;
    let owner = Owner::new(&spec.name);
    engine.attach(vf, owner, token, spec.config.clone(), sock)?;
    Ok(process)
}

/// An engine and the NF processes running on it. Dropping it stops them all.
#[derive(Debug)]
pub struct Runner {
    engine: EngineHandle,
    launcher: Launcher,
    nfs: Vec<(VfId, NfProcess)>,
}

impl Runner {
    /// Starts an engine; NFs will be started from `exe` (`nfhost`), as the
    /// unprivileged [`DEFAULT_NF_USER`] when this process is root.
    pub fn start(config: EngineConfig, exe: PathBuf) -> Result<Self, RunnerError> {
        let user = super::sandbox::resolve(DEFAULT_NF_USER, None, false)?;
        Ok(Runner {
            engine: EngineHandle::start(config)?,
            launcher: Launcher { exe, user },
            nfs: Vec::new(),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &EngineHandle {
        &self.engine
    }

    /// Spawns an NF process for `vf` and waits until its loop is up.
    pub fn run_nf(&mut self, vf: VfId, spec: &NfSpec) -> Result<u32, RunnerError> {
        let process = spawn_attached(&self.engine, &self.launcher, vf, spec)?;
        let pid = process.pid();
        self.nfs.retain(|(v, _)| *v != vf);
        self.nfs.push((vf, process));
        self.wait_active(vf, &spec.name)?;
        Ok(pid)
    }

    fn wait_active(&self, vf: VfId, name: &str) -> Result<(), RunnerError> {
        if self.engine.wait_active(vf, ATTACH_TIMEOUT)? {
            return Ok(());
        }
        Err(RunnerError::AttachTimeout {
            name: name.to_owned(),
            vf,
            timeout: ATTACH_TIMEOUT,
        })
    }

    /// Installs a chain over `vfs` and starts its NFs, hop by hop.
    pub fn run_chain(
        &mut self,
        vfs: &[VfId],
        nfs: &[NfSpec],
        isolation: Isolation,
        classifier: WireMatch,
        egress: ChainEgress,
    ) -> Result<(), RunnerError> {
        self.engine
            .install_chain(vfs, isolation, classifier, egress)?;
        for (vf, spec) in vfs.iter().zip(nfs) {
            self.run_nf(*vf, spec)?;
        }
        Ok(())
    }

    /// The NF process on `vf`.
    pub fn process(&mut self, vf: VfId) -> Option<&mut NfProcess> {
        self.nfs.iter_mut().find(|(v, _)| *v == vf).map(|(_, p)| p)
    }

    /// Every NF process.
    pub fn processes(&self) -> impl Iterator<Item = (VfId, &NfProcess)> {
        self.nfs.iter().map(|(v, p)| (*v, p))
    }

    /// Stops every NF and the engine.
    pub fn stop(self) {
        let Runner { engine, nfs, .. } = self;
        drop(nfs);
        engine.shutdown();
    }
}
