//! Hot-path counters: plain per-VF atomics, written by the engine thread only.
//!
//! There is exactly one writer (the engine thread), so an increment is a relaxed load
//! plus a relaxed store: no locked read-modify-write on the hot path. Readers (the
//! sampler, tests, the benchmark) take a [`VfStats`] snapshot at any time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why the NIC dropped a frame on a VF (the metric label values of ARCHITECTURE.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drop {
    /// The VF's fill ring had no free frame.
    NoBuffer,
    /// The VF's rx (or completion) ring was full.
    RingFull,
    /// Source MAC not the VF's.
    Spoof,
    /// VLAN anti-spoof.
    Vlan,
    /// A descriptor's IOVA failed translation.
    DmaFault,
    /// The VF's (or the uplink's) link is down, or the VF is not enabled for DMA.
    LinkDown,
    /// A frame shorter than its headers.
    Malformed,
    /// No destination.
    NoRoute,
    /// Longer than the wire's MTU allows.
    Oversize,
    /// Every transmit buffer of the wire was in flight.
    WireBusy,
    /// The kernel dropped the frame before nfhost read it: a host wire link's
    /// socket buffer was full.
    Overrun,
    /// Leaving a two-way chain from a source the NIC never saw come in on either of
    /// the chain's VLANs, so it cannot tell which side the frame is for.
    Unlearned,
}

/// How many drop reasons there are.
pub const DROP_REASONS: usize = 12;

impl Drop {
    /// Every reason, in label order.
    pub const ALL: [Drop; DROP_REASONS] = [
        Drop::NoBuffer,
        Drop::RingFull,
        Drop::Spoof,
        Drop::Vlan,
        Drop::DmaFault,
        Drop::LinkDown,
        Drop::Malformed,
        Drop::NoRoute,
        Drop::Oversize,
        Drop::WireBusy,
        Drop::Overrun,
        Drop::Unlearned,
    ];

    /// Stable label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Drop::NoBuffer => "no_buffer",
            Drop::RingFull => "ring_full",
            Drop::Spoof => "spoof",
            Drop::Vlan => "vlan",
            Drop::DmaFault => "dma_fault",
            Drop::LinkDown => "link_down",
            Drop::Malformed => "malformed",
            Drop::NoRoute => "no_route",
            Drop::Oversize => "oversize",
            Drop::WireBusy => "wire_busy",
            Drop::Overrun => "overrun",
            Drop::Unlearned => "unlearned",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<crate::nic::DropReason> for Drop {
    fn from(reason: crate::nic::DropReason) -> Self {
        use crate::nic::DropReason as R;
        match reason {
            R::Malformed => Drop::Malformed,
            R::NoRoute => Drop::NoRoute,
            R::LinkDown => Drop::LinkDown,
            R::Spoof => Drop::Spoof,
            R::Vlan => Drop::Vlan,
            R::Unlearned => Drop::Unlearned,
        }
    }
}

/// A single-writer counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the engine thread calls this.
    #[inline]
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of one VF.
#[derive(Debug, Default)]
pub struct VfCounters {
    /// Frames the NIC wrote into the VF's rx ring.
    pub rx_packets: Counter,
    /// Their bytes.
    pub rx_bytes: Counter,
    /// Frames the VF sent that the NIC carried on.
    pub tx_packets: Counter,
    /// Their bytes.
    pub tx_bytes: Counter,
    drops: [Counter; DROP_REASONS],
    /// Interrupts delivered to the NF.
    pub irq_delivered: Counter,
    /// Interrupts folded into a later one.
    pub irq_coalesced: Counter,
    /// Interrupts that went nowhere (masked, unbound).
    pub irq_blocked: Counter,
    /// Bytes the NIC copied into this VF's memory from another VF's (strict hops).
    pub copied_bytes: Counter,
    /// Frames handed over without a copy (shared hops).
    pub handed_over: Counter,
    /// Descriptors or ring indices the NIC refused to obey.
    pub ring_errors: Counter,
    /// Connections to the VF's endpoint refused: a wrong or missing secret, or a
    /// second connection while one is attached.
    pub attach_refused: Counter,
    /// Times the engine looked at the VF's transmit ring. The engine looks only at
    /// VFs with work (frames delivered, a doorbell, recent sends), so an idle VF's
    /// count stands still however much traffic others carry.
    pub visits: Counter,
}

impl VfCounters {
    /// Counts a dropped frame.
    #[inline]
    pub fn drop(&self, reason: Drop, n: u64) {
        self.drops[reason.index()].add(n);
    }

    /// Drops for one reason.
    pub fn drops(&self, reason: Drop) -> u64 {
        self.drops[reason.index()].get()
    }

    /// A plain copy of every counter.
    pub fn snapshot(&self) -> VfStats {
        VfStats {
            rx_packets: self.rx_packets.get(),
            rx_bytes: self.rx_bytes.get(),
            tx_packets: self.tx_packets.get(),
            tx_bytes: self.tx_bytes.get(),
            drops: Drop::ALL.map(|d| self.drops(d)),
            irq_delivered: self.irq_delivered.get(),
            irq_coalesced: self.irq_coalesced.get(),
            irq_blocked: self.irq_blocked.get(),
            copied_bytes: self.copied_bytes.get(),
            handed_over: self.handed_over.get(),
            ring_errors: self.ring_errors.get(),
            attach_refused: self.attach_refused.get(),
            visits: self.visits.get(),
        }
    }
}

/// A snapshot of one VF's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VfStats {
    /// See [`VfCounters::rx_packets`].
    pub rx_packets: u64,
    /// See [`VfCounters::rx_bytes`].
    pub rx_bytes: u64,
    /// See [`VfCounters::tx_packets`].
    pub tx_packets: u64,
    /// See [`VfCounters::tx_bytes`].
    pub tx_bytes: u64,
    /// Drops, indexed like [`Drop::ALL`].
    pub drops: [u64; DROP_REASONS],
    /// See [`VfCounters::irq_delivered`].
    pub irq_delivered: u64,
    /// See [`VfCounters::irq_coalesced`].
    pub irq_coalesced: u64,
    /// See [`VfCounters::irq_blocked`].
    pub irq_blocked: u64,
    /// See [`VfCounters::copied_bytes`].
    pub copied_bytes: u64,
    /// See [`VfCounters::handed_over`].
    pub handed_over: u64,
    /// See [`VfCounters::ring_errors`].
    pub ring_errors: u64,
    /// See [`VfCounters::attach_refused`].
    pub attach_refused: u64,
    /// See [`VfCounters::visits`].
    pub visits: u64,
}

impl VfStats {
    /// Drops for one reason.
    pub fn drop_count(&self, reason: Drop) -> u64 {
        self.drops[reason.index()]
    }

    /// Drops for every reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// VLAN ids 0 (untagged) to 4095: one counter slot each.
const VLAN_SLOTS: usize = 4096;

/// Counters of the uplink (the wire).
#[derive(Debug)]
pub struct WireCounters {
    /// Frames received from the wire (generated, for `gen`).
    pub rx_packets: Counter,
    /// Their bytes.
    pub rx_bytes: Counter,
    /// Frames sent to the wire.
    pub tx_packets: Counter,
    /// Their bytes.
    pub tx_bytes: Counter,
    drops: [Counter; DROP_REASONS],
    /// Frames sent to the wire by the VLAN id they left with, 0 = untagged: where a
    /// re-tagging or two-way chain sent its traffic.
    tx_vlan: Box<[Counter]>,
}

impl Default for WireCounters {
    fn default() -> Self {
        WireCounters {
            rx_packets: Counter::default(),
            rx_bytes: Counter::default(),
            tx_packets: Counter::default(),
            tx_bytes: Counter::default(),
            drops: Default::default(),
            tx_vlan: (0..VLAN_SLOTS).map(|_| Counter::default()).collect(),
        }
    }
}

impl WireCounters {
    /// Counts a frame sent to the wire with VLAN id `vid` (0 = untagged).
    #[inline]
    pub fn sent_on_vlan(&self, vid: u16) {
        if let Some(c) = self.tx_vlan.get(usize::from(vid)) {
            c.add(1);
        }
    }

    /// Frames sent to the wire with VLAN id `vid` (0 = untagged).
    pub fn tx_vlan_packets(&self, vid: u16) -> u64 {
        self.tx_vlan.get(usize::from(vid)).map_or(0, Counter::get)
    }

    /// Counts a frame from the wire that went nowhere.
    #[inline]
    pub fn drop(&self, reason: Drop, n: u64) {
        self.drops[reason.index()].add(n);
    }

    /// Drops for one reason.
    pub fn drops(&self, reason: Drop) -> u64 {
        self.drops[reason.index()].get()
    }

    /// Drops for every reason.
    pub fn total_drops(&self) -> u64 {
        Drop::ALL.iter().map(|d| self.drops(*d)).sum()
    }
}

/// Every counter of one PF.
#[derive(Debug)]
pub struct Counters {
    vfs: Box<[VfCounters]>,
    /// The uplink.
    pub wire: WireCounters,
}

impl Counters {
    /// Counters for up to `max_vfs` VFs.
    pub fn new(max_vfs: u16) -> Self {
        Counters {
            vfs: (0..max_vfs).map(|_| VfCounters::default()).collect(),
            wire: WireCounters::default(),
        }
    }

    /// One VF's counters (a VF beyond the table gets a shared dummy, never a panic).
    pub fn vf(&self, vf: crate::nic::VfId) -> &VfCounters {
        static DUMMY: std::sync::OnceLock<VfCounters> = std::sync::OnceLock::new();
        self.vfs
            .get(vf.index())
            .unwrap_or_else(|| DUMMY.get_or_init(VfCounters::default))
    }

    /// How many VFs have counters.
    pub fn len(&self) -> usize {
        self.vfs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.vfs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nic::VfId;

    #[test]
    fn counters_add_and_snapshot() {
        let c = Counters::new(2);
        c.vf(VfId(1)).rx_packets.add(3);
        c.vf(VfId(1)).drop(Drop::NoBuffer, 2);
        c.vf(VfId(1)).drop(Drop::Spoof, 1);
        let s = c.vf(VfId(1)).snapshot();
        assert_eq!(s.rx_packets, 3);
        assert_eq!(s.drop_count(Drop::NoBuffer), 2);
        assert_eq!(s.total_drops(), 3);
        assert_eq!(c.vf(VfId(0)).snapshot(), VfStats::default());
        // Out of range: harmless.
        c.vf(VfId(9)).rx_packets.add(1);
    }

    #[test]
    fn wire_frames_are_counted_by_vlan() {
        let c = Counters::new(1);
        c.wire.sent_on_vlan(200);
        c.wire.sent_on_vlan(200);
        c.wire.sent_on_vlan(0);
        c.wire.sent_on_vlan(5000);
        assert_eq!(
            [0, 100, 200, 4095].map(|v| c.wire.tx_vlan_packets(v)),
            [1, 0, 2, 0]
        );
        assert_eq!(c.wire.tx_vlan_packets(5000), 0, "out of range: ignored");
    }

    #[test]
    fn drop_labels_are_distinct() {
        let mut names: Vec<_> = Drop::ALL.iter().map(|d| d.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), Drop::ALL.len());
        for (i, d) in Drop::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
        }
    }
}
