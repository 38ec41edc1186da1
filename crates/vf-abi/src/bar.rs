//! The VF's BAR: one shared-memory region the NIC creates, holding the register
//! page and the four rings of queue pair 0.
//!
//! ```text
//! 0x0000  register page (4 KiB, see `reg`)
//! fill        NF -> NIC  empty frames       (rx ring size)
//! rx          NIC -> NF  received frames    (rx ring size)
//! tx          NF -> NIC  frames to send     (tx ring size)
//! completion  NIC -> NF  sent frames        (tx ring size)
//! ```
//!
//! Each ring starts on a [`BAR_PAGE`] boundary, in that order, right after the
//! previous one. Static registers are written by the NIC before the region is
//! shared and read once by the NF; live registers (MTU, link, interrupt mask,
//! mailbox, heartbeat, direct hop) are atomics on their own cache lines.

/// `"NFBA"`, at offset 0 of the register page.
pub const BAR_MAGIC: u32 = 0x4E46_4241;
/// Version of this layout.
pub const ABI_VERSION: u32 = 1;
/// Length of the register block; rings start after it.
pub const REGS_LEN: usize = 4096;
/// Ring alignment inside the BAR (fixed by the ABI, not the host page size).
pub const BAR_PAGE: usize = 4096;
/// Smallest ring size.
pub const MIN_RING_SIZE: u32 = 64;
/// Largest ring size.
pub const MAX_RING_SIZE: u32 = 32768;

/// Register offsets in the first page. Static registers are native-endian.
pub mod reg {
    /// `u32`, [`BAR_MAGIC`](super::BAR_MAGIC).
    pub const MAGIC: usize = 0x00;
    /// `u32`, [`ABI_VERSION`](super::ABI_VERSION).
    pub const ABI_VERSION: usize = 0x04;
    /// `u16` VF index (2 reserved bytes follow).
    pub const VF_INDEX: usize = 0x08;
    /// `[u8; 6]` MAC address (2 reserved bytes follow).
    pub const MAC: usize = 0x0C;
    /// `u32`, slots of the fill and rx rings.
    pub const RX_RING_SIZE: usize = 0x14;
    /// `u32`, slots of the tx and completion rings.
    pub const TX_RING_SIZE: usize = 0x18;
    /// `u64`, byte offset of the fill ring.
    pub const FILL_OFFSET: usize = 0x20;
    /// `u64`, byte offset of the rx ring.
    pub const RX_OFFSET: usize = 0x28;
    /// `u64`, byte offset of the tx ring.
    pub const TX_OFFSET: usize = 0x30;
    /// `u64`, byte offset of the completion ring.
    pub const COMPLETION_OFFSET: usize = 0x38;
    /// `u64`, total BAR length.
    pub const BAR_LEN: usize = 0x40;
    /// End of the static registers.
    pub const STATIC_END: usize = 0x48;
    /// `AtomicU32`, MTU; written by the NIC.
    pub const MTU: usize = 0x80;
    /// `AtomicU32`, 1 = link up; written by the NIC.
    pub const LINK_UP: usize = 0x84;
    /// `AtomicU32`, bit n set = vector n masked; written by the NF, read by
    /// the NIC. Resets to all-masked, like MSI-X vector control.
    pub const IRQ_MASK: usize = 0xC0;
    /// `AtomicU32`, the host's mailbox doorbell (the PF-to-VF mailbox of SR-IOV
    /// NICs): the generation of the newest message the host posted, 0 = none. The
    /// NF compares it with the last one it fetched (`FetchConfig`). Written by the
    /// NIC, read by the NF.
    pub const MAILBOX: usize = 0x100;
    /// `AtomicU32`, the NF's heartbeat: a count the NF runtime stores on every
    /// turn of its loop (each poll, each wake-up). Written by the NF, read by the
    /// host, which finds an NF unresponsive when its rx ring holds frames and
    /// this count stands still (a stopped or hung process).
    pub const HEARTBEAT: usize = 0x140;
    /// `AtomicU32`, the generation of this VF's direct hop (ARCHITECTURE.md §4):
    /// the NIC changes it whenever the NF this one should feed directly changes
    /// (granted, or withdrawn because that NF or this one's chain moved on). The NF
    /// compares it with the generation of its last `GetPeer` answer and asks again.
    /// Written by the NIC, read by the NF.
    pub const PEER: usize = 0x180;
    /// `AtomicU64`, frames this NF put on its direct hop's rx ring, in total.
    /// Written by the NF (one writer), read by the NIC for the hop's counters.
    pub const HOP_FRAMES: usize = 0x1C0;
    /// `AtomicU64`, bytes of those frames.
    pub const HOP_BYTES: usize = 0x1C8;
    /// `AtomicU64`, frames this NF forwarded that its direct hop had no room for
    /// (no free frame on its fill ring, or its rx ring full): dropped, and counted
    /// by the NIC as the hop's `no_buffer` drops.
    pub const HOP_NO_ROOM: usize = 0x1D0;
}

/// An MSI-X vector of a VF, `0..32` (one bit of the mask register).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IrqVector(u8);

impl IrqVector {
    /// Vector 0: rx.
    pub const RX: Self = Self(0);
    /// Vector 1: tx completion.
    pub const TX: Self = Self(1);

    /// Vector `n`, if below 32.
    pub fn new(n: u8) -> Option<Self> {
        (n < 32).then_some(Self(n))
    }

    /// The vector number.
    pub fn index(self) -> u8 {
        self.0
    }

    /// This vector's bit in the mask register.
    pub fn bit(self) -> u32 {
        1 << self.0
    }
}
