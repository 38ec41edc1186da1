//! The NIC engine: one thread per PF, running a tokio-uring runtime, that does what
//! the NIC's hardware does.
//!
//! Wire receive → switch decision → take a frame from the target VF's fill ring →
//! translate it through the IOMMU (writable, in bounds) → write the frame (the DMA) →
//! post the rx descriptor → raise the rx vector through interrupt remapping.
//! VF transmit → translate (readable) → switch decision → the wire, or another VF: a
//! DMA copy between domains (`strict`) or a descriptor hand-over with a frame swap
//! inside one domain (`shared`) → completion.
//!
//! The hot loop is synchronous and allocation-free; it only awaits when there is no
//! work (sleeping on doorbells, attach sockets, the control channel, or the next
//! generator or interrupt deadline). Per-VF counters are plain atomics
//! ([`super::counters`]).

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{Ordering, fence};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nf_sdk::attach::pb::HelloReply;
use nf_sdk::attach::{Code, Command, ProtoError, server};
use nf_sdk::{BarLayout, Desc, EventFd, IrqVector, SharedMemory, VfConfig};
use thiserror::Error;
use tokio::sync::{Notify, mpsc, oneshot};

use super::counters::{Counters, Drop as DropReason};
use super::r#gen::{GenConfig, GenError, Generator, Pacer, Sink, SinkStats};
use super::host_wire::{HostWire, HostWireConfig, OpenError};
use super::port::{FRAME_SIZE, Port, PortState, RegionSlot};
use super::shared_umem::SharedUmem;
use crate::nic::iommu::{DomainId, Mapping};
use crate::nic::{
    Access, Decision, DmaFault, InterruptSink, Iova, Link, Micros, Nic, NicError, Owner, Perms,
    PfConfig, Raise, Region, RegionId, TargetId, Vector, VfId, VlanTag,
};

/// Descriptors handled per ring per poll.
pub const BATCH: u32 = 64;
/// tx descriptor flag: send back where the traffic came from ([`nf_sdk::Verdict::Reflect`]).
pub const TX_REFLECT: u16 = 1;
/// completion descriptor flag: the NIC refused the descriptor (bad IOVA or length).
pub const COMPLETION_ERROR: u16 = 1;
/// Polls without work before the engine goes to sleep.
const IDLE_SPINS: u32 = 64;
/// The header bytes the NIC reads of a transmitted frame sampled for latency.
const HEADER_READ: usize = 128;
/// The header bytes the switch needs: Ethernet plus one 802.1Q tag.
const SWITCH_HEADER: usize = 18;

/// The PF's uplink.
#[derive(Debug, Clone)]
pub enum WireConfig {
    /// No wire: VF-to-VF traffic only.
    None,
    /// The built-in traffic generator and sink.
    Gen(GenConfig),
    /// Host interfaces: TAP devices and `AF_PACKET` links.
    Host(HostWireConfig),
}

/// How a chain's NFs share memory (DESIGN §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Each NF its own DMA domain; a hop is a DMA copy by the NIC.
    #[default]
    Strict,
    /// One domain and one UMEM for the chain; a hop hands the descriptor over.
    Shared,
}

/// How frames leave a chain for the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainEgress {
    /// One way: re-tagged with this VLAN, or keeping the classifier's if `None`.
    OneWay(Option<VlanTag>),
    /// Two way ("NF on a stick"): the classifier's VLAN and this one are the two
    /// sides; wire frames of either enter the chain, and each leaves on the side
    /// opposite to the one its source MAC came in on. The classifier must be a VLAN id
    /// alone (the return direction matches on VLAN only), other than this one.
    TwoWay(VlanTag),
}

/// How to build an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The PF.
    pub pf: PfConfig,
    /// VFs to enable at start.
    pub num_vfs: u16,
    /// The uplink.
    pub wire: WireConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            pf: PfConfig::default(),
            num_vfs: crate::nic::pf::TOTAL_VFS_DEFAULT,
            wire: WireConfig::Gen(GenConfig::default()),
        }
    }
}

/// Engine start-up or control failure.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The device model refused the configuration.
    #[error("NIC configuration refused")]
    Nic(#[from] NicError),
    /// The generator configuration is invalid.
    #[error("gen wire configuration refused")]
    Gen(#[from] GenError),
    /// The engine thread could not be started.
    #[error("starting the engine thread failed")]
    Spawn(#[source] std::io::Error),
    /// The engine thread is gone (it panicked or was shut down).
    #[error("the NIC engine is not running")]
    Gone,
    /// Shared memory for a shared chain could not be created.
    #[error("creating shared chain memory failed")]
    Shm(#[from] nf_sdk::ShmError),
    /// A socket could not be set up.
    #[error("attach socket setup failed")]
    Socket(#[source] std::io::Error),
    /// A link of the wire could not be opened.
    #[error(transparent)]
    WireLink(#[from] OpenError),
    /// The wire's io_uring could not be set up.
    #[error("starting the wire failed")]
    Wire(#[source] nf_sdk::wire::WireError),
    /// A two-way chain whose classifier is not a VLAN id alone, different from the
    /// return VLAN.
    #[error(
        "a two-way chain needs a classifier of one VLAN id and nothing else, other than its return VLAN {}; got {classifier:?}",
        back.vid
    )]
    TwoWayClassifier {
        /// The classifier given.
        classifier: crate::nic::WireMatch,
        /// The return (egress) VLAN.
        back: VlanTag,
    },
}

type Call = Box<dyn FnOnce(&mut Engine) + Send>;

enum Msg {
    Call(Call),
    Shutdown,
}

/// What an attach socket's reader task reports to the loop.
enum PortEvent {
    Command {
        vf: VfId,
        epoch: u64,
        command: Command,
    },
    Bad {
        vf: VfId,
        epoch: u64,
        error: ProtoError,
    },
    Closed {
        vf: VfId,
        epoch: u64,
    },
}

/// Something that happened on the NIC that the control plane wants to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// A DMA fault, attributed to the VF whose descriptor caused it.
    DmaFault(DmaFault),
    /// An NF's socket closed (the process exited or closed it); its VF was scrubbed.
    Detached {
        /// The VF.
        vf: VfId,
        /// Its owner.
        owner: Owner,
        /// Mappings removed.
        mappings: usize,
    },
    /// An NF completed its handshake.
    Attached {
        /// The VF.
        vf: VfId,
        /// Its owner.
        owner: Owner,
    },
}

/// The control side of a running engine. Dropping it shuts the engine down.
#[derive(Debug)]
pub struct EngineHandle {
    tx: mpsc::UnboundedSender<Msg>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    shared: Arc<SharedView>,
}

/// State the engine publishes for readers on other threads (not hot-path).
#[derive(Debug, Default)]
pub struct SharedView {
    sink: Mutex<SinkStats>,
    events: Mutex<Vec<EngineEvent>>,
    reports: Mutex<HashMap<u16, String>>,
    config_results: Mutex<HashMap<u16, (u32, String)>>,
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

    /// How the NF on `vf` took the configuration of `generation` posted with
    /// [`Engine::post_config`]: `Some(Ok)` applied in place, `Some(Err(why))` not,
    /// `None` no answer yet.
    pub fn config_result(&self, vf: VfId, generation: u32) -> Option<Result<(), String>> {
        let results = self.config_results.lock().ok()?;
        match results.get(&vf.0) {
            Some((g, error)) if *g == generation => Some(if error.is_empty() {
                Ok(())
            } else {
                Err(error.clone())
            }),
            _ => None,
        }
    }

    fn push_event(&self, event: EngineEvent) {
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
                Some((host.clone(), super::host_wire::open_links(host)?)),
            ),
        };
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
                    let _ = started_tx.send(Ok(()));
                    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
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
                        wake: Rc::new(Notify::new()),
                        started: Instant::now(),
                        umems: HashMap::new(),
                        scratch: vec![0u8; 16 * 1024].into_boxed_slice(),
                        epoch: 0,
                        active: Vec::new(),
                    };
                    engine.run(rx, ev_rx).await;
                });
            })
            .map_err(EngineError::Spawn)?;
        started_rx.recv().map_err(|_| EngineError::Gone)??;
        Ok(EngineHandle {
            tx,
            thread: Some(thread),
            counters,
            shared,
        })
    }

    /// Runs `f` on the engine thread, between two polls, and returns its result.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine) -> R + Send + 'static,
    ) -> Result<R, EngineError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let call: Call = Box::new(move |engine| {
            let _ = reply_tx.send(f(engine));
        });
        self.tx
            .send(Msg::Call(call))
            .map_err(|_| EngineError::Gone)?;
        reply_rx.blocking_recv().map_err(|_| EngineError::Gone)
    }

    /// Like [`EngineHandle::call`], for async callers.
    pub async fn call_async<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine) -> R + Send + 'static,
    ) -> Result<R, EngineError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let call: Call = Box::new(move |engine| {
            let _ = reply_tx.send(f(engine));
        });
        self.tx
            .send(Msg::Call(call))
            .map_err(|_| EngineError::Gone)?;
        reply_rx.await.map_err(|_| EngineError::Gone)
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

/// The gen wire: generator, pacer, sink.
struct GenWire {
    generator: Generator,
    pacer: Pacer,
    sink: Sink,
}

impl GenWire {
    fn new(config: &GenConfig) -> Result<Self, GenError> {
        Ok(GenWire {
            generator: Generator::new(config)?,
            pacer: Pacer::new(config.rate_pps),
            sink: Sink::default(),
        })
    }
}

/// The engine's state, owned by its thread. Control-plane code reaches it through
/// [`EngineHandle::call`].
pub struct Engine {
    nic: Nic,
    ports: Vec<Option<Port>>,
    regions: Vec<Option<RegionSlot>>,
    counters: Arc<Counters>,
    shared: Arc<SharedView>,
    wire: Option<GenWire>,
    /// The `tap:`/`afpacket:` wire, and its ring's wakeup registered with the reactor.
    host: Option<HostWire>,
    host_wake: Option<tokio::io::unix::AsyncFd<OwnedFd>>,
    events: mpsc::UnboundedSender<PortEvent>,
    wake: Rc<Notify>,
    started: Instant,
    umems: HashMap<DomainId, SharedUmem>,
    scratch: Box<[u8]>,
    epoch: u64,
    /// VFs with an attached, enabled NF: the ones the loop polls.
    active: Vec<VfId>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("num_vfs", &self.nic.pf().num_vfs())
            .field("active", &self.active)
            .finish()
    }
}

/// Delivers interrupts by writing the NF's eventfd.
struct FdSink<'a> {
    ports: &'a [Option<Port>],
}

impl InterruptSink for FdSink<'_> {
    fn deliver(&mut self, vf: VfId, vector: Vector, _target: TargetId) {
        let fd = self
            .ports
            .get(vf.index())
            .and_then(Option::as_ref)
            .and_then(|p| p.irq.get(usize::from(vector.0)))
            .and_then(Option::as_ref);
        if let Some(fd) = fd {
            // A full eventfd counter means the NF has a wake-up pending anyway.
            let _ = fd.notify();
        }
    }
}

fn target_id(vf: VfId, vector: Vector) -> TargetId {
    TargetId(u32::from(vf.0) << 8 | u32::from(vector.0))
}

impl Engine {
    /// The device model.
    pub fn nic(&self) -> &Nic {
        &self.nic
    }

    /// The device model, to configure (VF knobs, steering, VF count).
    pub fn nic_mut(&mut self) -> &mut Nic {
        &mut self.nic
    }

    fn now(&self) -> Micros {
        Micros(self.started.elapsed().as_micros() as u64)
    }

    async fn run(
        mut self,
        mut control: mpsc::UnboundedReceiver<Msg>,
        mut port_events: mpsc::UnboundedReceiver<PortEvent>,
    ) {
        let mut idle = 0u32;
        let mut polls = 0u64;
        loop {
            loop {
                match control.try_recv() {
                    Ok(Msg::Call(f)) => f(&mut self),
                    Ok(Msg::Shutdown) | Err(mpsc::error::TryRecvError::Disconnected) => {
                        self.shut_down();
                        return;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                }
            }
            while let Ok(event) = port_events.try_recv() {
                self.on_port_event(event);
            }
            let now = self.now();
            let work = self.poll_once(now);
            polls += 1;
            if polls % 1024 == 0 {
                self.publish();
                // Let the socket and doorbell tasks run.
                tokio::task::yield_now().await;
            }
            if work > 0 {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < IDLE_SPINS {
                continue;
            }
            // Going to sleep: ask every NF for a doorbell, then look once more so a
            // transmit posted in between is not missed.
            self.set_tx_wakeup(true);
            fence(Ordering::SeqCst);
            if self.tx_pending() || self.host_pending() {
                self.set_tx_wakeup(false);
                continue;
            }
            self.publish();
            let deadline = self.next_deadline(now);
            let wake = self.wake.clone();
            let sleep = async {
                match deadline {
                    Some(d) => {
                        tokio::time::sleep(Duration::from_micros(d.0.saturating_sub(now.0))).await
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wake.notified() => {}
                msg = control.recv() => match msg {
                    Some(Msg::Call(f)) => f(&mut self),
                    Some(Msg::Shutdown) | None => {
                        self.shut_down();
                        return;
                    }
                },
                event = port_events.recv() => if let Some(event) = event {
                    self.on_port_event(event);
                },
                _ = wire_readable(self.host_wake.as_ref()) => {}
                _ = sleep => {}
            }
            self.set_tx_wakeup(false);
            idle = 0;
        }
    }

    fn next_deadline(&self, now: Micros) -> Option<Micros> {
        let generated = self.wire.as_ref().and_then(|w| w.pacer.next_due(now));
        let irq = self.nic.irq().next_deadline();
        let link_status = self.host.as_ref().map(HostWire::next_status);
        // While any NF is attached, wake at least every 100 ms to publish counters.
        let tick = Some(Micros(now.0 + 100_000));
        [generated, irq, link_status, tick]
            .into_iter()
            .flatten()
            .min()
    }

    fn set_tx_wakeup(&self, on: bool) {
        for vf in &self.active {
            if let Some(rings) = self.port(*vf).and_then(|p| p.rings.as_ref()) {
                if on {
                    rings.tx.set_need_wakeup();
                } else {
                    rings.tx.clear_need_wakeup();
                }
            }
        }
    }

    fn tx_pending(&mut self) -> bool {
        let active = self.active.clone();
        active.into_iter().any(|vf| {
            self.port_mut(vf)
                .and_then(|p| p.rings.as_mut())
                .is_some_and(|r| r.tx.available().is_ok_and(|n| n > 0))
        })
    }

    fn publish(&mut self) {
        if let Some(wire) = &self.wire {
            if let Ok(mut s) = self.shared.sink.lock() {
                *s = wire.sink.stats();
            }
        }
        for fault in self.nic.take_faults() {
            self.shared.push_event(EngineEvent::DmaFault(fault));
        }
    }

    fn port(&self, vf: VfId) -> Option<&Port> {
        self.ports.get(vf.index()).and_then(Option::as_ref)
    }

    fn port_mut(&mut self, vf: VfId) -> Option<&mut Port> {
        self.ports.get_mut(vf.index()).and_then(Option::as_mut)
    }

    fn shut_down(&mut self) {
        let vfs: Vec<VfId> = self.ports.iter().flatten().map(|p| p.vf).collect();
        for vf in vfs {
            self.detach(vf);
        }
    }

    /// Before sleeping: submits what is queued on the host wire and tells whether
    /// completions arrived meanwhile (the wakeup eventfd is reset first, so one
    /// that arrives after this check wakes the loop).
    fn host_pending(&mut self) -> bool {
        let Some(host) = self.host.as_mut() else {
            return false;
        };
        let ring = host.ring_mut();
        ring.clear_wakeup();
        if let Err(e) = ring.flush() {
            eprintln!("nic-engine: wire: {e}");
        }
        ring.has_completions()
    }

    /// One pass over the wire and every active VF. Returns the frames handled.
    fn poll_once(&mut self, now: Micros) -> u32 {
        let mut work = self.wire_rx(now) + self.host_rx(now);
        for i in 0..self.active.len() {
            let vf = self.active[i];
            work += self.vf_tx(vf, now);
        }
        if let Some(host) = self.host.as_mut() {
            if let Err(e) = host.ring_mut().flush() {
                eprintln!("nic-engine: wire: {e}");
            }
        }
        self.raise_interrupts(now);
        self.nic.poll_irqs(now, &mut FdSink { ports: &self.ports });
        work
    }

    fn wire_rx(&mut self, now: Micros) -> u32 {
        let Some(wire) = self.wire.as_mut() else {
            return 0;
        };
        let n = wire.pacer.allowance(now, BATCH);
        let mut dma = Dma {
            nic: &mut self.nic,
            ports: &mut self.ports,
            regions: &self.regions,
            counters: &self.counters,
            umems: &mut self.umems,
        };
        let scratch = &mut self.scratch;
        for _ in 0..n {
            let Some(len) = wire.generator.write_next(scratch, now) else {
                break;
            };
            let frame = &scratch[..len];
            dma.counters.wire.rx_packets.add(1);
            dma.counters.wire.rx_bytes.add(len as u64);
            let backlogged = dma.receive_from_wire(frame);
            // Flat out (rate 0), the generator follows the receiver like a port
            // honouring flow control: a full receiver ends this burst.
            if backlogged && wire.pacer.rate_pps() == 0 {
                break;
            }
        }
        n
    }

    /// Frames from the host wire's links, switched and delivered like generated
    /// ones; and, when it is time, the links' state as the PF's link.
    fn host_rx(&mut self, now: Micros) -> u32 {
        let Some(host) = self.host.as_mut() else {
            return 0;
        };
        if let Some(link) = host.poll_status(now, &self.counters) {
            self.nic.set_link(link);
        }
        let mut dma = Dma {
            nic: &mut self.nic,
            ports: &mut self.ports,
            regions: &self.regions,
            counters: &self.counters,
            umems: &mut self.umems,
        };
        let counters = &*self.counters;
        host.receive(BATCH as usize, counters, |frame| {
            dma.receive_from_wire(frame);
        }) as u32
    }

    /// How many frames `vf` can take right now (free fill buffers and rx slots), or
    /// `None` if it is not attached (frames to it are dropped and counted as usual).
    fn rx_budget(&mut self, vf: VfId) -> Option<u32> {
        let rings = self
            .ports
            .get_mut(vf.index())
            .and_then(Option::as_mut)
            .filter(|p| p.state == PortState::Attached)?
            .rings
            .as_mut()?;
        let fill = rings.fill.available().ok()?;
        let free = rings.rx.free().ok()?;
        Some(fill.min(free))
    }

    fn vf_tx(&mut self, vf: VfId, now: Micros) -> u32 {
        // A chain hop sends only what the next hop can take: the backlog stays in this
        // hop's tx ring, so an overloaded chain drops at its ingress, before any NF has
        // spent work on a frame, never in the middle.
        let budget = match self.nic.veb().tx_rule(vf) {
            Some(crate::nic::TxSteer::ToVf(next)) => self.rx_budget(next).unwrap_or(BATCH),
            _ => BATCH,
        }
        .min(BATCH);
        if budget == 0 {
            return 0;
        }
        let mut descs = [Desc::default(); BATCH as usize];
        let n = {
            let Some(port) = self.ports.get_mut(vf.index()).and_then(Option::as_mut) else {
                return 0;
            };
            if port.state != PortState::Attached {
                return 0;
            }
            let Some(rings) = port.rings.as_mut() else {
                return 0;
            };
            match rings.tx.peek(budget) {
                Ok(n) => {
                    for (i, d) in descs.iter_mut().enumerate().take(n as usize) {
                        *d = rings.tx.read(i as u32);
                    }
                    // Descriptors are copied out; the frames stay the NIC's until completion.
                    rings.tx.release(n);
                    n
                }
                Err(_) => {
                    port.state = PortState::Halted;
                    self.counters.vf(vf).ring_errors.add(1);
                    return 0;
                }
            }
        };
        if n == 0 {
            return 0;
        }
        let mut dma = Dma {
            nic: &mut self.nic,
            ports: &mut self.ports,
            regions: &self.regions,
            counters: &self.counters,
            umems: &mut self.umems,
        };
        let mut completions = [Desc::default(); BATCH as usize];
        for (i, desc) in descs[..n as usize].iter().enumerate() {
            completions[i] = dma.transmit(vf, *desc, now, self.wire.as_mut(), self.host.as_mut());
        }
        let Some(port) = self.ports.get_mut(vf.index()).and_then(Option::as_mut) else {
            return n;
        };
        let Some(rings) = port.rings.as_mut() else {
            return n;
        };
        let granted = rings.completion.reserve(n).unwrap_or(0);
        for (i, c) in completions[..granted as usize].iter().enumerate() {
            rings.completion.write(i as u32, c);
        }
        rings.completion.submit(granted);
        port.tx_since_irq += granted;
        if granted < n {
            self.counters.vf(vf).ring_errors.add(u64::from(n - granted));
        }
        n
    }

    /// Raises the rx vector of every VF that received frames and the tx-completion
    /// vector of every VF that got completions, since the last poll.
    fn raise_interrupts(&mut self, now: Micros) {
        // Pairs with the NF's fence between unmasking and re-checking its rings: either
        // the NF sees the new descriptors or the NIC sees the vector unmasked.
        fence(Ordering::SeqCst);
        for i in 0..self.active.len() {
            let vf = self.active[i];
            let Some(port) = self.ports.get_mut(vf.index()).and_then(Option::as_mut) else {
                continue;
            };
            let pending = [
                (
                    Vector::RX,
                    IrqVector::RX,
                    std::mem::take(&mut port.rx_since_irq),
                ),
                (
                    Vector::TX,
                    IrqVector::TX,
                    std::mem::take(&mut port.tx_since_irq),
                ),
            ];
            let masks = pending.map(|(_, bar_vector, _)| {
                port.bar.as_ref().is_none_or(|b| b.irq_masked(bar_vector))
            });
            for ((vector, _, count), masked) in pending.into_iter().zip(masks) {
                if count == 0 {
                    continue;
                }
                let _ = self.nic.set_irq_masked(vf, vector, masked);
                let outcome =
                    self.nic
                        .raise_irq(vf, vector, now, &mut FdSink { ports: &self.ports });
                let c = self.counters.vf(vf);
                match outcome {
                    Raise::Delivered => c.irq_delivered.add(1),
                    Raise::Coalesced => c.irq_coalesced.add(1),
                    Raise::Blocked(_) => c.irq_blocked.add(1),
                }
            }
        }
    }

    /// Registers an NF's socket for `vf` (assigning the VF to `owner` if free). The NF
    /// then attaches with `Hello { token }`.
    pub fn attach(
        &mut self,
        vf: VfId,
        owner: Owner,
        token: String,
        sock: OwnedFd,
    ) -> Result<(), EngineError> {
        if self.port(vf).is_some() {
            self.detach(vf);
        }
        self.nic.assign(vf, owner.clone())?;
        rustix::io::ioctl_fionbio(&sock, true).map_err(|e| EngineError::Socket(e.into()))?;
        let reader = sock.try_clone().map_err(EngineError::Socket)?;
        self.epoch += 1;
        let epoch = self.epoch;
        let events = self.events.clone();
        let wake = self.wake.clone();
        tokio_uring::spawn(read_socket(vf, epoch, reader, events, wake));
        let mut port = Port::new(vf, owner, token, sock);
        port.epoch = epoch;
        if let Some(slot) = self.ports.get_mut(vf.index()) {
            *slot = Some(port);
        }
        Ok(())
    }

    /// Detaches the NF on `vf` and scrubs the VF: DMA stopped, rings and frames
    /// dropped, mappings and vectors removed. The VF stays assigned to its owner (for
    /// a restart); [`Engine::release`] gives it back.
    pub fn detach(&mut self, vf: VfId) -> Option<(Owner, Vec<Mapping>)> {
        let port = self.ports.get_mut(vf.index())?.take()?;
        self.active.retain(|v| *v != vf);
        // Wake the doorbell reader so it sees the port is gone and exits.
        if let Some(doorbell) = &port.doorbell {
            let _ = doorbell.notify();
        }
        let mappings = self.nic.scrub(vf).unwrap_or_default();
        for m in &mappings {
            self.unref_region(m.region);
        }
        if let Some(domain) = self.nic.iommu().domain_of(vf) {
            if let Some(umem) = self.umems.get(&domain) {
                // The frames stay recorded as this VF's: its next NF gets them back.
                let _ = umem.count_of(vf);
            }
        }
        Some((port.owner, mappings))
    }

    /// Detaches and unassigns a VF (its NF was deleted).
    pub fn release(&mut self, vf: VfId) -> Result<(), EngineError> {
        self.detach(vf);
        let removed = self.nic.release(vf)?;
        for m in &removed.mappings {
            self.unref_region(m.region);
        }
        Ok(())
    }

    fn add_region(&mut self, memory: Arc<SharedMemory>) -> RegionId {
        let slot = RegionSlot {
            memory,
            mappings: 0,
        };
        if let Some(i) = self.regions.iter().position(Option::is_none) {
            self.regions[i] = Some(slot);
            return RegionId(i as u64);
        }
        self.regions.push(Some(slot));
        RegionId(self.regions.len() as u64 - 1)
    }

    fn unref_region(&mut self, id: RegionId) {
        if let Some(entry) = self.regions.get_mut(id.0 as usize) {
            if let Some(slot) = entry.as_mut() {
                slot.mappings = slot.mappings.saturating_sub(1);
                if slot.mappings == 0 {
                    *entry = None;
                }
            }
        }
    }

    /// Puts `hops` into one shared IOMMU domain backed by a UMEM the host owns,
    /// `frames_per_hop` frames each (DESIGN §4, `shared` isolation). Must be called
    /// before the hops' NFs attach.
    pub fn share_chain(
        &mut self,
        hops: &[VfId],
        frames_per_hop: u32,
    ) -> Result<DomainId, EngineError> {
        let domain = self.nic.share_domain(hops)?;
        let umem = SharedUmem::new(hops, frames_per_hop, FRAME_SIZE)?;
        let region = self.add_region(umem.memory().clone());
        let len = umem.memory().len() as u64;
        let mapped = self.nic.map_domain(
            domain,
            umem.iova(),
            len,
            Region { id: region, len },
            0,
            Perms::RW,
        );
        if let Err(e) = mapped {
            self.regions[region.0 as usize] = None;
            return Err(e.into());
        }
        if let Some(slot) = self.regions[region.0 as usize].as_mut() {
            slot.mappings = 1;
        }
        self.umems.insert(domain, umem);
        Ok(domain)
    }

    fn on_port_event(&mut self, event: PortEvent) {
        let (vf, epoch) = match &event {
            PortEvent::Command { vf, epoch, .. }
            | PortEvent::Bad { vf, epoch, .. }
            | PortEvent::Closed { vf, epoch } => (*vf, *epoch),
        };
        if self.port(vf).is_none_or(|p| p.epoch != epoch) {
            return; // From a socket that is no longer attached.
        }
        match event {
            PortEvent::Command { command, .. } => self.on_command(vf, command),
            PortEvent::Bad { error, .. } => {
                if let (Some(port), Some(id)) = (self.port(vf), error.message_id()) {
                    let _ = server::reply_error(
                        port.sock.as_fd(),
                        id,
                        Code::InvalidArgument,
                        &error.to_string(),
                    );
                }
            }
            PortEvent::Closed { .. } => {
                if let Some((owner, mappings)) = self.detach(vf) {
                    self.shared.push_event(EngineEvent::Detached {
                        vf,
                        owner,
                        mappings: mappings.len(),
                    });
                }
            }
        }
    }

    fn on_command(&mut self, vf: VfId, command: Command) {
        let id = command.id();
        let result = self.execute(vf, command);
        let Some(port) = self.port(vf) else { return };
        let sent = match result {
            Ok(Reply::Ok) => server::reply_ok(port.sock.as_fd(), id),
            Ok(Reply::Hello(reply, umem)) => {
                let (Some(bar), Some(doorbell)) = (port.bar.as_ref(), port.doorbell.as_ref())
                else {
                    return;
                };
                let umem_fd = umem.as_ref().map(|u| u.fd());
                server::reply_hello(
                    port.sock.as_fd(),
                    id,
                    &reply,
                    bar.fd(),
                    doorbell.as_fd(),
                    umem_fd,
                )
            }
            Ok(Reply::Config(generation, config)) => {
                server::reply_config(port.sock.as_fd(), id, generation, &config)
            }
            Err((code, message)) => server::reply_error(port.sock.as_fd(), id, code, &message),
        };
        if sent.is_err() {
            // The NF is not reading its socket; its reader task will see the close.
            tracing_warn(vf, "reply could not be sent");
        }
    }

    fn execute(&mut self, vf: VfId, command: Command) -> Result<Reply, (Code, String)> {
        let refuse = |code: Code, e: &dyn std::fmt::Display| (code, e.to_string());
        let owner = self
            .port(vf)
            .map(|p| p.owner.clone())
            .ok_or((Code::FailedPrecondition, format!("{vf} is not attached")))?;
        let attached = self
            .port(vf)
            .is_some_and(|p| p.state != PortState::AwaitHello);
        match command {
            Command::Hello {
                abi_version, token, ..
            } => {
                if attached {
                    return Err((
                        Code::FailedPrecondition,
                        "already attached: send Reset or reconnect".into(),
                    ));
                }
                if abi_version != nf_sdk::bar::ABI_VERSION {
                    return Err((
                        Code::FailedPrecondition,
                        format!("ABI version {abi_version} is not supported (this NIC speaks 1)"),
                    ));
                }
                if self.port(vf).is_some_and(|p| p.token != token) {
                    return Err((Code::PermissionDenied, format!("wrong token for {vf}")));
                }
                self.hello(vf)
            }
            _ if !attached => Err((Code::FailedPrecondition, "send Hello first".into())),
            Command::MapDma {
                iova,
                size,
                offset,
                read,
                write,
                memory,
                ..
            } => {
                let memory = Arc::new(memory);
                let len = memory.len() as u64;
                let region = self.add_region(memory);
                let perms = Perms { read, write };
                match self.nic.map_dma(
                    vf,
                    Iova(iova),
                    size,
                    Region { id: region, len },
                    offset,
                    perms,
                ) {
                    Ok(()) => {
                        if let Some(slot) = self.regions[region.0 as usize].as_mut() {
                            slot.mappings += 1;
                        }
                        Ok(Reply::Ok)
                    }
                    Err(e) => {
                        self.regions[region.0 as usize] = None;
                        let code = match e {
                            NicError::Map(crate::nic::iommu::MapError::QuotaExceeded {
                                ..
                            })
                            | NicError::Map(crate::nic::iommu::MapError::TooManyMappings) => {
                                Code::ResourceExhausted
                            }
                            _ => Code::InvalidArgument,
                        };
                        Err(refuse(code, &e))
                    }
                }
            }
            Command::UnmapDma { iova, size, .. } => {
                let removed = self
                    .nic
                    .unmap_dma(vf, Iova(iova), size)
                    .map_err(|e| refuse(Code::InvalidArgument, &e))?;
                for m in removed {
                    self.unref_region(m.region);
                }
                Ok(Reply::Ok)
            }
            Command::SetIrq {
                vector, eventfd, ..
            } => {
                let v = Vector(vector);
                self.nic
                    .bind_irq(vf, v, &owner, target_id(vf, v))
                    .map_err(|e| refuse(Code::InvalidArgument, &e))?;
                if let Some(slot) = self
                    .port_mut(vf)
                    .and_then(|p| p.irq.get_mut(usize::from(vector)))
                {
                    *slot = Some(eventfd);
                }
                Ok(Reply::Ok)
            }
            Command::Enable { .. } => {
                self.nic
                    .set_bus_master(vf, true)
                    .map_err(|e| refuse(Code::Internal, &e))?;
                if !self.active.contains(&vf) {
                    self.active.push(vf);
                }
                Ok(Reply::Ok)
            }
            Command::Reset { .. } => {
                self.active.retain(|v| *v != vf);
                self.nic.flr(vf).map_err(|e| refuse(Code::Internal, &e))?;
                if let Some(port) = self.port_mut(vf) {
                    port.rings = None;
                    if let Some(bar) = port.bar.as_ref() {
                        bar.reset_rings().map_err(|e| refuse(Code::Internal, &e))?;
                        port.rings = Some(
                            super::port::Rings::open(bar)
                                .map_err(|e| refuse(Code::Internal, &e))?,
                        );
                    }
                    port.state = PortState::Attached;
                    port.rx_since_irq = 0;
                }
                Ok(Reply::Ok)
            }
            Command::Report { json, .. } => {
                if json.len() > 64 * 1024 {
                    return Err((Code::InvalidArgument, "report over 64 KiB".into()));
                }
                if let Ok(mut reports) = self.shared.reports.lock() {
                    reports.insert(vf.0, json);
                }
                Ok(Reply::Ok)
            }
            Command::FetchConfig { .. } => self
                .port(vf)
                .and_then(|p| p.mailbox.clone())
                .map(|(generation, config)| Reply::Config(generation, config))
                .ok_or((
                    Code::FailedPrecondition,
                    "the mailbox is empty: nothing was posted".into(),
                )),
            Command::ConfigApplied {
                generation, error, ..
            } => {
                let Some(port) = self.port_mut(vf) else {
                    return Err((Code::FailedPrecondition, format!("{vf} is not attached")));
                };
                if port.mailbox.as_ref().is_none_or(|(g, _)| *g != generation) {
                    return Err((
                        Code::InvalidArgument,
                        format!("generation {generation} is not the one in the mailbox"),
                    ));
                }
                port.mailbox = None;
                if let Ok(mut results) = self.shared.config_results.lock() {
                    results.insert(vf.0, (generation, error));
                }
                Ok(Reply::Ok)
            }
        }
    }

    fn hello(&mut self, vf: VfId) -> Result<Reply, (Code, String)> {
        let internal = |e: &dyn std::fmt::Display| (Code::Internal, e.to_string());
        let v = self.nic.vf(vf).map_err(|e| internal(&e))?;
        let admin = v.admin().clone();
        let mac = v.mac();
        let up = v.link(self.nic.pf().link()) == Link::Up;
        let layout = BarLayout::new(admin.rx_ring, admin.tx_ring).map_err(|e| internal(&e))?;
        let config = VfConfig {
            vf_index: vf.0,
            mac: mac.0,
            mtu: admin.mtu,
            link_up: up,
        };
        let doorbell = Arc::new(EventFd::new().map_err(|e| internal(&e))?);
        let umem = self
            .nic
            .iommu()
            .domain_of(vf)
            .and_then(|d| self.umems.get(&d))
            .map(|u| (u.memory().clone(), u.iova(), u.frames_of(vf)));
        let port = self
            .port_mut(vf)
            .ok_or((Code::Internal, "port vanished".into()))?;
        port.bring_up(layout, &config).map_err(|e| internal(&e))?;
        port.doorbell = Some(doorbell.clone());
        // A shared chain's frames are handed to the NF as completions: free frames.
        if let (Some((_, _, frames)), Some(rings)) = (umem.as_ref(), port.rings.as_mut()) {
            for iova in frames {
                let d = Desc {
                    iova: iova.0,
                    len: 0,
                    flags: 0,
                    vlan: 0,
                };
                rings.completion.produce(&d).map_err(|e| internal(&e))?;
            }
        }
        let epoch = port.epoch;
        let wake = self.wake.clone();
        tokio_uring::spawn(read_doorbell(doorbell, wake, epoch));
        self.shared.push_event(EngineEvent::Attached {
            vf,
            owner: self
                .port(vf)
                .map(|p| p.owner.clone())
                .unwrap_or_else(|| Owner::new("?")),
        });
        let reply = HelloReply {
            vf_index: u32::from(vf.0),
            mac: mac.0.to_vec(),
            mtu: admin.mtu,
            rx_ring_size: admin.rx_ring,
            tx_ring_size: admin.tx_ring,
            frame_size: FRAME_SIZE,
            umem_iova: umem.as_ref().map_or(0, |u| u.1.0),
            umem_size: umem.as_ref().map_or(0, |u| u.0.len() as u64),
        };
        Ok(Reply::Hello(reply, umem.map(|u| u.0)))
    }

    /// Posts a new configuration in the mailbox of the NF on `vf` and rings its
    /// doorbell: the BAR's MAILBOX register gets a new generation, and the rx vector
    /// is raised through interrupt remapping (a masked NF is polling and sees the
    /// register itself). The NF fetches it, applies it in place or not, and says
    /// so ([`SharedView::config_result`]). `None` if no NF is attached and enabled.
    pub fn post_config(&mut self, vf: VfId, config: String) -> Option<u32> {
        if !self.is_active(vf) {
            return None;
        }
        let port = self.port_mut(vf)?;
        let bar = port.bar.as_ref()?;
        let generation = match bar.posted_mailbox().wrapping_add(1) {
            0 => 1,
            g => g,
        };
        bar.post_mailbox(generation);
        port.mailbox = Some((generation, config));
        port.rx_since_irq += 1;
        let now = self.now();
        self.raise_interrupts(now);
        Some(generation)
    }

    /// Whether an NF is attached to `vf` with DMA enabled (the loop polls it).
    pub fn is_active(&self, vf: VfId) -> bool {
        self.active.contains(&vf)
    }

    /// Programs the switch (and, for `shared`, one IOMMU domain) for a chain: wire
    /// frames matching `classifier` → hop 1 → … → last hop → wire, as `egress` says.
    /// For [`ChainEgress::TwoWay`] wire frames of the egress VLAN enter hop 1 too, and
    /// each frame leaves on the side opposite to its source's. Hops get spoof check
    /// off, since NFs in a chain legitimately rewrite addresses, and the classifier's
    /// VLAN as their port VLAN. Call before the hops' NFs attach. On an error the
    /// hops' steering is removed again: nothing is left half-installed.
    pub fn install_chain(
        &mut self,
        hops: &[VfId],
        isolation: Isolation,
        classifier: crate::nic::WireMatch,
        egress: ChainEgress,
    ) -> Result<(), EngineError> {
        let (Some(first), Some(last)) = (hops.first(), hops.last()) else {
            return Ok(());
        };
        let (last_rule, return_match) = match egress {
            ChainEgress::OneWay(retag) => (crate::nic::TxSteer::ToWire(retag), None),
            ChainEgress::TwoWay(back) => {
                let a = match classifier {
                    crate::nic::WireMatch {
                        vlan: Some(vid @ 1..=4094),
                        dst: None,
                    } if vid != back.vid => VlanTag { vid, pcp: 0 },
                    _ => return Err(EngineError::TwoWayClassifier { classifier, back }),
                };
                let return_match = crate::nic::WireMatch {
                    vlan: Some(back.vid),
                    dst: None,
                };
                (
                    crate::nic::TxSteer::ToWireTwoWay { a, b: back },
                    Some(return_match),
                )
            }
        };
        // What the hops had, to put back if any step is refused.
        let before: Vec<(VfId, u16, bool)> = hops
            .iter()
            .filter_map(|hop| {
                let a = self.nic.vf(*hop).ok()?.admin();
                Some((*hop, a.vlan, a.spoof_check))
            })
            .collect();
        let mut result = self.steer_chain(hops, *first, *last, classifier, return_match, last_rule);
        if result.is_ok() && isolation == Isolation::Shared {
            result = self
                .nic
                .vf(*first)
                .map(|v| v.admin().rx_ring.min(v.admin().tx_ring) / 2)
                .map_err(EngineError::from)
                .and_then(|frames| self.share_chain(hops, frames).map(|_| ()));
        }
        if result.is_err() {
            for (hop, vlan, spoof_check) in before {
                self.nic.unsteer(hop);
                let restore = crate::nic::VfUpdate {
                    vlan: Some(vlan),
                    spoof_check: Some(spoof_check),
                    ..Default::default()
                };
                let _ = self.nic.update_vf(hop, &restore);
            }
        }
        result
    }

    fn steer_chain(
        &mut self,
        hops: &[VfId],
        first: VfId,
        last: VfId,
        classifier: crate::nic::WireMatch,
        return_match: Option<crate::nic::WireMatch>,
        last_rule: crate::nic::TxSteer,
    ) -> Result<(), EngineError> {
        // A VLAN classifier becomes every hop's port VLAN: the NIC strips the tag on
        // the way into each NF and inserts it on the way out, so NFs see untagged
        // frames and VLAN anti-spoof holds. A hop must not forward tagged frames
        // otherwise (it is not trusted). In a two-way chain the return direction
        // travels under the same nominal VLAN inside the chain; the first hop's port
        // VLAN strips its tag just the same, and the last hop re-tags by source.
        let port_vlan = classifier.vlan.filter(|v| *v != 0);
        let hop_config = crate::nic::VfUpdate {
            spoof_check: Some(false),
            vlan: port_vlan,
            ..Default::default()
        };
        for hop in hops {
            self.nic.update_vf(*hop, &hop_config)?;
        }
        self.nic.steer_wire(classifier, first)?;
        if let Some(m) = return_match {
            self.nic.steer_wire(m, first)?;
        }
        for pair in hops.windows(2) {
            self.nic
                .steer_tx(pair[0], crate::nic::TxSteer::ToVf(pair[1]))?;
        }
        self.nic.steer_tx(last, last_rule)?;
        Ok(())
    }

    /// Counters of the wire sink.
    pub fn sink_stats(&self) -> Option<SinkStats> {
        self.wire.as_ref().map(|w| w.sink.stats())
    }
}

/// The engine's fields the per-packet path needs, borrowed separately so that a
/// frame's source memory and its destination VF can be used at once (no reference
/// counting per packet).
struct Dma<'a> {
    nic: &'a mut Nic,
    ports: &'a mut [Option<Port>],
    regions: &'a [Option<RegionSlot>],
    counters: &'a Counters,
    umems: &'a mut HashMap<DomainId, SharedUmem>,
}

/// One egress frame in 64 is parsed for its latency stamp; the rest are only counted.
const SINK_SAMPLE: u64 = 64;

impl Dma<'_> {
    /// Switches one frame from the wire and delivers it. True if a receiver had no
    /// room (the frame was dropped as `no_buffer` or `ring_full` there).
    fn receive_from_wire(&mut self, frame: &[u8]) -> bool {
        let mut backlogged = false;
        match self.nic.switch_from_wire(frame) {
            Decision::Drop(reason) => self.counters.wire.drop(reason.into(), 1),
            Decision::Forward(f) => {
                let tagged = f.vlan.is_some()
                    && crate::nic::FrameHeader::parse(frame).is_ok_and(|h| h.tag.is_some());
                let tci = f.vlan.map_or(0, VlanTag::tci);
                for vf in f.vfs.iter() {
                    let strip = tagged && self.nic.veb().rx_tag(vf, &f).is_none();
                    if let Err(reason) = self.deliver(vf, DeliverFrom::Bytes(frame, strip), tci) {
                        self.counters.vf(vf).drop(reason, 1);
                        backlogged |= matches!(reason, DropReason::NoBuffer | DropReason::RingFull);
                    }
                }
            }
        }
        backlogged
    }

    /// Puts one frame into `vf`'s next fill buffer and posts it on rx.
    fn deliver(&mut self, vf: VfId, from: DeliverFrom<'_>, tci: u16) -> Result<(), DropReason> {
        let len = from.len();
        let enabled = self.nic.vf(vf).is_ok_and(|v| v.bus_master());
        let Some(port) = self.ports.get_mut(vf.index()).and_then(Option::as_mut) else {
            return Err(DropReason::LinkDown);
        };
        if !enabled || port.state != PortState::Attached {
            return Err(DropReason::LinkDown);
        }
        let Some(rings) = port.rings.as_mut() else {
            return Err(DropReason::LinkDown);
        };
        if len > FRAME_SIZE as usize {
            return Err(DropReason::NoBuffer);
        }
        match rings.rx.free() {
            Ok(0) => return Err(DropReason::RingFull),
            Ok(_) => {}
            Err(_) => {
                port.state = PortState::Halted;
                self.counters.vf(vf).ring_errors.add(1);
                return Err(DropReason::RingFull);
            }
        }
        let fill = match rings.fill.consume_one() {
            Ok(Some(d)) => d,
            Ok(None) => return Err(DropReason::NoBuffer),
            Err(_) => {
                port.state = PortState::Halted;
                self.counters.vf(vf).ring_errors.add(1);
                return Err(DropReason::NoBuffer);
            }
        };
        let t = self
            .nic
            .translate(vf, Iova(fill.iova), len as u64, Access::Write)
            .map_err(|_| DropReason::DmaFault)?;
        let regions = self.regions;
        let Some(dst) = regions
            .get(t.region.0 as usize)
            .and_then(Option::as_ref)
            .map(|r| &*r.memory)
        else {
            return Err(DropReason::DmaFault);
        };
        let off = t.offset as usize;
        let written = match from {
            DeliverFrom::Bytes(frame, false) => dst.write_at(off, frame),
            DeliverFrom::Bytes(frame, true) => dst
                .write_at(off, &frame[..12])
                .and_then(|()| dst.write_at(off + 12, &frame[16..])),
            DeliverFrom::Region { src, offset, len } => src.copy_to(dst, offset, off, len),
        };
        if written.is_err() {
            return Err(DropReason::DmaFault);
        }
        let copied = matches!(from, DeliverFrom::Region { .. });
        let Some(port) = self.ports.get_mut(vf.index()).and_then(Option::as_mut) else {
            return Err(DropReason::LinkDown);
        };
        let Some(rings) = port.rings.as_mut() else {
            return Err(DropReason::LinkDown);
        };
        let desc = Desc {
            iova: fill.iova,
            len: len as u32,
            flags: 0,
            vlan: tci,
        };
        if rings.rx.produce(&desc).is_err() {
            return Err(DropReason::RingFull);
        }
        port.rx_since_irq += 1;
        let c = self.counters.vf(vf);
        c.rx_packets.add(1);
        c.rx_bytes.add(len as u64);
        if copied {
            c.copied_bytes.add(len as u64);
        }
        Ok(())
    }

    /// Carries out one transmit descriptor; returns the completion to post.
    fn transmit(
        &mut self,
        vf: VfId,
        desc: Desc,
        now: Micros,
        wire: Option<&mut GenWire>,
        host: Option<&mut HostWire>,
    ) -> Desc {
        let refused = Desc {
            flags: COMPLETION_ERROR,
            ..desc
        };
        let len = desc.len as usize;
        if !(14..=FRAME_SIZE as usize).contains(&len) {
            self.counters.vf(vf).ring_errors.add(1);
            return refused;
        }
        let Ok(t) = self
            .nic
            .translate(vf, Iova(desc.iova), len as u64, Access::Read)
        else {
            self.counters.vf(vf).drop(DropReason::DmaFault, 1);
            return refused;
        };
        let regions = self.regions;
        let Some(src) = regions
            .get(t.region.0 as usize)
            .and_then(Option::as_ref)
            .map(|r| &*r.memory)
        else {
            self.counters.vf(vf).drop(DropReason::DmaFault, 1);
            return refused;
        };
        // The switch needs the Ethernet and 802.1Q headers only.
        let mut header = [0u8; HEADER_READ];
        let hlen = len.min(SWITCH_HEADER);
        if src.read_at(t.offset as usize, &mut header[..hlen]).is_err() {
            self.counters.vf(vf).drop(DropReason::DmaFault, 1);
            return refused;
        }
        let decision = if desc.flags & TX_REFLECT != 0 {
            self.nic.reflect_from_vf(vf, &header[..hlen])
        } else {
            self.nic.switch_from_vf(vf, &header[..hlen])
        };
        let f = match decision {
            Decision::Drop(reason) => {
                self.counters.vf(vf).drop(reason.into(), 1);
                return desc;
            }
            Decision::Forward(f) => f,
        };
        let c = self.counters.vf(vf);
        c.tx_packets.add(1);
        c.tx_bytes.add(len as u64);
        if let (Some(tag), Some(host)) = (f.uplink, host) {
            let tagged =
                crate::nic::FrameHeader::parse(&header[..hlen]).is_ok_and(|h| h.tag.is_some());
            match host.send(src, t.offset as usize, len, tagged, tag) {
                Ok(sent) => {
                    self.counters.wire.sent_on_vlan(tag.map_or(0, |t| t.vid));
                    self.counters.wire.tx_packets.add(1);
                    self.counters.wire.tx_bytes.add(sent as u64);
                }
                Err(reason) => self.counters.wire.drop(reason, 1),
            }
        } else if let Some(tag) = f.uplink {
            self.counters.wire.sent_on_vlan(tag.map_or(0, |t| t.vid));
            let wire_tx = &self.counters.wire.tx_packets;
            wire_tx.add(1);
            self.counters.wire.tx_bytes.add(len as u64);
            if let Some(wire) = wire {
                let full = len.min(HEADER_READ);
                let sampled = wire_tx.get() % SINK_SAMPLE == 0
                    && src.read_at(t.offset as usize, &mut header[..full]).is_ok();
                if sampled {
                    wire.sink.receive(&header[..full], len, now);
                } else {
                    wire.sink.count(len);
                }
            }
        }
        let tci = f.vlan.map_or(0, VlanTag::tci);
        let mut completion = desc;
        let single = f.vfs.len() == 1 && f.uplink.is_none();
        for to in f.vfs.iter() {
            if single && self.nic.iommu().same_domain(vf, to) {
                match self.hand_over(vf, to, desc, tci) {
                    Ok(swapped) => completion = swapped,
                    Err(reason) => self.counters.vf(to).drop(reason, 1),
                }
                continue;
            }
            let from = DeliverFrom::Region {
                src,
                offset: t.offset as usize,
                len,
            };
            if let Err(reason) = self.deliver(to, from, tci) {
                self.counters.vf(to).drop(reason, 1);
            }
        }
        completion
    }

    /// Zero-copy hop inside one shared domain: the receiver gets the sender's frame,
    /// the sender gets one of the receiver's free frames in exchange.
    fn hand_over(
        &mut self,
        from: VfId,
        to: VfId,
        desc: Desc,
        tci: u16,
    ) -> Result<Desc, DropReason> {
        let enabled = self.nic.vf(to).is_ok_and(|v| v.bus_master());
        let port = self.ports.get_mut(to.index()).and_then(Option::as_mut);
        let Some(port) = port.filter(|p| enabled && p.state == PortState::Attached) else {
            return Err(DropReason::LinkDown);
        };
        let Some(rings) = port.rings.as_mut() else {
            return Err(DropReason::LinkDown);
        };
        if !rings.rx.free().is_ok_and(|n| n > 0) {
            return Err(DropReason::RingFull);
        }
        let fill = match rings.fill.consume_one() {
            Ok(Some(d)) => d,
            Ok(None) => return Err(DropReason::NoBuffer),
            Err(_) => {
                port.state = PortState::Halted;
                return Err(DropReason::NoBuffer);
            }
        };
        let rx = Desc {
            iova: desc.iova,
            len: desc.len,
            flags: 0,
            vlan: tci,
        };
        if rings.rx.produce(&rx).is_err() {
            return Err(DropReason::RingFull);
        }
        port.rx_since_irq += 1;
        if let Some(domain) = self.nic.iommu().domain_of(to) {
            if let Some(umem) = self.umems.get_mut(&domain) {
                umem.transfer(Iova(desc.iova), to);
                umem.transfer(Iova(fill.iova), from);
            }
        }
        let c = self.counters.vf(to);
        c.rx_packets.add(1);
        c.rx_bytes.add(u64::from(desc.len));
        c.handed_over.add(1);
        Ok(Desc {
            iova: fill.iova,
            len: 0,
            flags: 0,
            vlan: 0,
        })
    }
}

enum Reply {
    Ok,
    Hello(HelloReply, Option<Arc<SharedMemory>>),
    Config(u32, String),
}

/// Where a delivered frame comes from.
enum DeliverFrom<'a> {
    /// Bytes the NIC holds (the wire); strip the outer VLAN tag if `true`.
    Bytes(&'a [u8], bool),
    /// Another VF's memory (a strict hop: a DMA copy).
    Region {
        src: &'a SharedMemory,
        offset: usize,
        len: usize,
    },
}

impl DeliverFrom<'_> {
    fn len(&self) -> usize {
        match self {
            DeliverFrom::Bytes(f, strip) => f.len() - if *strip { 4 } else { 0 },
            DeliverFrom::Region { len, .. } => *len,
        }
    }
}

fn tracing_warn(vf: VfId, what: &str) {
    eprintln!("nic-engine: {vf}: {what}");
}

/// Waits until the host wire's ring signals a completion (never, without one).
async fn wire_readable(wake: Option<&tokio::io::unix::AsyncFd<OwnedFd>>) {
    match wake {
        Some(fd) => {
            if let Ok(mut guard) = fd.readable().await {
                // The loop resets the eventfd itself before it next sleeps.
                guard.clear_ready();
            }
        }
        None => std::future::pending().await,
    }
}

/// Reads an NF's attach socket and forwards each request to the engine loop.
async fn read_socket(
    vf: VfId,
    epoch: u64,
    sock: OwnedFd,
    events: mpsc::UnboundedSender<PortEvent>,
    wake: Rc<Notify>,
) {
    let Ok(afd) = nf_sdk::async_fd(sock) else {
        let _ = events.send(PortEvent::Closed { vf, epoch });
        return;
    };
    loop {
        let Ok(mut guard) = afd.readable().await else {
            break;
        };
        match server::read_command(afd.get_ref().as_fd()) {
            Ok(command) => {
                let _ = events.send(PortEvent::Command { vf, epoch, command });
            }
            Err(ProtoError::WouldBlock) => {
                guard.clear_ready();
                continue;
            }
            Err(ProtoError::Closed) => break,
            Err(error) => {
                let _ = events.send(PortEvent::Bad { vf, epoch, error });
            }
        }
        wake.notify_one();
    }
    let _ = events.send(PortEvent::Closed { vf, epoch });
    wake.notify_one();
}

/// Sleeps on a VF's doorbell (an io_uring read of its eventfd) and wakes the loop.
async fn read_doorbell(doorbell: Arc<EventFd>, wake: Rc<Notify>, _epoch: u64) {
    let Ok(fd) = doorbell.as_fd().try_clone_to_owned() else {
        return;
    };
    let file = tokio_uring::fs::File::from_std(std::fs::File::from(fd));
    let mut buf = vec![0u8; 8];
    loop {
        // Once the engine drops the port, this task holds the last reference.
        if Arc::strong_count(&doorbell) == 1 {
            break;
        }
        let (res, b) = file.read_at(buf, 0).await;
        buf = b;
        if res.is_err() {
            break;
        }
        wake.notify_one();
    }
}
