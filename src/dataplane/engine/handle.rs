//! The engine's thread: starting it, stopping it, and what it publishes for other
//! threads to read.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

use super::request::{
    CountersSnapshot, EngineRequest, PfStatus, Posted, Reply, Snapshot, VfStatus,
};
use super::{
    ChainEgress, Engine, EngineConfig, EngineError, EngineEvent, GenWire, Isolation, WireConfig,
};
use crate::dataplane::counters::Counters;
use crate::dataplane::r#gen::SinkStats;
use crate::dataplane::host_wire::HostWire;
use crate::nic::iommu::FaultCounts;
use crate::nic::{Link, Nic, Owner, VfAdmin, VfId, VfUpdate, WireMatch};

pub(super) enum Msg {
    Request(EngineRequest),
    Shutdown,
}

/// The control side of a running engine. Dropping it shuts the engine down.
#[derive(Debug)]
pub struct EngineHandle {
    tx: mpsc::UnboundedSender<Msg>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    shared: Arc<SharedView>,
    wire_links: Vec<WireLinkInfo>,
}

/// A host wire link as opened: its spec and, for `afxdp:`, how the kernel moves
/// its frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireLinkInfo {
    /// The link as written (`afxdp:veth0@100`).
    pub link: String,
    /// `copy` or `zero-copy` for an `afxdp:` link; `None` for others.
    pub xdp_mode: Option<nfhost_sys::wire::XdpMode>,
}

/// State the engine publishes for readers on other threads (not hot-path).
#[derive(Debug, Default)]
pub struct SharedView {
    pub(super) sink: Mutex<SinkStats>,
    events: Mutex<Vec<EngineEvent>>,
    pub(super) reports: Mutex<HashMap<u16, String>>,
}

impl SharedView {
    /// What the wire sink counted so far.
    pub fn sink(&self) -> SinkStats {
        self.sink.lock().map(|s| *s).unwrap_or_default()
    }

    /// Takes the events recorded since the last call.
    pub fn take_events(&self) -> Vec<EngineEvent> {
        self.events
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }

    /// The latest report of the NF on `vf`.
    pub fn report(&self, vf: VfId) -> Option<String> {
        self.reports.lock().ok()?.get(&vf.0).cloned()
    }

    pub(super) fn push_event(&self, event: EngineEvent) {
        if let Ok(mut events) = self.events.lock() {
            // Bounded: a fault storm must not grow memory without limit.
            if events.len() >= 4096 {
                events.remove(0);
            }
            events.push(event);
        }
    }
}

impl EngineHandle {
    /// Builds the NIC and starts the engine thread.
    pub fn start(config: EngineConfig) -> Result<Self, EngineError> {
        let mut nic = Nic::new(&config.pf)?;
        nic.set_num_vfs(config.num_vfs)?;
        let (wire, host_links) = match &config.wire {
            WireConfig::None => (None, None),
            WireConfig::Gen(config) => (Some(GenWire::new(config)?), None),
            WireConfig::Host(host) => (
                None,
                Some((host.clone(), crate::dataplane::host_wire::open_links(host)?)),
            ),
        };
        let wire_links = host_links
            .iter()
            .flat_map(|(config, links)| config.links.iter().zip(links))
            .map(|(spec, link)| WireLinkInfo {
                link: spec.to_string(),
                xdp_mode: link.xdp_mode().map(|(mode, _)| mode),
            })
            .collect();
        // The wire's ring lives on the engine thread; it reports whether it started.
        let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
        let counters = Arc::new(Counters::new(config.pf.total_vfs));
        let shared = Arc::new(SharedView::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let engine_counters = counters.clone();
        let engine_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("nic-engine-pf{}", config.pf.id.0))
            .spawn(move || {
                tokio_uring::start(async move {
                    let host = match host_links {
                        None => None,
                        Some((config, links)) => match HostWire::new(&config, links) {
                            Ok(host) => Some(host),
                            Err(e) => {
                                let _ = started_tx.send(Err(EngineError::Wire(e)));
                                return;
                            }
                        },
                    };
                    let host_wake = match host.as_ref().map(|h| h.wakeup()).transpose() {
                        Ok(wake) => wake,
                        Err(e) => {
                            let _ = started_tx.send(Err(EngineError::Wire(e)));
                            return;
                        }
                    };
                    let timer = match nfhost_sys::TimerFd::new()
                        .map_err(std::io::Error::other)
                        .and_then(nfhost_sys::fd::async_timer)
                    {
                        Ok(timer) => timer,
                        Err(e) => {
                            let _ = started_tx.send(Err(EngineError::Socket(e)));
                            return;
                        }
                    };
                    // Deadlines are microseconds apart: the default 50 µs of slack
                    // would stretch every sleep.
                    if let Err(e) = nfhost_sys::set_timer_slack(Duration::from_micros(1)) {
                        tracing::warn!(error = %e, "nic-engine: timer slack stays at its default");
                    }
                    let _ = started_tx.send(Ok(()));
                    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
                    let (bell_tx, bell_rx) = mpsc::unbounded_channel();
                    let engine = Engine {
                        nic,
                        ports: (0..config.pf.total_vfs).map(|_| None).collect(),
                        regions: Vec::new(),
                        counters: engine_counters,
                        shared: engine_shared,
                        wire,
                        host,
                        host_wake,
                        events: ev_tx,
                        wake: std::rc::Rc::new(Notify::new()),
                        started: Instant::now(),
                        umems: HashMap::new(),
                        settling: HashMap::new(),
                        direct_hops: config.direct_hops,
                        scratch: vec![0u8; 16 * 1024].into_boxed_slice(),
                        epoch: 0,
                        active: Vec::new(),
                        polled: Vec::new(),
                        touched: Vec::new(),
                        doorbells: bell_tx,
                        timer,
                        armed: None,
                        answers: HashMap::new(),
                        activation: Vec::new(),
                        listeners: HashMap::new(),
                        memif: HashMap::new(),
                    };
                    engine.run(rx, ev_rx, bell_rx).await;
                });
            })
            .map_err(EngineError::Spawn)?;
        started_rx.recv().map_err(|_| EngineError::Gone)??;
        Ok(EngineHandle {
            tx,
            thread: Some(thread),
            counters,
            shared,
            wire_links,
        })
    }

    /// The host wire's links as opened (empty for `gen` and `none`).
    pub fn wire_links(&self) -> &[WireLinkInfo] {
        &self.wire_links
    }

    /// Sends `request` to the engine thread; it is carried out between two polls and
    /// answered on the reply channel it carries.
    pub fn send(&self, request: EngineRequest) -> Result<(), EngineError> {
        self.tx
            .send(Msg::Request(request))
            .map_err(|_| EngineError::Gone)
    }

    /// Sends the request `make` builds around a reply channel and waits for the answer.
    fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> EngineRequest) -> Result<T, EngineError> {
        let (reply, answer) = Reply::channel();
        self.send(make(reply))?;
        answer.recv().map_err(|_| EngineError::Gone)
    }

    /// See [`EngineRequest::Pf`].
    pub fn pf(&self) -> Result<PfStatus, EngineError> {
        self.ask(|reply| EngineRequest::Pf { reply })
    }

    /// See [`EngineRequest::SetVfCount`].
    pub fn set_vf_count(&self, num_vfs: u16) -> Result<(), EngineError> {
        self.ask(|reply| EngineRequest::SetVfCount { num_vfs, reply })?
    }

    /// See [`EngineRequest::SetLink`].
    pub fn set_link(&self, link: Link) -> Result<(), EngineError> {
        self.ask(|reply| EngineRequest::SetLink { link, reply })
    }

    /// See [`EngineRequest::Vf`].
    pub fn vf(&self, vf: VfId) -> Result<VfStatus, EngineError> {
        self.ask(|reply| EngineRequest::Vf { vf, reply })?
    }

    /// See [`EngineRequest::Vfs`].
    pub fn vfs(&self) -> Result<Vec<VfStatus>, EngineError> {
        self.ask(|reply| EngineRequest::Vfs { reply })
    }

    /// See [`EngineRequest::UpdateVf`].
    pub fn update_vf(
        &self,
        vf: VfId,
        update: VfUpdate,
        dry_run: bool,
    ) -> Result<VfAdmin, EngineError> {
        self.ask(|reply| EngineRequest::UpdateVf {
            vf,
            update,
            dry_run,
            reply,
        })?
    }

    /// See [`EngineRequest::ResetVf`].
    pub fn reset_vf(&self, vf: VfId) -> Result<(), EngineError> {
        self.ask(|reply| EngineRequest::ResetVf { vf, reply })
    }

    /// See [`EngineRequest::Attach`].
    pub fn attach(
        &self,
        vf: VfId,
        owner: Owner,
        token: String,
        config: String,
        sock: OwnedFd,
    ) -> Result<(), EngineError> {
        self.ask(|reply| EngineRequest::Attach {
            vf,
            owner,
            token,
            config,
            sock,
            reply,
        })?
    }

    /// See [`EngineRequest::Listen`].
    pub fn listen(
        &self,
        vf: VfId,
        owner: Owner,
        secret: String,
        config: String,
        listener: OwnedFd,
        memif_listener: OwnedFd,
    ) -> Result<(), EngineError> {
        self.ask(|reply| EngineRequest::Listen {
            vf,
            owner,
            secret,
            config,
            listener,
            memif_listener,
            reply,
        })?
    }

    /// See [`EngineRequest::Detach`].
    pub fn detach(&self, vf: VfId) -> Result<(), EngineError> {
        self.ask(|reply| EngineRequest::Detach { vf, reply })
    }

    /// See [`EngineRequest::Release`].
    pub fn release(&self, vf: VfId) -> Result<(), EngineError> {
        self.ask(|reply| EngineRequest::Release { vf, reply })?
    }

    /// See [`EngineRequest::InstallChain`].
    pub fn install_chain(
        &self,
        hops: &[VfId],
        isolation: Isolation,
        classifier: WireMatch,
        egress: ChainEgress,
    ) -> Result<(), EngineError> {
        self.ask(|reply| EngineRequest::InstallChain {
            hops: hops.to_vec(),
            isolation,
            classifier,
            egress,
            reply,
        })?
    }

    /// See [`EngineRequest::RemoveChain`].
    pub fn remove_chain(&self, hops: &[VfId]) -> Result<(), EngineError> {
        self.ask(|reply| EngineRequest::RemoveChain {
            hops: hops.to_vec(),
            reply,
        })
    }

    /// See [`EngineRequest::PostConfig`].
    pub fn post_config(&self, vf: VfId, config: String) -> Result<Option<Posted>, EngineError> {
        self.ask(|reply| EngineRequest::PostConfig { vf, config, reply })
    }

    /// See [`EngineRequest::Pulses`].
    pub fn pulses(&self) -> Result<Vec<super::request::Pulse>, EngineError> {
        self.ask(|reply| EngineRequest::Pulses { reply })
    }

    /// See [`EngineRequest::IsActive`].
    pub fn is_active(&self, vf: VfId) -> Result<bool, EngineError> {
        self.ask(|reply| EngineRequest::IsActive { vf, reply })
    }

    /// Waits up to `timeout` until an NF is attached to `vf` with DMA enabled: true
    /// if it is, false if it did not get there in time or detached first. See
    /// [`EngineRequest::WhenActive`].
    pub fn wait_active(&self, vf: VfId, timeout: Duration) -> Result<bool, EngineError> {
        let (reply, answer) = Reply::channel();
        self.send(EngineRequest::WhenActive { vf, reply })?;
        Ok(answer.recv_timeout(timeout).is_ok())
    }

    /// See [`EngineRequest::FaultCounts`].
    pub fn fault_counts(&self) -> Result<Vec<FaultCounts>, EngineError> {
        self.ask(|reply| EngineRequest::FaultCounts { reply })
    }

    /// See [`EngineRequest::Counters`].
    pub fn read_counters(&self) -> Result<CountersSnapshot, EngineError> {
        self.ask(|reply| EngineRequest::Counters { reply })
    }

    /// See [`EngineRequest::Snapshot`].
    pub fn snapshot(&self) -> Result<Snapshot, EngineError> {
        self.ask(|reply| EngineRequest::Snapshot { reply })
    }

    /// The hot-path counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Sink stats, events and NF reports.
    pub fn view(&self) -> &Arc<SharedView> {
        &self.shared
    }

    /// Stops the engine and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.tx.send(Msg::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
