//! The engine's side of one attached VF: the socket to its NF, the BAR with the NIC
//! ends of the four rings (or a memif client's two), the doorbell, and the
//! interrupt eventfds the NF bound.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use nfhost_sys::{Bar, BarLayout, EventFd, HopCounts, IrqVector, SharedMemory, VfConfig};

use crate::dataplane::moderation::Moderation;
use crate::nic::irq::VECTORS_PER_VF;
use crate::nic::{Owner, VfId};

pub use super::queues::{FRAME_SIZE, Queues, Rings};

/// How an NF attached: which protocol its socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    /// nfhost's attach protocol and the BAR.
    Native,
    /// memif, as a DPDK or VPP client.
    Memif,
}

/// Where the attach handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortState {
    /// Socket registered, waiting for `Hello`.
    AwaitHello,
    /// BAR handed out; rings usable once bus mastering is enabled.
    Attached,
    /// A ring index jumped: the queue is halted until the NF resets the function.
    Halted,
}

/// One attached VF.
#[derive(Debug)]
pub struct Port {
    /// Which VF.
    pub vf: VfId,
    /// The NF that owns it.
    pub owner: Owner,
    /// The token the NF must present in `Hello`.
    pub token: String,
    /// The engine's end of the attach socket (replies go out here).
    pub sock: OwnedFd,
    /// Handshake state.
    pub state: PortState,
    /// Which protocol the NF speaks.
    pub face: Face,
    /// The BAR, once `Hello` was answered (native face only).
    pub bar: Option<Bar<nfhost_sys::Nic>>,
    /// The NIC ends of the rings, once attached.
    pub queues: Option<Queues>,
    /// The NF writes this when it produced tx and the NIC asked for a wakeup.
    pub doorbell: Option<Arc<EventFd>>,
    /// Interrupt targets by vector.
    pub irq: [Option<EventFd>; VECTORS_PER_VF as usize],
    /// Frames delivered to rx since the last interrupt decision.
    pub rx_since_irq: u32,
    /// Completions posted since the last interrupt decision.
    pub tx_since_irq: u32,
    /// Latest NF report (JSON).
    pub report: Option<String>,
    /// The configuration the NF runs with: the one it was started with, or the
    /// newest it applied in place. Answers `GetConfig`.
    pub config: Arc<str>,
    /// The message waiting in the mailbox: its generation and a configuration.
    pub mailbox: Option<(u32, String)>,
    /// Which attachment this is (events from an older socket are ignored).
    pub epoch: u64,
    /// Whether the engine looks at this VF's transmit ring every pass. When not, the
    /// ring's `NEED_WAKEUP` flag is set and the NF rings the doorbell to be looked at.
    pub polled: bool,
    /// Consecutive visits that found nothing to send.
    pub quiet: u32,
    /// The VF's interrupt moderation.
    pub moderation: Moderation,
    /// Its part in a direct hop.
    pub hop: HopLink,
}

/// A VF's part in the direct hops of a `shared` chain (ARCHITECTURE.md §4).
#[derive(Debug, Default)]
pub struct HopLink {
    /// The NF asked `GetPeer`: it can feed a hop directly, and waits between
    /// batches when asked.
    pub capable: bool,
    /// The generation last published in the BAR's `PEER` register.
    pub generation: u32,
    /// The id of a `GetPeer` whose answer waits for the chain to settle.
    pub pending: Option<u64>,
    /// The hop this VF's NF feeds directly.
    pub feeds: Option<VfId>,
    /// The NF that feeds this VF directly: it, not the NIC, consumes this VF's
    /// fill ring and produces on its rx ring.
    pub fed_by: Option<VfId>,
    /// The NF's `HOP_*` registers as last added to the counters.
    pub counted: HopCounts,
}

impl Port {
    /// A port waiting for its NF's `Hello`.
    pub fn new(
        vf: VfId,
        owner: Owner,
        token: String,
        config: Arc<str>,
        sock: OwnedFd,
        face: Face,
    ) -> Self {
        Port {
            face,
            vf,
            owner,
            token,
            config,
            sock,
            state: PortState::AwaitHello,
            bar: None,
            queues: None,
            doorbell: None,
            irq: Default::default(),
            rx_since_irq: 0,
            tx_since_irq: 0,
            report: None,
            mailbox: None,
            epoch: 0,
            polled: false,
            quiet: 0,
            moderation: Moderation::default(),
            hop: HopLink::default(),
        }
    }

    /// Creates the BAR and the doorbell for this VF and opens the NIC ends of the rings.
    pub fn bring_up(
        &mut self,
        layout: BarLayout,
        config: &VfConfig,
    ) -> Result<(), nfhost_sys::BarError> {
        let bar = Bar::create(layout, config)?;
        let rings = Rings::open(&bar).map_err(nfhost_sys::BarError::Ring)?;
        self.bar = Some(bar);
        self.queues = Some(Queues::Native(rings));
        self.state = PortState::Attached;
        Ok(())
    }

    /// Whether `given` is this port's token (the native `Hello`'s, or memif's
    /// secret), compared in constant time.
    pub fn token_matches(&self, given: &[u8]) -> bool {
        bool::from(subtle::ConstantTimeEq::ct_eq(self.token.as_bytes(), given))
    }

    /// Whether the NF masked interrupt `vector`: the BAR's `IRQ_MASK`, or for
    /// memif the receive ring's `MEMIF_RING_FLAG_MASK_INT` (memif has no
    /// transmit-completion interrupt: that vector is always masked).
    pub fn irq_masked(&self, vector: IrqVector) -> bool {
        match (&self.bar, &self.queues) {
            (Some(bar), _) => bar.irq_masked(vector),
            (None, Some(Queues::Memif(m))) if vector == IrqVector::RX => m.m2s.masked(),
            _ => true,
        }
    }
}

/// A memory object the NIC may reach through the IOMMU.
#[derive(Debug)]
pub struct RegionSlot {
    /// The memory.
    pub memory: Arc<SharedMemory>,
    /// How many mappings point at it.
    pub mappings: u32,
}
