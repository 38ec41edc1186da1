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
//!
//! | module | job |
//! |---|---|
//! | `pf` | the PF and its VF count |
//! | `vfs` | VF admin config and reset |
//! | `nfs` | standalone NFs, and starting any NF's process |
//! | `chains` | chains: create, update, delete |
//! | `reconfigure` | an updated chain's NFs: new config in place, or restart |
//! | `reconcile` | making the running system match the stored state |
//! | [`supervisor`] | restart policy and the tick that applies it |
//! | [`liveness`] | finding hung NFs by their heartbeat |
//! | [`endpoints`] | the socket files of external NFs' endpoints |
//! | [`k8s`] | the VFs set aside for pods: devices, allocation, reclaim |
//! | `telemetry` | counters, NF reports, events |
//! | `convert` | API messages to and from the device model's types |
//! | (`nfhost_api::validate`, `nfhost_api::chain_update`) | request checks, and what a chain update changes: the API schema's |

mod chains;
mod convert;
pub mod endpoints;
pub mod k8s;
pub mod liveness;
mod nfs;
mod pf;
mod reconcile;
mod reconfigure;
pub mod supervisor;
mod telemetry;
pub use telemetry::sees_event;
mod vfs;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tokio::sync::broadcast;

use crate::auth::Principal;
use crate::dataplane::counters::Counters;
use crate::dataplane::engine::{EngineError, EngineHandle};
use crate::dataplane::nf_process::{Launcher, NfProcess};
use crate::nic::VfId;
use crate::store::{Change, State, Store, StoreError};
use nfhost_api::names::{nf_name_or_none, parse_vf, vf_name};
use nfhost_api::proto;
use nfhost_api::validate::Violations;

/// Why a request was refused. Each maps to one gRPC status code.
#[derive(Debug, Error)]
pub enum ControlError {
    /// Bad input; nothing changed.
    #[error("invalid request: {}", describe(.0))]
    Invalid(Violations),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this, or the object is not the caller's (a tenant is
    /// told this whether or not the object exists, AIP-211); nothing changed.
    #[error("{0}")]
    PermissionDenied(String),
    /// The resource exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the system is not in a state to accept it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// No free VF, or a tenant's quota is used up.
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

/// A tenant's refusal for an object it does not own or that does not exist: the
/// same words either way, so a tenant cannot probe other tenants' names (AIP-211).
fn not_yours(who: &Principal, what: &str) -> ControlError {
    ControlError::PermissionDenied(format!(
        "permission denied: {what} is not {who}'s (it does not exist, or belongs to someone else)"
    ))
}

/// The refusal of something only admins may do.
fn admins_only(who: &Principal, what: &str) -> ControlError {
    ControlError::PermissionDenied(format!(
        "permission denied: {what} is for admins; {who} may not"
    ))
}

/// The refusal of a request that would take a tenant over a quota.
fn over_quota(who: &Principal, quota: &str, max: u32, held: usize, asked: usize) -> ControlError {
    ControlError::Exhausted(format!(
        "quota {quota} of {who} exceeded: {held} held, {asked} more asked, at most {max}"
    ))
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
        nf: nf_name_or_none(nf),
        message,
        dma_fault: None,
        principal: String::new(),
        tenant: String::new(),
    }
}

/// `event` caused by `who`'s request, about an object of `tenant`.
fn audited(mut ev: proto::Event, who: &Principal, tenant: &str) -> proto::Event {
    ev.principal = who.name().to_owned();
    ev.tenant = tenant.to_owned();
    ev
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
    /// Its heartbeat as last seen.
    watch: liveness::Watch,
    /// The process was killed for being unresponsive (its exit says so).
    killed_unresponsive: bool,
}

struct Inner {
    store: Store,
    desired: State,
    engine: EngineHandle,
    launcher: Launcher,
    /// How long frames may wait with an NF's heartbeat still; zero = never judged.
    liveness_timeout: Duration,
    /// Where external NFs' endpoints live.
    endpoints: endpoints::Endpoints,
    runs: BTreeMap<String, NfRun>,
    installed_chains: BTreeMap<String, Vec<VfId>>,
    wire: String,
    /// MTU of a host wire's links; 0 for gen and none.
    wire_mtu: u32,
    /// VFs set aside for Kubernetes pods (`--k8s-vfs`).
    k8s_pool: Option<k8s::VfPool>,
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
        launcher: Launcher,
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
                launcher,
                liveness_timeout: liveness::DEFAULT_TIMEOUT,
                endpoints: endpoints::Endpoints::default(),
                runs: BTreeMap::new(),
                installed_chains: BTreeMap::new(),
                wire,
                wire_mtu,
                k8s_pool: None,
            }),
            counters,
            events,
            total_vfs,
        })
    }

    /// Sets where external NFs' endpoints live ([`endpoints`]).
    pub fn set_endpoints(&self, endpoints: endpoints::Endpoints) {
        self.lock().endpoints = endpoints;
    }

    /// Sets the liveness timeout ([`liveness`]); zero turns the check off.
    pub fn set_liveness_timeout(&self, timeout: Duration) {
        self.lock().liveness_timeout = timeout;
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
        // An event about an NF concerns the NF's tenant, as the NF was before the
        // change (a deleted NF) or as the change stores it (a created one).
        let events = events.into_iter().map(|mut e| {
            if e.tenant.is_empty() && !e.nf.is_empty() {
                let id = nfhost_api::names::Collection::Nfs.short(&e.nf);
                let stored = inner.desired.nfs.get(id).map(|nf| nf.tenant.clone());
                let put = changes.iter().find_map(|c| match c {
                    Change::PutNf(nf) if nf.name == id => Some(nf.tenant.clone()),
                    _ => None,
                });
                e.tenant = stored.or(put).unwrap_or_default();
            }
            e
        });
        let events: Vec<_> = events.collect();
        changes.extend(events.into_iter().map(Change::Event));
        inner.store.apply(&changes)?;
        inner.desired = inner.store.load()?;
        if n > 0 {
            for e in inner.store.events(n)? {
                // Every stored event is also a log line: what happened, to which NF and VF.
                let kind =
                    proto::EventKind::try_from(e.kind).map_or("unknown", |k| k.as_str_name());
                tracing::info!(seq = e.seq, kind, nf = %e.nf, vf = %e.vf, principal = %e.principal, tenant = %e.tenant, "{}", e.message);
                let _ = self.events.send(e);
            }
        }
        Ok(())
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

    fn owner_of(&self, vf: VfId) -> Option<String> {
        self.owned_vfs().remove(&vf)
    }

    /// The NF `id` if `who` may see it: a tenant gets [`not_yours`] for another
    /// tenant's NF and for one that does not exist, an admin NOT_FOUND.
    fn nf_of(&self, who: &Principal, id: &str) -> Result<&proto::Nf, ControlError> {
        match self.desired.nfs.get(id) {
            Some(nf) if who.owns(&nf.tenant) => Ok(nf),
            _ if !who.is_admin() => Err(not_yours(who, &nfhost_api::names::nf_name(id))),
            _ => Err(ControlError::NotFound(format!(
                "{} not found",
                nfhost_api::names::nf_name(id)
            ))),
        }
    }

    /// The tenant of the NF that owns `vf`; `None` for a free VF.
    fn vf_tenant(&self, vf: VfId) -> Option<String> {
        let owner = self.owner_of(vf)?;
        self.desired.nfs.get(&owner).map(|nf| nf.tenant.clone())
    }

    /// Whether `who` may see `vf`: an admin every VF, a tenant those its NFs hold.
    fn sees_vf(&self, who: &Principal, vf: VfId) -> bool {
        who.is_admin() || self.vf_tenant(vf).is_some_and(|t| who.owns(&t))
    }

    /// Refuses a request that would take tenant `who` over its quotas, with
    /// `vfs` more VFs and `chains` more chains.
    fn check_quota(&self, who: &Principal, vfs: usize, chains: usize) -> Result<(), ControlError> {
        let Some(tenant) = who.tenant_name() else {
            return Ok(());
        };
        let quota = who.quota();
        if let Some(max) = quota.max_vfs {
            let held = self
                .desired
                .nfs
                .values()
                .filter(|nf| nf.tenant == tenant)
                .count();
            if held + vfs > max as usize {
                return Err(over_quota(who, "max_vfs", max, held, vfs));
            }
        }
        if let Some(max) = quota.max_chains {
            let held = self
                .desired
                .chains
                .values()
                .filter(|c| c.tenant == tenant)
                .count();
            if chains > 0 && held + chains > max as usize {
                return Err(over_quota(who, "max_chains", max, held, chains));
            }
        }
        Ok(())
    }

    fn free_vfs(&self, num_vfs: u16, n: usize) -> Result<Vec<VfId>, ControlError> {
        let owned: BTreeSet<VfId> = self.owned_vfs().into_keys().collect();
        let free: Vec<VfId> = (0..num_vfs)
            .map(VfId)
            .filter(|v| !owned.contains(v) && !self.in_k8s_pool(*v))
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
}

/// How often the supervisor looks at its NFs.
pub const TICK: Duration = Duration::from_millis(100);

/// How long a re-applied chain waits for its NFs to take their new configs in
/// place before it restarts those that did not answer.
pub const IN_PLACE_WAIT: Duration = Duration::from_secs(5);
