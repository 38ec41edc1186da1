//! The control plane: desired state, the reconciler and the NF supervisor.
//!
//! Every accepted request becomes one atomic store batch, flushed before the reply;
//! then [`Controller::reconcile`] makes the running system match the stored state:
//! PF VF count, VF admin config, chains steered, NF processes started or stopped. On
//! start the stored state is loaded and reconciled the same way, so what was
//! acknowledged is what runs. A supervisor tick restarts exited NFs per their policy.
//!
//! One lock serialises requests, reconciliation and the supervisor: VF allocation is
//! decided against the stored state alone, so no VF is ever given to two NFs.

pub mod chain_update;
pub mod supervisor;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tokio::sync::broadcast;

use crate::api::proto;
use crate::dataplane::counters::{Counters, Drop as DropReason};
use crate::dataplane::engine::{ChainEgress, EngineError, EngineEvent, EngineHandle, Isolation};
use crate::dataplane::nf_process::NfProcess;
use crate::dataplane::runner::{NfSpec, spawn_attached};
use crate::nic::{LinkState, MacAddr, VfId, VfUpdate, VlanTag, WireMatch};
use crate::store::{Change, State, Store, StoreError};
use supervisor::{Decision, Exit};
use validate::{Violations, parse_vf, short_id, vf_name};

/// Why a request was refused. Each maps to one gRPC status code.
#[derive(Debug, Error)]
pub enum ControlError {
    /// Bad input; nothing changed.
    #[error("invalid request: {}", describe(.0))]
    Invalid(Violations),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The resource exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the system is not in a state to accept it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// No free VF (or another resource ran out).
    #[error("{0}")]
    Exhausted(String),
    /// Storing the change failed; nothing was acknowledged.
    #[error("storing desired state failed")]
    Store(#[from] StoreError),
    /// The NIC engine refused or is gone.
    #[error("NIC engine")]
    Engine(#[source] EngineError),
    /// The device model refused a write that passed validation (a race with the data
    /// path, such as a VF that became assigned).
    #[error("NIC refused")]
    Nic(#[from] crate::nic::NicError),
}

impl From<EngineError> for ControlError {
    /// The device model's refusals stay [`ControlError::Nic`], wherever they were made.
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Nic(nic) => ControlError::Nic(nic),
            other => ControlError::Engine(other),
        }
    }
}

fn describe(v: &Violations) -> String {
    v.0.iter()
        .map(|x| format!("{}: {}", x.field, x.description))
        .collect::<Vec<_>>()
        .join("; ")
}

fn invalid(field: &str, description: impl Into<String>) -> ControlError {
    let mut v = Violations::default();
    v.add(field, description);
    ControlError::Invalid(v)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn event(kind: proto::EventKind, vf: Option<VfId>, nf: &str, message: String) -> proto::Event {
    proto::Event {
        seq: 0,
        time_ms: now_ms(),
        kind: kind as i32,
        vf: vf.map(|v| vf_name(v.0)).unwrap_or_default(),
        nf: if nf.is_empty() {
            String::new()
        } else {
            format!("nfs/{nf}")
        },
        message,
        dma_fault: None,
    }
}

/// The runtime side of one NF.
#[derive(Debug)]
struct NfRun {
    vf: VfId,
    process: Option<NfProcess>,
    status: proto::NfStatus,
    started_at: Instant,
    failures: u32,
    restart_at: Option<Instant>,
    /// The next exit was asked for (VF reset): restart at once, not a failure.
    expect_exit: bool,
}

struct Inner {
    store: Store,
    desired: State,
    engine: EngineHandle,
    exe: PathBuf,
    runs: BTreeMap<String, NfRun>,
    installed_chains: BTreeMap<String, Vec<VfId>>,
    tokens: u64,
    wire: String,
    /// MTU of a host wire's links; 0 for gen and none.
    wire_mtu: u32,
}

/// The control plane of one nfhost instance.
pub struct Controller {
    inner: Mutex<Inner>,
    counters: Arc<Counters>,
    events: broadcast::Sender<proto::Event>,
    total_vfs: u16,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").finish_non_exhaustive()
    }
}

impl Controller {
    /// A controller over a started engine and an opened store. Call
    /// [`Controller::reconcile`] to bring the stored state up.
    pub fn new(
        store: Store,
        engine: EngineHandle,
        exe: PathBuf,
        wire: String,
        wire_mtu: u32,
    ) -> Result<Self, ControlError> {
        let desired = store.load()?;
        let counters = engine.counters().clone();
        let total_vfs = engine.pf()?.total_vfs;
        let (events, _) = broadcast::channel(1024);
        Ok(Controller {
            inner: Mutex::new(Inner {
                store,
                desired,
                engine,
                exe,
                runs: BTreeMap::new(),
                installed_chains: BTreeMap::new(),
                tokens: 0,
                wire,
                wire_mtu,
            }),
            counters,
            events,
            total_vfs,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves state that reconcile repairs.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to events as they are stored.
    pub fn subscribe(&self) -> broadcast::Receiver<proto::Event> {
        self.events.subscribe()
    }

    /// Stores changes plus events in one batch, then broadcasts the events.
    fn commit(
        &self,
        inner: &mut Inner,
        mut changes: Vec<Change>,
        events: Vec<proto::Event>,
    ) -> Result<(), ControlError> {
        let n = events.len();
        changes.extend(events.into_iter().map(Change::Event));
        inner.store.apply(&changes)?;
        inner.desired = inner.store.load()?;
        if n > 0 {
            for e in inner.store.events(n)? {
                let _ = self.events.send(e);
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ PF

    /// The PF.
    pub fn get_pf(&self) -> Result<proto::Pf, ControlError> {
        let inner = self.lock();
        let wire = inner.wire.clone();
        let wire_mtu = inner.wire_mtu;
        let assigned = inner.owned_vfs().len() as u32;
        let pf = inner.engine.pf()?;
        Ok(proto::Pf {
            name: "pfs/0".into(),
            mac: pf.mac.to_string(),
            link_up: pf.link == crate::nic::Link::Up,
            total_vfs: u32::from(pf.total_vfs),
            num_vfs: u32::from(pf.num_vfs),
            assigned_vfs: assigned,
            wire,
            wire_mtu,
        })
    }

    /// Sets the VF count.
    pub fn set_vf_count(
        &self,
        name: &str,
        num_vfs: u32,
        validate_only: bool,
    ) -> Result<proto::Pf, ControlError> {
        if name != "pfs/0" {
            return Err(ControlError::NotFound(format!(
                "{name:?} not found: this host has one PF, pfs/0"
            )));
        }
        {
            let mut inner = self.lock();
            if num_vfs > u32::from(self.total_vfs) {
                return Err(invalid(
                    "num_vfs",
                    format!(
                        "{num_vfs} is above this PF's total_vfs of {}",
                        self.total_vfs
                    ),
                ));
            }
            let n = num_vfs as u16;
            let current = inner.engine.pf()?.num_vfs;
            if n != current {
                if current != 0 && n != 0 {
                    return Err(ControlError::FailedPrecondition(format!(
                        "{current} VFs are enabled; set the count to 0 before changing it to {n}"
                    )));
                }
                let owned = inner.owned_vfs();
                if n == 0 && !owned.is_empty() {
                    let who: Vec<String> = owned
                        .iter()
                        .map(|(vf, nf)| format!("{} owned by nfs/{nf}", vf_name(vf.0)))
                        .collect();
                    return Err(ControlError::FailedPrecondition(format!(
                        "cannot disable VFs while assigned: {}; delete those NFs first",
                        who.join(", ")
                    )));
                }
                if !validate_only {
                    let mut changes = vec![Change::PutPf(proto::Pf {
                        name: "pfs/0".into(),
                        num_vfs,
                        ..Default::default()
                    })];
                    changes.extend(inner.desired.vfs.keys().map(|i| Change::DeleteVf(*i)));
                    let ev = event(
                        proto::EventKind::ConfigChanged,
                        None,
                        "",
                        format!("VF count {current} -> {n}"),
                    );
                    self.commit(&mut inner, changes, vec![ev])?;
                    inner.engine.set_vf_count(n)?;
                }
            }
        }
        self.get_pf()
    }

    // ------------------------------------------------------------------ VF

    /// Every VF.
    pub fn list_vfs(&self) -> Result<Vec<proto::Vf>, ControlError> {
        let inner = self.lock();
        let n = inner.engine.pf()?.num_vfs;
        (0..n).map(|i| inner.vf_message(VfId(i))).collect()
    }

    /// One VF.
    pub fn get_vf(&self, name: &str) -> Result<proto::Vf, ControlError> {
        let inner = self.lock();
        let vf = inner.vf_by_name(name)?;
        inner.vf_message(vf)
    }

    /// Writes VF admin config fields.
    pub fn update_vf(
        &self,
        vf: &proto::Vf,
        mask: &[String],
        validate_only: bool,
    ) -> Result<proto::Vf, ControlError> {
        let mut inner = self.lock();
        let id = inner.vf_by_name(&vf.name)?;
        let update = update_from_mask(vf, mask)?;
        // Dry-run on a copy of the device model: the same rules as the real write.
        match inner.engine.update_vf(id, update.clone(), true) {
            Err(EngineError::Nic(err)) => return Err(invalid("vf", err.to_string())),
            other => other?,
        };
        if validate_only {
            return inner.vf_message(id);
        }
        let admin = inner.engine.update_vf(id, update, false)?;
        let record = admin_record(id, &admin);
        let ev = event(
            proto::EventKind::ConfigChanged,
            Some(id),
            "",
            format!("VF config updated: {}", mask_text(mask, vf)),
        );
        self.commit(&mut inner, vec![Change::PutVf(id.0, record)], vec![ev])?;
        inner.vf_message(id)
    }

    /// Function-level reset of a VF; its NF (if any) is restarted on a clean VF.
    pub fn reset_vf(&self, name: &str) -> Result<proto::Vf, ControlError> {
        let mut inner = self.lock();
        let id = inner.vf_by_name(name)?;
        let owner = inner.owner_of(id);
        inner.engine.reset_vf(id)?;
        if let Some(nf) = owner {
            if let Some(run) = inner.runs.get_mut(&nf) {
                run.expect_exit = true;
                if let Some(p) = &run.process {
                    let _ = p.signal(rustix::process::Signal::KILL);
                }
            }
        }
        let ev = event(
            proto::EventKind::ConfigChanged,
            Some(id),
            "",
            "function-level reset".into(),
        );
        self.commit(&mut inner, vec![], vec![ev])?;
        inner.vf_message(id)
    }

    // ------------------------------------------------------------------ NF

    /// Creates a standalone NF.
    pub fn create_nf(
        &self,
        nf: &proto::Nf,
        validate_only: bool,
    ) -> Result<proto::Nf, ControlError> {
        let v = validate::check_new_nf(nf);
        if !v.is_empty() {
            return Err(ControlError::Invalid(v));
        }
        let mut inner = self.lock();
        let id = short_id("nfs", &nf.name).to_owned();
        if inner.desired.nfs.contains_key(&id) {
            return Err(ControlError::AlreadyExists(format!(
                "nfs/{id} already exists"
            )));
        }
        let num_vfs = inner.engine.pf()?.num_vfs;
        let owned = inner.owned_vfs();
        let vf = if nf.vf.is_empty() {
            inner.free_vfs(num_vfs, 1)?[0]
        } else {
            let vf = VfId(parse_vf(&nf.vf).unwrap_or(u16::MAX));
            if vf.0 >= num_vfs {
                return Err(ControlError::NotFound(format!(
                    "{} does not exist: this PF has {num_vfs} VFs enabled",
                    nf.vf
                )));
            }
            if let Some(owner) = owned.get(&vf) {
                return Err(ControlError::FailedPrecondition(format!(
                    "{} is already owned by nfs/{owner}",
                    vf_name(vf.0)
                )));
            }
            vf
        };
        let record = proto::Nf {
            name: id.clone(),
            kind: nf.kind.clone(),
            config: nf.config.clone(),
            vf: vf_name(vf.0),
            restart_policy: nf.restart_policy,
            chain: String::new(),
            status: None,
        };
        if !validate_only {
            let ev = event(
                proto::EventKind::ConfigChanged,
                Some(vf),
                &id,
                format!("NF nfs/{id} ({}) created", nf.kind),
            );
            self.commit(&mut inner, vec![Change::PutNf(record.clone())], vec![ev])?;
            self.reconcile_locked(&mut inner);
        }
        Ok(inner.nf_message(&record))
    }

    /// One NF with its status.
    pub fn get_nf(&self, name: &str) -> Result<proto::Nf, ControlError> {
        let inner = self.lock();
        let id = short_id("nfs", name);
        let nf = inner
            .desired
            .nfs
            .get(id)
            .ok_or_else(|| ControlError::NotFound(format!("nfs/{id} not found")))?;
        Ok(inner.nf_message(nf))
    }

    /// Every NF.
    pub fn list_nfs(&self) -> Vec<proto::Nf> {
        let inner = self.lock();
        inner
            .desired
            .nfs
            .values()
            .map(|nf| inner.nf_message(nf))
            .collect()
    }

    /// Deletes a standalone NF: stops it, resets and frees its VF.
    pub fn delete_nf(&self, name: &str) -> Result<(), ControlError> {
        let mut inner = self.lock();
        let id = short_id("nfs", name).to_owned();
        let nf = inner
            .desired
            .nfs
            .get(&id)
            .ok_or_else(|| ControlError::NotFound(format!("nfs/{id} not found")))?;
        if !nf.chain.is_empty() {
            return Err(ControlError::FailedPrecondition(format!(
                "nfs/{id} is a hop of {}; delete the chain instead",
                nf.chain
            )));
        }
        let vf = parse_vf(&nf.vf).map(VfId);
        let ev = event(
            proto::EventKind::ConfigChanged,
            vf,
            &id,
            format!("NF nfs/{id} deleted"),
        );
        self.commit(&mut inner, vec![Change::DeleteNf(id)], vec![ev])?;
        self.reconcile_locked(&mut inner);
        Ok(())
    }

    // ------------------------------------------------------------------ chains

    /// Creates a chain whole.
    pub fn create_chain(
        &self,
        chain: &proto::Chain,
        validate_only: bool,
    ) -> Result<proto::Chain, ControlError> {
        let v = validate::check_chain(chain);
        if !v.is_empty() {
            return Err(ControlError::Invalid(v));
        }
        let mut inner = self.lock();
        let id = short_id("chains", &chain.name).to_owned();
        if inner.desired.chains.contains_key(&id) {
            return Err(ControlError::AlreadyExists(format!(
                "chains/{id} already exists; update it (UpdateChain) to reconfigure its NFs, or delete it first to replace it"
            )));
        }
        for nf in &chain.nfs {
            if inner.desired.nfs.contains_key(&nf.name) {
                return Err(ControlError::AlreadyExists(format!(
                    "nfs/{} already exists; chain NF names must be unused",
                    nf.name
                )));
            }
        }
        inner.check_intake(chain)?;
        let num_vfs = inner.engine.pf()?.num_vfs;
        let vfs = inner.free_vfs(num_vfs, chain.nfs.len())?;
        let mut record = chain.clone();
        record.name = format!("chains/{id}");
        record.vfs = vfs.iter().map(|v| vf_name(v.0)).collect();
        if record.isolation == proto::Isolation::Unspecified as i32 {
            record.isolation = proto::Isolation::Strict as i32;
        }
        if validate_only {
            return Ok(record);
        }
        let mut changes = vec![Change::PutChain(record.clone())];
        for (hop, vf) in chain.nfs.iter().zip(&vfs) {
            changes.push(Change::PutNf(proto::Nf {
                name: hop.name.clone(),
                kind: hop.kind.clone(),
                config: hop.config.clone(),
                vf: vf_name(vf.0),
                restart_policy: chain.restart_policy,
                chain: record.name.clone(),
                status: None,
            }));
        }
        let ev = event(
            proto::EventKind::ConfigChanged,
            None,
            "",
            format!(
                "chain {} created over {}",
                record.name,
                record.vfs.join(", ")
            ),
        );
        self.commit(&mut inner, changes, vec![ev])?;
        self.reconcile_locked(&mut inner);
        Ok(record)
    }

    /// Updates a chain in place (see [`chain_update`]): the NFs whose config changed
    /// restart on their own VFs, the others keep running. A missing chain is created
    /// when `allow_missing` says so.
    pub fn update_chain(
        &self,
        chain: &proto::Chain,
        mask: &[String],
        validate_only: bool,
        allow_missing: bool,
    ) -> Result<proto::Chain, ControlError> {
        let mut inner = self.lock();
        let id = short_id("chains", &chain.name).to_owned();
        let Some(stored) = inner.desired.chains.get(&id).cloned() else {
            if allow_missing {
                drop(inner);
                return self.create_chain(chain, validate_only);
            }
            return Err(ControlError::NotFound(format!(
                "chains/{id} not found; create it first (or set allow_missing)"
            )));
        };
        let plan = chain_update::plan(&stored, chain, mask).map_err(|r| match r {
            chain_update::Refusal::Invalid(v) => ControlError::Invalid(v),
            chain_update::Refusal::NotInPlace(why) => {
                ControlError::FailedPrecondition(format!("chains/{id}: {why}"))
            }
        })?;
        if validate_only || plan.is_noop() {
            return Ok(plan.chain);
        }
        let mut changes = vec![Change::PutChain(plan.chain.clone())];
        let mut events = Vec::new();
        for (i, hop) in plan.chain.nfs.iter().enumerate() {
            let reconfigured = plan.reconfigured.contains(&i);
            if !reconfigured && !plan.restart_policy_changed {
                continue;
            }
            let Some(mut nf) = inner.desired.nfs.get(&hop.name).cloned() else {
                continue;
            };
            nf.config.clone_from(&hop.config);
            nf.restart_policy = plan.chain.restart_policy;
            if reconfigured {
                events.push(event(
                    proto::EventKind::ConfigChanged,
                    parse_vf(&nf.vf).map(VfId),
                    &hop.name,
                    format!("chain {id}: nf {} reconfigured", hop.name),
                ));
            }
            changes.push(Change::PutNf(nf));
        }
        if plan.restart_policy_changed {
            events.push(event(
                proto::EventKind::ConfigChanged,
                None,
                "",
                format!(
                    "chain {id}: restart policy {} -> {}",
                    policy_name(stored.restart_policy),
                    policy_name(plan.chain.restart_policy)
                ),
            ));
        }
        self.commit(&mut inner, changes, events)?;
        let reconfigured: Vec<String> = plan
            .reconfigured
            .iter()
            .filter_map(|i| plan.chain.nfs.get(*i))
            .map(|hop| hop.name.clone())
            .collect();
        let (mut inner, restart, events) = self.reconfigure_in_place(inner, &reconfigured);
        self.restart_reconfigured(&mut inner, &restart, events);
        Ok(plan.chain)
    }

    /// Offers each running NF of `names` its new (stored) config through its VF's
    /// mailbox, and waits up to [`IN_PLACE_WAIT`] for the answers, without holding
    /// the controller. Returns the controller again, the NFs that must restart
    /// instead (not running, not attached, refused because their kind cannot take
    /// that change in place, or silent) and the events saying which way each went.
    fn reconfigure_in_place<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner>,
        names: &[String],
    ) -> (MutexGuard<'a, Inner>, Vec<String>, Vec<proto::Event>) {
        let mut restart = Vec::new();
        let mut posted = Vec::new();
        let mut events = Vec::new();
        for name in names {
            let (Some(run), Some(nf)) = (inner.runs.get(name), inner.desired.nfs.get(name)) else {
                restart.push(name.clone());
                continue;
            };
            if run.process.is_none() {
                restart.push(name.clone());
                continue;
            }
            let (vf, config) = (run.vf, nf.config.clone());
            match inner.engine.post_config(vf, config) {
                Ok(Some(p)) => posted.push((name.clone(), vf, p.answer)),
                _ => {
                    events.push(event(
                        proto::EventKind::ConfigChanged,
                        Some(vf),
                        name,
                        format!("nf {name} is not attached to its VF yet: restarting it"),
                    ));
                    restart.push(name.clone());
                }
            }
        }
        let mut answers = Vec::with_capacity(posted.len());
        if !posted.is_empty() {
            drop(inner);
            let deadline = Instant::now() + IN_PLACE_WAIT;
            for (name, vf, answer) in posted {
                // No answer in time, or none coming (the NF detached): restart it.
                let wait = deadline.saturating_duration_since(Instant::now());
                answers.push((name, vf, answer.recv_timeout(wait).ok()));
            }
            inner = self.lock();
        }
        for (name, vf, answer) in answers {
            let message = match answer {
                Some(Ok(())) => format!("nf {name} took its new config in place (same process)"),
                Some(Err(why)) => {
                    restart.push(name.clone());
                    format!("nf {name} cannot take its new config in place ({why}): restarting it")
                }
                None => {
                    restart.push(name.clone());
                    format!(
                        "nf {name} did not answer its new config within {} ms: restarting it",
                        IN_PLACE_WAIT.as_millis()
                    )
                }
            };
            events.push(event(
                proto::EventKind::ConfigChanged,
                Some(vf),
                &name,
                message,
            ));
        }
        (inner, restart, events)
    }

    /// Restarts NFs on their own VFs with their stored (new) config: the VF is
    /// scrubbed first, as after an exit, and the restart is no failure (the crash-loop
    /// count starts over: a new config deserves a fresh start). An NF that was not
    /// running (failed, or waiting out a backoff) starts now.
    /// `events` (what happened before, such as the in-place attempts) are stored with
    /// the restarts' own, in one batch.
    fn restart_reconfigured(
        &self,
        inner: &mut Inner,
        names: &[String],
        mut events: Vec<proto::Event>,
    ) {
        let mut missing = false;
        for name in names {
            let Some(nf) = inner.desired.nfs.get(name).cloned() else {
                continue;
            };
            let Some(run) = inner.runs.get_mut(name) else {
                // Never started: the reconciler starts it, with the stored config.
                missing = true;
                continue;
            };
            let vf = run.vf;
            let old = run.process.take();
            run.failures = 0;
            run.restart_at = None;
            run.expect_exit = false;
            // DMA stopped and the VF scrubbed before the old process goes, so nothing
            // it left in flight reaches the VF its successor attaches to.
            let _ = inner.engine.detach(vf);
            if let Some(mut process) = old {
                let _ = process.signal(rustix::process::Signal::KILL);
                let ended = process.wait().map(Exit::from_status);
                if let (Ok(exit), Some(run)) = (ended, inner.runs.get_mut(name)) {
                    run.status.last_exit =
                        format!("stopped for a new config ({})", exit.description);
                }
            }
            if let Some(e) = inner.start(&nf) {
                events.push(e);
            }
        }
        if !events.is_empty() {
            let _ = self.commit(inner, vec![], events);
        }
        if missing {
            self.reconcile_locked(inner);
        }
    }

    /// One chain.
    pub fn get_chain(&self, name: &str) -> Result<proto::Chain, ControlError> {
        let inner = self.lock();
        let id = short_id("chains", name);
        inner
            .desired
            .chains
            .get(id)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(format!("chains/{id} not found")))
    }

    /// Every chain.
    pub fn list_chains(&self) -> Vec<proto::Chain> {
        self.lock().desired.chains.values().cloned().collect()
    }

    /// Deletes a chain whole.
    pub fn delete_chain(&self, name: &str) -> Result<(), ControlError> {
        let mut inner = self.lock();
        let id = short_id("chains", name).to_owned();
        let chain = inner
            .desired
            .chains
            .get(&id)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(format!("chains/{id} not found")))?;
        let mut changes = vec![Change::DeleteChain(id.clone())];
        changes.extend(
            chain
                .nfs
                .iter()
                .map(|hop| Change::DeleteNf(hop.name.clone())),
        );
        let ev = event(
            proto::EventKind::ConfigChanged,
            None,
            "",
            format!("chain chains/{id} deleted"),
        );
        self.commit(&mut inner, changes, vec![ev])?;
        self.reconcile_locked(&mut inner);
        Ok(())
    }

    // ------------------------------------------------------------------ telemetry

    /// Per-VF counters.
    pub fn stats(&self, active_only: bool) -> Result<proto::Stats, ControlError> {
        let inner = self.lock();
        let n = inner.engine.pf()?.num_vfs;
        let faults = inner.engine.fault_counts()?;
        let owners = inner.owned_vfs();
        let c = &self.counters;
        let mut vfs = Vec::new();
        for i in 0..n {
            let vf = VfId(i);
            let s = c.vf(vf).snapshot();
            let owner = owners.get(&vf).cloned().unwrap_or_default();
            if active_only && owner.is_empty() && s.rx_packets + s.tx_packets + s.total_drops() == 0
            {
                continue;
            }
            let chain = inner
                .desired
                .nfs
                .get(&owner)
                .map(|nf| nf.chain.clone())
                .unwrap_or_default();
            vfs.push(proto::VfStats {
                vf: vf_name(i),
                nf: if owner.is_empty() {
                    owner
                } else {
                    format!("nfs/{owner}")
                },
                chain,
                rx_packets: s.rx_packets,
                rx_bytes: s.rx_bytes,
                tx_packets: s.tx_packets,
                tx_bytes: s.tx_bytes,
                drops: DropReason::ALL
                    .iter()
                    .map(|d| (d.as_str().to_owned(), s.drop_count(*d)))
                    .collect(),
                interrupts_delivered: s.irq_delivered,
                interrupts_coalesced: s.irq_coalesced,
                interrupts_blocked: s.irq_blocked,
                dma_copied_bytes: s.copied_bytes,
                ring_errors: s.ring_errors,
                dma_faults: faults.get(usize::from(i)).map_or(0, |f| f.total()),
                dma_faults_by_reason: crate::nic::FaultReason::ALL
                    .iter()
                    .map(|r| {
                        let count = faults.get(usize::from(i)).map_or(0, |f| f.get(*r));
                        (r.as_str().to_owned(), count)
                    })
                    .collect(),
            });
        }
        let w = &c.wire;
        Ok(proto::Stats {
            time_ms: now_ms(),
            vfs,
            wire: Some(proto::WireStats {
                rx_packets: w.rx_packets.get(),
                rx_bytes: w.rx_bytes.get(),
                tx_packets: w.tx_packets.get(),
                tx_bytes: w.tx_bytes.get(),
                drops: DropReason::ALL
                    .iter()
                    .map(|d| (d.as_str().to_owned(), w.drops(*d)))
                    .collect(),
            }),
        })
    }

    /// The latest self-report (JSON) of the NF `name`, such as a monitor's top talkers.
    pub fn nf_report(&self, name: &str) -> Option<String> {
        let inner = self.lock();
        let nf = inner.desired.nfs.get(short_id("nfs", name))?;
        let vf = VfId(parse_vf(&nf.vf)?);
        inner.engine.view().report(vf)
    }

    /// Wire sink figures (gen wire): packets back out and their latency.
    pub fn sink_stats(&self) -> crate::dataplane::r#gen::SinkStats {
        self.lock().engine.view().sink()
    }

    /// The stored recent events, oldest first.
    pub fn events(&self, limit: usize) -> Result<Vec<proto::Event>, ControlError> {
        Ok(self.lock().store.events(limit)?)
    }

    /// Records that the service started (boot id in the message).
    pub fn record_start(&self) -> Result<(), ControlError> {
        let mut inner = self.lock();
        let boot = inner.store.boot_id();
        let ev = event(
            proto::EventKind::ServiceStarted,
            None,
            "",
            format!("nfhost started (boot {boot})"),
        );
        self.commit(&mut inner, vec![], vec![ev])
    }

    // ------------------------------------------------------------------ reconcile

    /// Makes the running system match the stored state.
    pub fn reconcile(&self) {
        let mut inner = self.lock();
        self.reconcile_locked(&mut inner);
    }

    fn reconcile_locked(&self, inner: &mut Inner) {
        let mut events = Vec::new();
        // PF VF count.
        if let Some(pf) = inner.desired.pf.clone() {
            let n = pf.num_vfs as u16;
            let _ = inner.engine.set_vf_count(n);
        }
        // VF admin config.
        for (index, record) in inner.desired.vfs.clone() {
            let update = update_from_record(&record);
            let _ = inner.engine.update_vf(VfId(index), update, false);
        }
        // NFs that should no longer run.
        let gone: Vec<String> = inner
            .runs
            .keys()
            .filter(|name| !inner.desired.nfs.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(mut run) = inner.runs.remove(&name) {
                let vf = run.vf;
                if let Some(mut p) = run.process.take() {
                    let _ = p.signal(rustix::process::Signal::KILL);
                    let _ = p.wait();
                }
                let _ = inner.engine.release(vf);
                events.push(event(
                    proto::EventKind::NfExited,
                    Some(vf),
                    &name,
                    format!("nfs/{name} stopped: deleted"),
                ));
            }
        }
        // Chains that should no longer be steered.
        let old: Vec<String> = inner
            .installed_chains
            .keys()
            .filter(|c| !inner.desired.chains.contains_key(*c))
            .cloned()
            .collect();
        for name in old {
            if let Some(vfs) = inner.installed_chains.remove(&name) {
                let _ = inner.engine.remove_chain(&vfs);
            }
        }
        // Chains to steer.
        let new: Vec<proto::Chain> = inner
            .desired
            .chains
            .iter()
            .filter(|(id, _)| !inner.installed_chains.contains_key(*id))
            .map(|(_, c)| c.clone())
            .collect();
        for chain in new {
            let id = short_id("chains", &chain.name).to_owned();
            let hops: Vec<VfId> = chain
                .vfs
                .iter()
                .filter_map(|v| parse_vf(v))
                .map(VfId)
                .collect();
            let classifier = chain.classifier.clone().unwrap_or_default();
            let wire_match = WireMatch {
                vlan: (classifier.vlan != 0).then_some(classifier.vlan as u16),
                dst: classifier.dst_mac.parse::<MacAddr>().ok(),
            };
            let egress = chain_egress(chain.egress.as_ref());
            let isolation = if chain.isolation == proto::Isolation::Shared as i32 {
                Isolation::Shared
            } else {
                Isolation::Strict
            };
            match inner
                .engine
                .install_chain(&hops, isolation, wire_match, egress)
            {
                Ok(()) => {
                    inner.installed_chains.insert(id, hops);
                }
                Err(err) => events.push(event(
                    proto::EventKind::ConfigChanged,
                    None,
                    "",
                    format!(
                        "chain {} could not be steered: {}",
                        chain.name,
                        crate::error_chain(&err)
                    ),
                )),
            }
        }
        // NFs to start.
        let missing: Vec<proto::Nf> = inner
            .desired
            .nfs
            .values()
            .filter(|nf| !inner.runs.contains_key(&nf.name))
            .cloned()
            .collect();
        for nf in missing {
            let Some(vf) = parse_vf(&nf.vf).map(VfId) else {
                continue;
            };
            inner.runs.insert(
                nf.name.clone(),
                NfRun {
                    vf,
                    process: None,
                    status: proto::NfStatus {
                        state: proto::NfState::Pending as i32,
                        ..Default::default()
                    },
                    started_at: Instant::now(),
                    failures: 0,
                    restart_at: None,
                    expect_exit: false,
                },
            );
            if let Some(e) = inner.start(&nf) {
                events.push(e);
            }
        }
        if !events.is_empty() {
            let _ = self.commit(inner, vec![], events);
        }
    }

    /// One supervisor pass: reap exited NFs, restart those whose backoff ended, and
    /// store what the engine reported (DMA faults, detaches).
    pub fn tick(&self) {
        let mut inner = self.lock();
        let mut events = Vec::new();
        let now = Instant::now();
        let names: Vec<String> = inner.runs.keys().cloned().collect();
        for name in names {
            let Some(nf) = inner.desired.nfs.get(&name).cloned() else {
                continue;
            };
            let policy = proto::RestartPolicy::try_from(nf.restart_policy)
                .unwrap_or(proto::RestartPolicy::Always);
            let Some(run) = inner.runs.get_mut(&name) else {
                continue;
            };
            let exited = match run.process.as_mut().map(NfProcess::try_wait) {
                Some(Ok(Some(status))) => Some(status),
                _ => None,
            };
            if let Some(status) = exited {
                run.process = None;
                let exit = Exit::from_status(status);
                run.status.pid = 0;
                run.status.last_exit = exit.description.clone();
                if std::mem::take(&mut run.expect_exit) {
                    run.restart_at = Some(now);
                    run.status.state = proto::NfState::Restarting as i32;
                    continue;
                }
                let (decision, failures) =
                    supervisor::decide(policy, &exit, now - run.started_at, run.failures);
                run.failures = failures;
                events.push(event(
                    proto::EventKind::NfExited,
                    Some(run.vf),
                    &name,
                    format!("nfs/{name} exited: {}", exit.description),
                ));
                match decision {
                    Decision::Restart { after } => {
                        run.status.state = proto::NfState::Restarting as i32;
                        run.status.reason = format!(
                            "restarting in {} ms after {}",
                            after.as_millis(),
                            exit.description
                        );
                        run.restart_at = Some(now + after);
                    }
                    Decision::Fail { reason } => {
                        run.status.state = proto::NfState::Failed as i32;
                        run.status.reason = reason.clone();
                        run.restart_at = None;
                        events.push(event(
                            proto::EventKind::NfFailed,
                            Some(run.vf),
                            &name,
                            format!("nfs/{name} failed: {reason}"),
                        ));
                    }
                }
            }
            let due = inner
                .runs
                .get(&name)
                .and_then(|r| r.restart_at)
                .is_some_and(|t| t <= now);
            if due {
                if let Some(run) = inner.runs.get_mut(&name) {
                    run.restart_at = None;
                    run.status.restarts += 1;
                }
                if let Some(e) = inner.start(&nf) {
                    events.push(e);
                }
                events.push(event(
                    proto::EventKind::NfRestarted,
                    parse_vf(&nf.vf).map(VfId),
                    &name,
                    format!("nfs/{name} restarted"),
                ));
            }
        }
        // What the engine saw.
        let engine_events = inner.engine.view().take_events();
        let mut faults = 0usize;
        for e in engine_events {
            match e {
                EngineEvent::DmaFault(f) => {
                    faults += 1;
                    if faults > 50 {
                        continue; // The rest are counted; the log keeps a sample.
                    }
                    let owner = inner.owner_of(f.vf).unwrap_or_default();
                    let mut ev = event(proto::EventKind::DmaFault, Some(f.vf), &owner, f.to_string());
                    ev.dma_fault = Some(proto::DmaFault {
                        iova: f.iova.0,
                        len: f.len,
                        access: match f.access {
                            crate::nic::Access::Read => "read".into(),
                            crate::nic::Access::Write => "write".into(),
                        },
                        reason: f.reason.as_str().into(),
                    });
                    events.push(ev);
                }
                EngineEvent::Detached { vf, owner, mappings } => events.push(event(
                    proto::EventKind::NfExited,
                    Some(vf),
                    &owner.0,
                    format!("{} scrubbed after nfs/{} detached: DMA stopped, {mappings} mapping(s) removed", vf_name(vf.0), owner.0),
                )),
                EngineEvent::Attached { .. } => {}
            }
        }
        if faults > 50 {
            events.push(event(
                proto::EventKind::DmaFault,
                None,
                "",
                format!("{} more DMA faults not logged individually", faults - 50),
            ));
        }
        if !events.is_empty() {
            let _ = self.commit(&mut inner, vec![], events);
        }
    }

    /// Stops every NF (service shutdown).
    pub fn stop_all(&self) {
        let mut inner = self.lock();
        let runs = std::mem::take(&mut inner.runs);
        for (_, mut run) in runs {
            if let Some(p) = run.process.take() {
                let _ = p.signal(rustix::process::Signal::TERM);
                drop(p);
            }
        }
    }
}

impl Inner {
    /// VF → owning NF name, from the stored state.
    fn owned_vfs(&self) -> BTreeMap<VfId, String> {
        self.desired
            .nfs
            .values()
            .filter_map(|nf| parse_vf(&nf.vf).map(|v| (VfId(v), nf.name.clone())))
            .collect()
    }

    /// Refuses a chain that would take wire frames another stored chain takes (by
    /// classifier or, for two-way chains, by return VLAN).
    fn check_intake(&self, chain: &proto::Chain) -> Result<(), ControlError> {
        let name = format!("chains/{}", short_id("chains", &chain.name));
        for mine in validate::wire_intake(chain) {
            for other in self.desired.chains.values().filter(|c| c.name != name) {
                let Some(theirs) = validate::wire_intake(other)
                    .into_iter()
                    .find(|t| t.clashes(&mine))
                else {
                    continue;
                };
                let frames = match (mine.vlan, mine.dst_mac.as_str()) {
                    (0, "") => "every wire frame".to_owned(),
                    (0, mac) => format!("wire frames to {mac}"),
                    (vlan, "") => format!("wire frames of VLAN {vlan}"),
                    (vlan, mac) => format!("wire frames of VLAN {vlan} to {mac}"),
                };
                let whose = |field: &str| match field {
                    "egress" => "two-way return direction (egress.vlan)",
                    _ => "classifier",
                };
                return Err(ControlError::FailedPrecondition(format!(
                    "{} already takes {frames} (its {}), which this chain's {} needs",
                    other.name,
                    whose(theirs.field),
                    whose(mine.field)
                )));
            }
        }
        Ok(())
    }

    fn owner_of(&self, vf: VfId) -> Option<String> {
        self.owned_vfs().remove(&vf)
    }

    fn free_vfs(&self, num_vfs: u16, n: usize) -> Result<Vec<VfId>, ControlError> {
        let owned: BTreeSet<VfId> = self.owned_vfs().into_keys().collect();
        let free: Vec<VfId> = (0..num_vfs)
            .map(VfId)
            .filter(|v| !owned.contains(v))
            .take(n)
            .collect();
        if free.len() < n {
            return Err(ControlError::Exhausted(format!(
                "no free VF: {n} needed, {} of {num_vfs} free; delete an NF or chain, or raise the VF count",
                free.len()
            )));
        }
        Ok(free)
    }

    fn vf_by_name(&self, name: &str) -> Result<VfId, ControlError> {
        let index = parse_vf(name).ok_or_else(|| {
            invalid(
                "name",
                format!("{name:?} is not a VF name such as pfs/0/vfs/3"),
            )
        })?;
        let n = self.engine.pf()?.num_vfs;
        if index >= n {
            return Err(ControlError::NotFound(format!(
                "{} does not exist: this PF has {n} VFs enabled",
                vf_name(index)
            )));
        }
        Ok(VfId(index))
    }

    fn vf_message(&self, vf: VfId) -> Result<proto::Vf, ControlError> {
        let owner = self.owner_of(vf).unwrap_or_default();
        let chain = self
            .desired
            .nfs
            .get(&owner)
            .map(|n| n.chain.clone())
            .unwrap_or_default();
        let v = self.engine.vf(vf)?;
        let a = &v.admin;
        Ok(proto::Vf {
            name: vf_name(vf.0),
            index: u32::from(vf.0),
            mac: v.mac.to_string(),
            vlan: u32::from(a.vlan),
            qos: u32::from(a.qos),
            spoof_check: a.spoof_check,
            trust: a.trust,
            link_state: link_state_to_proto(a.link_state) as i32,
            min_tx_rate: a.min_tx_rate,
            max_tx_rate: a.max_tx_rate,
            mtu: a.mtu,
            owner: if owner.is_empty() {
                owner
            } else {
                format!("nfs/{owner}")
            },
            chain,
            link_up: v.link_up,
        })
    }

    fn nf_message(&self, nf: &proto::Nf) -> proto::Nf {
        let mut status =
            self.runs
                .get(&nf.name)
                .map(|r| r.status.clone())
                .unwrap_or(proto::NfStatus {
                    state: proto::NfState::Pending as i32,
                    ..Default::default()
                });
        status.report = parse_vf(&nf.vf)
            .and_then(|vf| self.engine.view().report(VfId(vf)))
            .unwrap_or_default();
        proto::Nf {
            name: format!("nfs/{}", nf.name),
            status: Some(status),
            ..nf.clone()
        }
    }

    /// Spawns the NF's process and attaches it to its VF.
    fn start(&mut self, nf: &proto::Nf) -> Option<proto::Event> {
        let vf = parse_vf(&nf.vf).map(VfId)?;
        self.tokens += 1;
        let spec = NfSpec {
            name: nf.name.clone(),
            kind: nf.kind.clone(),
            config: nf.config.clone(),
        };
        let spawned = spawn_attached(&self.engine, &self.exe, vf, &spec, self.tokens)
            .map_err(|e| crate::error_chain(&e));
        let run = self.runs.get_mut(&nf.name)?;
        run.started_at = Instant::now();
        match spawned {
            Ok(process) => {
                run.status.state = proto::NfState::Running as i32;
                run.status.pid = process.pid();
                run.status.reason.clear();
                let pid = process.pid();
                run.process = Some(process);
                Some(event(
                    proto::EventKind::NfStarted,
                    Some(vf),
                    &nf.name,
                    format!("nfs/{} started on {} (pid {pid})", nf.name, vf_name(vf.0)),
                ))
            }
            Err(reason) => {
                run.status.state = proto::NfState::Failed as i32;
                run.status.reason = reason.clone();
                Some(event(
                    proto::EventKind::NfFailed,
                    Some(vf),
                    &nf.name,
                    format!("nfs/{} could not start: {reason}", nf.name),
                ))
            }
        }
    }
}

/// A VF write from an API message and its update mask (all writable fields if empty).
fn update_from_mask(vf: &proto::Vf, mask: &[String]) -> Result<VfUpdate, ControlError> {
    const FIELDS: [&str; 9] = [
        "mac",
        "vlan",
        "qos",
        "spoof_check",
        "trust",
        "link_state",
        "min_tx_rate",
        "max_tx_rate",
        "mtu",
    ];
    let fields: Vec<&str> = if mask.is_empty() {
        FIELDS.to_vec()
    } else {
        mask.iter().map(String::as_str).collect()
    };
    let mut u = VfUpdate::default();
    let mut v = Violations::default();
    for field in fields {
        match field {
            "mac" => match vf.mac.as_str() {
                "" => u.mac = Some(None),
                text => match text.parse::<MacAddr>() {
                    Ok(mac) => u.mac = Some(Some(mac)),
                    Err(e) => v.add("vf.mac", e.to_string()),
                },
            },
            "vlan" => match u16::try_from(vf.vlan) {
                Ok(x) => u.vlan = Some(x),
                Err(_) => v.add(
                    "vf.vlan",
                    format!("VLAN {} is out of range 0-4095", vf.vlan),
                ),
            },
            "qos" => match u8::try_from(vf.qos) {
                Ok(x) => u.qos = Some(x),
                Err(_) => v.add("vf.qos", format!("QoS {} is out of range 0-7", vf.qos)),
            },
            "spoof_check" => u.spoof_check = Some(vf.spoof_check),
            "trust" => u.trust = Some(vf.trust),
            "link_state" => match link_state_from_proto(vf.link_state) {
                Some(link) => u.link_state = Some(link),
                None => v.add(
                    "vf.link_state",
                    "must be LINK_STATE_AUTO, LINK_STATE_ENABLE or LINK_STATE_DISABLE",
                ),
            },
            "min_tx_rate" => u.min_tx_rate = Some(vf.min_tx_rate),
            "max_tx_rate" => u.max_tx_rate = Some(vf.max_tx_rate),
            "mtu" => u.mtu = Some(vf.mtu),
            other => v.add(
                "update_mask",
                format!(
                    "{other:?} is not a writable VF field ({})",
                    FIELDS.join(", ")
                ),
            ),
        }
    }
    if v.is_empty() {
        Ok(u)
    } else {
        Err(ControlError::Invalid(v))
    }
}

fn mask_text(mask: &[String], vf: &proto::Vf) -> String {
    if mask.is_empty() {
        return format!("all fields of {}", vf.name);
    }
    mask.join(", ")
}

/// The stored form of a VF's admin config.
fn admin_record(vf: VfId, a: &crate::nic::VfAdmin) -> proto::Vf {
    proto::Vf {
        name: vf_name(vf.0),
        index: u32::from(vf.0),
        mac: a.mac.map(|m| m.to_string()).unwrap_or_default(),
        vlan: u32::from(a.vlan),
        qos: u32::from(a.qos),
        spoof_check: a.spoof_check,
        trust: a.trust,
        link_state: link_state_to_proto(a.link_state) as i32,
        min_tx_rate: a.min_tx_rate,
        max_tx_rate: a.max_tx_rate,
        mtu: a.mtu,
        ..Default::default()
    }
}

/// A VF link state as the API spells it.
fn link_state_to_proto(link: LinkState) -> proto::LinkState {
    match link {
        LinkState::Auto => proto::LinkState::Auto,
        LinkState::Enable => proto::LinkState::Enable,
        LinkState::Disable => proto::LinkState::Disable,
    }
}

/// The VF link state an API value names; `None` for unspecified or unknown values.
fn link_state_from_proto(value: i32) -> Option<LinkState> {
    match proto::LinkState::try_from(value) {
        Ok(proto::LinkState::Auto) => Some(LinkState::Auto),
        Ok(proto::LinkState::Enable) => Some(LinkState::Enable),
        Ok(proto::LinkState::Disable) => Some(LinkState::Disable),
        _ => None,
    }
}

/// The write that restores a stored admin config.
fn update_from_record(r: &proto::Vf) -> VfUpdate {
    let link = link_state_from_proto(r.link_state).unwrap_or(LinkState::Auto);
    VfUpdate {
        mac: Some(r.mac.parse().ok()),
        vlan: u16::try_from(r.vlan).ok(),
        qos: u8::try_from(r.qos).ok(),
        spoof_check: Some(r.spoof_check),
        trust: Some(r.trust),
        link_state: Some(link),
        min_tx_rate: Some(r.min_tx_rate),
        max_tx_rate: Some(r.max_tx_rate),
        mtu: Some(r.mtu),
        rx_ring: None,
        tx_ring: None,
    }
}

/// `always`, `on-failure`, `never` for a stored restart policy.
fn policy_name(value: i32) -> &'static str {
    supervisor::policy_word(
        proto::RestartPolicy::try_from(value).unwrap_or(proto::RestartPolicy::Always),
    )
}

/// The engine's egress action for a stored chain's egress.
fn chain_egress(egress: Option<&proto::Egress>) -> ChainEgress {
    let tag = egress.filter(|e| e.vlan != 0).map(|e| VlanTag {
        vid: e.vlan as u16,
        pcp: 0,
    });
    match (egress.is_some_and(|e| e.two_way), tag) {
        (true, Some(back)) => ChainEgress::TwoWay(back),
        // Validation refuses two-way without a VLAN; keep to one way if one is stored.
        _ => ChainEgress::OneWay(tag),
    }
}

/// How often the supervisor looks at its NFs.
pub const TICK: Duration = Duration::from_millis(100);

/// How long a re-applied chain waits for its NFs to take their new configs in
/// place before it restarts those that did not answer.
pub const IN_PLACE_WAIT: Duration = Duration::from_secs(5);
