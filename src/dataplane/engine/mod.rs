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
//!
//! | module | job |
//! |---|---|
//! | [`handle`] | the thread: [`EngineHandle`] (start, stop) and the [`SharedView`] it publishes |
//! | `event_loop` | the loop: the polled set, wire receive, sleeping on deadlines, raising interrupts |
//! | `attach` | the attach-protocol server: an NF's commands on its socket, and its mailbox |
//! | `regions` | NF memory and VF ownership: attach, detach, release, region slots |
//! | `chains` | chain installation: steering, shared domains |
//! | `dma` | the per-packet DMA: deliver, transmit, hand over |
//! | `direct` | direct hops in shared chains: links, their counters, settling frames |
//! | `endpoint` | external NFs' endpoints: accepting, refusing, the secret |
//! | `memif` | the memif face of an endpoint: a DPDK or VPP client's set-up |

mod attach;
mod chains;
mod direct;
mod dma;
mod endpoint;
mod event_loop;
pub mod handle;
mod memif;
mod regions;
pub mod request;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use thiserror::Error;
use tokio::sync::{Notify, mpsc};

use super::counters::Counters;
use super::r#gen::{GenConfig, GenError, Generator, Pacer, Sink, SinkStats};
use super::host_wire::{HostWire, HostWireConfig, OpenError};
use super::port::{Port, RegionSlot};
use super::shared_umem::SharedUmem;
use crate::nic::iommu::DomainId;
use crate::nic::{DmaFault, Micros, Nic, NicError, Owner, PfConfig, VfId, VlanTag};
use attach::PortEvent;

pub use handle::{EngineHandle, SharedView, WireLinkInfo};
pub use request::EngineRequest;

/// Descriptors handled per ring per poll.
pub const BATCH: u32 = 64;

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

/// How a chain's NFs share memory (ARCHITECTURE.md §4).
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
    /// Whether the NFs of a `shared` chain feed each other directly (ARCHITECTURE.md
    /// §4); when not, the engine hands every frame over (what `nfhost bench`
    /// compares them with).
    pub direct_hops: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            pf: PfConfig::default(),
            num_vfs: crate::nic::pf::TOTAL_VFS_DEFAULT,
            wire: WireConfig::Gen(GenConfig::default()),
            direct_hops: true,
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
    Shm(#[from] nfhost_sys::ShmError),
    /// A socket could not be set up.
    #[error("attach socket setup failed")]
    Socket(#[source] std::io::Error),
    /// A link of the wire could not be opened.
    #[error(transparent)]
    WireLink(#[from] OpenError),
    /// The wire's io_uring could not be set up.
    #[error("starting the wire failed")]
    Wire(#[source] nfhost_sys::wire::WireError),
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

/// The gen wire: generator, pacer, sink.
struct GenWire {
    generator: Generator,
    pacer: Pacer,
    sink: Sink,
    /// When frames were last taken from the generator.
    last_pass: Micros,
}

impl GenWire {
    fn new(config: &GenConfig) -> Result<Self, GenError> {
        Ok(GenWire {
            generator: Generator::new(config)?,
            pacer: Pacer::new(config.rate_pps),
            sink: Sink::default(),
            last_pass: Micros(0),
        })
    }
}

/// The engine's state, owned by its thread. Control-plane code reaches it through
/// [`EngineRequest`]s.
struct Engine {
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
    /// VFs with an attached, enabled NF.
    active: Vec<VfId>,
    /// The active VFs whose transmit rings the loop looks at every pass (the others
    /// have `NEED_WAKEUP` set and ring their doorbells).
    polled: Vec<VfId>,
    /// VFs that got frames or completions since interrupts were last raised.
    touched: Vec<VfId>,
    /// Tells the loop which VF rang its doorbell (and in which attachment).
    doorbells: mpsc::UnboundedSender<(VfId, u64)>,
    /// The loop's deadline timer (µs precision).
    timer: tokio::io::unix::AsyncFd<nfhost_sys::TimerFd>,
    /// When the timer is set to expire, if it is.
    armed: Option<Micros>,
    /// Who waits for the answer of the NF on a VF to the configuration generation
    /// posted in its mailbox.
    answers: HashMap<VfId, (u32, request::Reply<request::ConfigAnswer>)>,
    /// Who waits for an NF to enable DMA on a VF.
    activation: Vec<(VfId, request::Reply<()>)>,
    /// External NFs' endpoints, by VF.
    listeners: HashMap<VfId, endpoint::Seat>,
    /// memif clients' set-ups, by VF.
    memif: HashMap<VfId, memif::Setup>,
    /// Shared chains settling their frames after a hop fed directly stopped.
    settling: HashMap<DomainId, direct::Settle>,
    /// Whether NFs of shared chains may feed each other directly.
    direct_hops: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("num_vfs", &self.nic.pf().num_vfs())
            .field("active", &self.active)
            .field("polled", &self.polled)
            .finish()
    }
}

impl Engine {
    fn now(&self) -> Micros {
        Micros(self.started.elapsed().as_micros() as u64)
    }

    fn port(&self, vf: VfId) -> Option<&Port> {
        self.ports.get(vf.index()).and_then(Option::as_ref)
    }

    fn port_mut(&mut self, vf: VfId) -> Option<&mut Port> {
        self.ports.get_mut(vf.index()).and_then(Option::as_mut)
    }

    /// Whether an NF is attached to `vf` with DMA enabled (the loop polls it).
    fn is_active(&self, vf: VfId) -> bool {
        self.active.contains(&vf)
    }

    /// The NF on `vf` enabled DMA: tells whoever waits for that.
    fn activated(&mut self, vf: VfId) {
        let (now, later) = std::mem::take(&mut self.activation)
            .into_iter()
            .partition(|(v, _)| *v == vf);
        self.activation = later;
        for (_, waiter) in now {
            waiter.send(());
        }
    }

    /// The heartbeat and rx backlog of every active VF (a halted queue shows
    /// none: the NF has to reset it, and is not judged by it). While a shared chain
    /// settles (ARCHITECTURE.md §4), an NF waiting for its `GetPeer` answer shows no
    /// backlog (it waits for the engine, not hung), and one the settle still waits
    /// for shows at least one frame: if its heartbeat stands still, it is hung and
    /// liveness restarts it, which lets the settle finish.
    fn pulses(&mut self) -> Vec<request::Pulse> {
        let mut pulses = Vec::with_capacity(self.active.len());
        for i in 0..self.active.len() {
            let vf = self.active[i];
            let settling = self.settling(vf);
            let Some(port) = self.ports.get_mut(vf.index()).and_then(Option::as_mut) else {
                continue;
            };
            // A memif client has no heartbeat register: liveness does not judge it.
            let (Some(bar), Some(_)) = (port.bar.as_ref(), port.queues.as_ref()) else {
                continue;
            };
            // Read from the ring's published indices: right whether the NIC or an NF
            // feeding this VF directly produces on it.
            let rx_waiting = match bar.ring_len(nfhost_sys::RingKind::Rx) {
                Ok(n) if port.state == super::port::PortState::Attached => n,
                _ => 0,
            };
            let rx_waiting = match (settling, port.hop.capable, port.hop.pending) {
                (true, _, Some(_)) => 0,
                (true, true, None) => rx_waiting.max(1),
                _ => rx_waiting,
            };
            pulses.push(request::Pulse {
                vf,
                heartbeat: bar.heartbeat(),
                rx_waiting,
            });
        }
        pulses
    }

    /// Counters of the wire sink.
    fn sink_stats(&self) -> Option<SinkStats> {
        self.wire.as_ref().map(|w| w.sink.stats())
    }
}
