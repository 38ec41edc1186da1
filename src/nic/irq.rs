//! Interrupt remapping: the table (source VF, MSI-X vector) → delivery target.
//!
//! With VT-d interrupt remapping an interrupt message carries its source (the VF's
//! requester id) and is looked up in a table the host programmed; a device cannot
//! aim an interrupt at a target its function was not given. Here each entry also holds
//! the MSI-X vector control (mask bit) and an interrupt throttle interval (ITR), so one
//! entry is what a driver programs for one vector.
//!
//! Rules the model enforces:
//! - only a VF's current owner may bind its vectors; a change of owner unbinds them all;
//! - an interrupt is delivered only through the entry of the VF that raised it, only if
//!   bound and unmasked; anything else is counted as blocked and goes nowhere;
//! - at most one interrupt per `itr` interval per vector; one raised inside the interval
//!   is coalesced into a pending delivery when the interval ends;
//! - entries reset masked (MSI-X spec, "Vector Control": mask bit set after reset).
//!
//! Delivery goes through [`InterruptSink`]: eventfds in the engine, a recorder in tests.

use thiserror::Error;

use super::types::{Micros, Owner, Vector, VfId};

/// MSI-X vectors per VF: 0 = rx, 1 = tx completion, the rest spare.
pub const VECTORS_PER_VF: u16 = 4;

/// A delivery target handle (the engine maps it to an NF's eventfd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(pub u32);

/// Where interrupts go once they pass the remapping table.
pub trait InterruptSink {
    /// Signals `target` for `vector` of `vf`.
    fn deliver(&mut self, vf: VfId, vector: Vector, target: TargetId);

    /// The vector's mask bit as the driver last wrote it, where the sink can read
    /// it (the engine reads the BAR register). A coalesced delivery that falls due
    /// while the driver has masked the vector is dropped, as masking drops it.
    fn current_mask(&self, _vf: VfId, _vector: Vector) -> Option<bool> {
        None
    }
}

/// A refused interrupt-table write. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IrqError {
    /// The VF is beyond the table.
    #[error("{0} is not known to interrupt remapping")]
    NoSuchVf(VfId),
    /// The VF has no such vector.
    #[error("{vf} has no MSI-X vector {} (vectors 0-3)", .vector.0)]
    NoSuchVector {
        /// The VF.
        vf: VfId,
        /// The vector.
        vector: Vector,
    },
    /// Someone other than the VF's owner tried to program its vectors.
    #[error("{requester} may not bind vectors of {vf}: {}", owner_text(.owner.as_ref()))]
    NotOwner {
        /// The VF.
        vf: VfId,
        /// Who asked.
        requester: Owner,
        /// Who owns it.
        owner: Option<Owner>,
    },
}

fn owner_text(owner: Option<&Owner>) -> String {
    match owner {
        Some(o) => format!("it belongs to {o}"),
        None => "it is not assigned".to_owned(),
    }
}

/// What happened to one raised interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raise {
    /// Delivered now.
    Delivered,
    /// Inside the throttle interval: will be delivered when it ends.
    Coalesced,
    /// Not delivered, and never will be.
    Blocked(BlockReason),
}

/// Why an interrupt was blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockReason {
    /// Unknown VF or vector.
    NoSuchVector,
    /// No target bound.
    Unbound,
    /// Vector masked.
    Masked,
}

/// Interrupt counters for one VF.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IrqCounts {
    /// Raise requests.
    pub raised: u64,
    /// Deliveries (immediate or at the end of a throttle interval).
    pub delivered: u64,
    /// Raises folded into a pending delivery.
    pub coalesced: u64,
    /// Raises that went nowhere.
    pub blocked: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    target: Option<TargetId>,
    masked: bool,
    itr_us: u32,
    last_delivery: Option<Micros>,
    pending: bool,
}

impl Entry {
    const RESET: Entry = Entry {
        target: None,
        masked: true,
        itr_us: 0,
        last_delivery: None,
        pending: false,
    };

    fn due(&self, now: Micros) -> Micros {
        match self.last_delivery {
            Some(last) => Micros(last.0.saturating_add(u64::from(self.itr_us))),
            None => now,
        }
    }
}

#[derive(Debug, Clone)]
struct VfIrq {
    owner: Option<Owner>,
    entries: [Entry; VECTORS_PER_VF as usize],
    counts: IrqCounts,
}

impl VfIrq {
    fn new() -> Self {
        VfIrq {
            owner: None,
            entries: [Entry::RESET; VECTORS_PER_VF as usize],
            counts: IrqCounts::default(),
        }
    }
}

/// The interrupt remapping table of one PF.
#[derive(Debug, Clone, Default)]
pub struct IrqRemap {
    vfs: Vec<VfIrq>,
    /// Entries that turned pending, in order, so that polling and the next deadline
    /// cost what is pending, not the size of the table. An entry whose pending flag
    /// was cleared since (masked, unbound, reset) is skipped and dropped at the next
    /// poll.
    pending: Vec<(VfId, Vector)>,
}

impl IrqRemap {
    /// A table for `num_vfs` VFs, every entry unbound and masked.
    pub fn new(num_vfs: u16) -> Self {
        IrqRemap {
            vfs: (0..num_vfs).map(|_| VfIrq::new()).collect(),
            pending: Vec::new(),
        }
    }

    /// Rebuilds the table for a new VF count.
    pub fn reset(&mut self, num_vfs: u16) {
        *self = IrqRemap::new(num_vfs);
    }

    fn vf(&self, vf: VfId) -> Result<&VfIrq, IrqError> {
        self.vfs.get(vf.index()).ok_or(IrqError::NoSuchVf(vf))
    }

    fn entry_mut(&mut self, vf: VfId, vector: Vector) -> Result<&mut Entry, IrqError> {
        let state = self.vfs.get_mut(vf.index()).ok_or(IrqError::NoSuchVf(vf))?;
        state
            .entries
            .get_mut(usize::from(vector.0))
            .ok_or(IrqError::NoSuchVector { vf, vector })
    }

    /// Records a VF's new owner. A change of owner unbinds and masks every vector, so
    /// nothing the previous owner bound can be reached again.
    pub fn set_owner(&mut self, vf: VfId, owner: Option<Owner>) -> Result<(), IrqError> {
        let state = self.vfs.get_mut(vf.index()).ok_or(IrqError::NoSuchVf(vf))?;
        if state.owner != owner {
            state.entries = [Entry::RESET; VECTORS_PER_VF as usize];
            state.owner = owner;
        }
        Ok(())
    }

    /// The VF's owner as the table knows it.
    pub fn owner(&self, vf: VfId) -> Option<&Owner> {
        self.vfs.get(vf.index()).and_then(|s| s.owner.as_ref())
    }

    /// Binds a vector of `vf` to `target` on behalf of `requester`, who must own `vf`.
    /// The mask bit is left as it is: a fresh entry stays masked until unmasked.
    pub fn bind(
        &mut self,
        vf: VfId,
        vector: Vector,
        requester: &Owner,
        target: TargetId,
    ) -> Result<(), IrqError> {
        let owner = self.vf(vf)?.owner.clone();
        if owner.as_ref() != Some(requester) {
            return Err(IrqError::NotOwner {
                vf,
                requester: requester.clone(),
                owner,
            });
        }
        let entry = self.entry_mut(vf, vector)?;
        entry.target = Some(target);
        entry.pending = false;
        Ok(())
    }

    /// Removes a vector's target.
    pub fn unbind(&mut self, vf: VfId, vector: Vector) -> Result<(), IrqError> {
        let entry = self.entry_mut(vf, vector)?;
        entry.target = None;
        entry.pending = false;
        Ok(())
    }

    /// Sets or clears a vector's mask bit. Masking drops a pending coalesced delivery:
    /// the driver masks because it is polling and will see the work itself.
    pub fn set_masked(&mut self, vf: VfId, vector: Vector, masked: bool) -> Result<(), IrqError> {
        let entry = self.entry_mut(vf, vector)?;
        entry.masked = masked;
        if masked {
            entry.pending = false;
        }
        Ok(())
    }

    /// Whether a vector is masked (an unknown vector counts as masked).
    pub fn is_masked(&self, vf: VfId, vector: Vector) -> bool {
        self.vf(vf)
            .ok()
            .and_then(|s| s.entries.get(usize::from(vector.0)))
            .is_none_or(|e| e.masked)
    }

    /// The VF's vector mask as a bitmask (bit n set = vector n masked).
    pub fn mask_bits(&self, vf: VfId) -> u32 {
        (0..VECTORS_PER_VF)
            .filter(|&v| self.is_masked(vf, Vector(v)))
            .fold(0, |bits, v| bits | 1 << v)
    }

    /// Sets a vector's throttle interval in µs (0 = every raise is delivered).
    pub fn set_itr(&mut self, vf: VfId, vector: Vector, itr_us: u32) -> Result<(), IrqError> {
        self.entry_mut(vf, vector)?.itr_us = itr_us;
        Ok(())
    }

    /// Function-level reset: every vector masked, nothing pending; bindings stay (the
    /// VF contract's `Reset` keeps mappings and vectors).
    pub fn flr(&mut self, vf: VfId) -> Result<(), IrqError> {
        let state = self.vfs.get_mut(vf.index()).ok_or(IrqError::NoSuchVf(vf))?;
        for entry in &mut state.entries {
            entry.masked = true;
            entry.pending = false;
            entry.last_delivery = None;
        }
        Ok(())
    }

    /// The VF raises `vector` at `now`.
    pub fn raise(
        &mut self,
        vf: VfId,
        vector: Vector,
        now: Micros,
        sink: &mut dyn InterruptSink,
    ) -> Raise {
        let Some(state) = self.vfs.get_mut(vf.index()) else {
            return Raise::Blocked(BlockReason::NoSuchVector);
        };
        state.counts.raised += 1;
        let Some(entry) = state.entries.get_mut(usize::from(vector.0)) else {
            state.counts.blocked += 1;
            return Raise::Blocked(BlockReason::NoSuchVector);
        };
        let Some(target) = entry.target else {
            state.counts.blocked += 1;
            return Raise::Blocked(BlockReason::Unbound);
        };
        if entry.masked {
            state.counts.blocked += 1;
            return Raise::Blocked(BlockReason::Masked);
        }
        if entry.itr_us == 0 || now >= entry.due(now) {
            entry.last_delivery = Some(now);
            entry.pending = false;
            state.counts.delivered += 1;
            sink.deliver(vf, vector, target);
            Raise::Delivered
        } else {
            if !entry.pending {
                entry.pending = true;
                self.pending.push((vf, vector));
            }
            state.counts.coalesced += 1;
            Raise::Coalesced
        }
    }

    /// Delivers coalesced interrupts whose interval has ended by `now`. Returns how many.
    /// Costs what is pending: nothing when nothing is.
    pub fn poll(&mut self, now: Micros, sink: &mut dyn InterruptSink) -> usize {
        if self.pending.is_empty() {
            return 0;
        }
        let mut delivered = 0;
        let vfs = &mut self.vfs;
        self.pending.retain(|&(vf, vector)| {
            let Some(state) = vfs.get_mut(vf.index()) else {
                return false;
            };
            let Some(entry) = state.entries.get_mut(usize::from(vector.0)) else {
                return false;
            };
            if !entry.pending {
                return false;
            }
            if now < entry.due(now) {
                return true;
            }
            entry.pending = false;
            if let Some(masked) = sink.current_mask(vf, vector) {
                entry.masked = masked;
            }
            if let (Some(target), false) = (entry.target, entry.masked) {
                entry.last_delivery = Some(now);
                state.counts.delivered += 1;
                delivered += 1;
                sink.deliver(vf, vector, target);
            }
            false
        });
        delivered
    }

    /// The earliest time a pending interrupt falls due, for the engine's timer.
    pub fn next_deadline(&self) -> Option<Micros> {
        self.pending
            .iter()
            .filter_map(|&(vf, vector)| {
                self.vfs.get(vf.index())?.entries.get(usize::from(vector.0))
            })
            .filter(|e| e.pending)
            .filter_map(|e| {
                e.last_delivery
                    .map(|l| Micros(l.0.saturating_add(u64::from(e.itr_us))))
            })
            .min()
    }

    /// The throttle interval of a vector in µs (0 for an unknown one).
    pub fn itr(&self, vf: VfId, vector: Vector) -> u32 {
        self.vf(vf)
            .ok()
            .and_then(|s| s.entries.get(usize::from(vector.0)))
            .map_or(0, |e| e.itr_us)
    }

    /// Counters of one VF.
    pub fn counts(&self, vf: VfId) -> IrqCounts {
        self.vf(vf).map(|s| s.counts).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Default)]
    struct Recorder(Vec<(VfId, Vector, TargetId)>);

    impl InterruptSink for Recorder {
        fn deliver(&mut self, vf: VfId, vector: Vector, target: TargetId) {
            self.0.push((vf, vector, target));
        }
    }

    fn owned(n: u16) -> IrqRemap {
        let mut irq = IrqRemap::new(n);
        for i in 0..n {
            irq.set_owner(VfId(i), Some(Owner::new(format!("nf{i}"))))
                .unwrap();
        }
        irq
    }

    #[test]
    fn entries_reset_masked_and_unbound() {
        let irq = IrqRemap::new(2);
        for v in 0..VECTORS_PER_VF {
            assert!(irq.is_masked(VfId(0), Vector(v)));
        }
        assert_eq!(irq.mask_bits(VfId(1)), 0b1111);
        let mut irq = owned(1);
        let mut rec = Recorder::default();
        assert_eq!(
            irq.raise(VfId(0), Vector::RX, Micros(0), &mut rec),
            Raise::Blocked(BlockReason::Unbound)
        );
        irq.bind(VfId(0), Vector::RX, &Owner::new("nf0"), TargetId(5))
            .unwrap();
        assert_eq!(
            irq.raise(VfId(0), Vector::RX, Micros(0), &mut rec),
            Raise::Blocked(BlockReason::Masked),
            "a fresh binding stays masked until the driver unmasks it"
        );
        irq.set_masked(VfId(0), Vector::RX, false).unwrap();
        assert_eq!(
            irq.raise(VfId(0), Vector::RX, Micros(0), &mut rec),
            Raise::Delivered
        );
        assert_eq!(rec.0, vec![(VfId(0), Vector::RX, TargetId(5))]);
        assert_eq!(
            irq.counts(VfId(0)),
            IrqCounts {
                raised: 3,
                delivered: 1,
                coalesced: 0,
                blocked: 2
            }
        );
    }

    #[test]
    fn only_the_owner_binds() {
        let mut irq = owned(2);
        let err = irq
            .bind(VfId(0), Vector::RX, &Owner::new("nf1"), TargetId(1))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "nf1 may not bind vectors of vf0: it belongs to nf0"
        );
        irq.set_owner(VfId(1), None).unwrap();
        let err = irq
            .bind(VfId(1), Vector::RX, &Owner::new("nf1"), TargetId(1))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "nf1 may not bind vectors of vf1: it is not assigned"
        );
        assert_eq!(
            irq.bind(VfId(0), Vector(4), &Owner::new("nf0"), TargetId(1)),
            Err(IrqError::NoSuchVector {
                vf: VfId(0),
                vector: Vector(4)
            })
        );
    }

    #[test]
    fn a_new_owner_never_reaches_the_old_owners_target() {
        let mut irq = owned(1);
        let mut rec = Recorder::default();
        irq.bind(VfId(0), Vector::RX, &Owner::new("nf0"), TargetId(1))
            .unwrap();
        irq.set_masked(VfId(0), Vector::RX, false).unwrap();
        irq.set_owner(VfId(0), Some(Owner::new("next"))).unwrap();
        assert_eq!(
            irq.raise(VfId(0), Vector::RX, Micros(0), &mut rec),
            Raise::Blocked(BlockReason::Unbound)
        );
        assert!(rec.0.is_empty());
    }

    #[test]
    fn throttling_coalesces_into_one_delivery_per_interval() {
        let mut irq = owned(1);
        let mut rec = Recorder::default();
        let nf = Owner::new("nf0");
        irq.bind(VfId(0), Vector::RX, &nf, TargetId(9)).unwrap();
        irq.set_masked(VfId(0), Vector::RX, false).unwrap();
        irq.set_itr(VfId(0), Vector::RX, 100).unwrap();

        assert_eq!(
            irq.raise(VfId(0), Vector::RX, Micros(1000), &mut rec),
            Raise::Delivered
        );
        for t in [1010, 1050, 1099] {
            assert_eq!(
                irq.raise(VfId(0), Vector::RX, Micros(t), &mut rec),
                Raise::Coalesced
            );
        }
        assert_eq!(irq.next_deadline(), Some(Micros(1100)));
        assert_eq!(irq.poll(Micros(1099), &mut rec), 0);
        assert_eq!(irq.poll(Micros(1100), &mut rec), 1);
        assert_eq!(
            irq.poll(Micros(1300), &mut rec),
            0,
            "pending delivered once"
        );
        assert_eq!(irq.next_deadline(), None);
        assert_eq!(rec.0.len(), 2);
        assert_eq!(
            irq.counts(VfId(0)),
            IrqCounts {
                raised: 4,
                delivered: 2,
                coalesced: 3,
                blocked: 0
            }
        );
        // After a quiet interval the next raise goes straight through.
        assert_eq!(
            irq.raise(VfId(0), Vector::RX, Micros(1300), &mut rec),
            Raise::Delivered
        );
    }

    #[test]
    fn masking_drops_a_pending_delivery() {
        let mut irq = owned(1);
        let mut rec = Recorder::default();
        irq.bind(VfId(0), Vector::TX, &Owner::new("nf0"), TargetId(2))
            .unwrap();
        irq.set_masked(VfId(0), Vector::TX, false).unwrap();
        irq.set_itr(VfId(0), Vector::TX, 50).unwrap();
        irq.raise(VfId(0), Vector::TX, Micros(0), &mut rec);
        irq.raise(VfId(0), Vector::TX, Micros(10), &mut rec);
        irq.set_masked(VfId(0), Vector::TX, true).unwrap();
        assert_eq!(irq.poll(Micros(100), &mut rec), 0);
        assert_eq!(rec.0.len(), 1);
    }

    /// A sink whose driver masked every vector since the last raise.
    struct MaskedNow(Recorder);

    impl InterruptSink for MaskedNow {
        fn deliver(&mut self, vf: VfId, vector: Vector, target: TargetId) {
            self.0.deliver(vf, vector, target);
        }
        fn current_mask(&self, _vf: VfId, _vector: Vector) -> Option<bool> {
            Some(true)
        }
    }

    #[test]
    fn a_mask_read_at_delivery_time_drops_the_pending_delivery() {
        let mut irq = owned(1);
        let mut sink = MaskedNow(Recorder::default());
        irq.bind(VfId(0), Vector::RX, &Owner::new("nf0"), TargetId(2))
            .unwrap();
        irq.set_masked(VfId(0), Vector::RX, false).unwrap();
        irq.set_itr(VfId(0), Vector::RX, 50).unwrap();
        irq.raise(VfId(0), Vector::RX, Micros(0), &mut sink);
        irq.raise(VfId(0), Vector::RX, Micros(10), &mut sink);
        assert_eq!(irq.next_deadline(), Some(Micros(50)));
        // The driver masked in between (it is polling): nothing more is delivered.
        assert_eq!(irq.poll(Micros(100), &mut sink), 0);
        assert_eq!(sink.0.0.len(), 1);
        assert_eq!(irq.next_deadline(), None);
        assert!(irq.is_masked(VfId(0), Vector::RX));
    }

    #[test]
    fn flr_masks_but_keeps_bindings() {
        let mut irq = owned(1);
        let mut rec = Recorder::default();
        irq.bind(VfId(0), Vector::RX, &Owner::new("nf0"), TargetId(3))
            .unwrap();
        irq.set_masked(VfId(0), Vector::RX, false).unwrap();
        irq.flr(VfId(0)).unwrap();
        assert_eq!(
            irq.raise(VfId(0), Vector::RX, Micros(0), &mut rec),
            Raise::Blocked(BlockReason::Masked)
        );
        irq.set_masked(VfId(0), Vector::RX, false).unwrap();
        assert_eq!(
            irq.raise(VfId(0), Vector::RX, Micros(0), &mut rec),
            Raise::Delivered
        );
        assert_eq!(rec.0, vec![(VfId(0), Vector::RX, TargetId(3))]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Bind {
            vf: u16,
            vector: u16,
            requester: u16,
            target: u32,
        },
        Unbind {
            vf: u16,
            vector: u16,
        },
        Mask {
            vf: u16,
            vector: u16,
            masked: bool,
        },
        Itr {
            vf: u16,
            vector: u16,
            us: u32,
        },
        Owner {
            vf: u16,
            owner: Option<u16>,
        },
        Raise {
            vf: u16,
            vector: u16,
            dt: u64,
        },
        Poll {
            dt: u64,
        },
        Flr {
            vf: u16,
        },
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u16..4, 0u16..5, 0u16..5, 0u32..8).prop_map(|(vf, vector, requester, target)| {
                Op::Bind {
                    vf,
                    vector,
                    requester,
                    target,
                }
            }),
            (0u16..4, 0u16..5).prop_map(|(vf, vector)| Op::Unbind { vf, vector }),
            (0u16..4, 0u16..5, any::<bool>()).prop_map(|(vf, vector, masked)| Op::Mask {
                vf,
                vector,
                masked
            }),
            (0u16..4, 0u16..5, 0u32..200).prop_map(|(vf, vector, us)| Op::Itr { vf, vector, us }),
            (0u16..4, proptest::option::of(0u16..5))
                .prop_map(|(vf, owner)| Op::Owner { vf, owner }),
            (0u16..5, 0u16..5, 0u64..100).prop_map(|(vf, vector, dt)| Op::Raise { vf, vector, dt }),
            (0u64..300).prop_map(|dt| Op::Poll { dt }),
            (0u16..4).prop_map(|vf| Op::Flr { vf }),
        ]
    }

    proptest! {
        /// No interrupt ever reaches a target that its VF did not bind under its
        /// current owner, and none is delivered while its vector is masked.
        #[test]
        fn interrupts_only_reach_targets_bound_for_that_vf(ops in proptest::collection::vec(arb_op(), 1..300)) {
            let mut irq = IrqRemap::new(4);
            // The model of what is legitimately bound: (vf, vector) -> target.
            let mut bound = std::collections::HashMap::<(u16, u16), u32>::new();
            let mut now = 0u64;
            let mut rec = Recorder::default();
            for op in ops {
                let seen = rec.0.len();
                match op {
                    Op::Bind { vf, vector, requester, target } => {
                        let requester = Owner::new(format!("nf{requester}"));
                        let ok = irq.bind(VfId(vf), Vector(vector), &requester, TargetId(target)).is_ok();
                        let owns = irq.owner(VfId(vf)) == Some(&requester);
                        prop_assert_eq!(ok, owns && vector < VECTORS_PER_VF);
                        if ok {
                            bound.insert((vf, vector), target);
                        }
                    }
                    Op::Unbind { vf, vector } => {
                        if irq.unbind(VfId(vf), Vector(vector)).is_ok() {
                            bound.remove(&(vf, vector));
                        }
                    }
                    Op::Mask { vf, vector, masked } => { let _ = irq.set_masked(VfId(vf), Vector(vector), masked); }
                    Op::Itr { vf, vector, us } => { let _ = irq.set_itr(VfId(vf), Vector(vector), us); }
                    Op::Owner { vf, owner } => {
                        let owner = owner.map(|o| Owner::new(format!("nf{o}")));
                        if irq.owner(VfId(vf)) != owner.as_ref() {
                            bound.retain(|(v, _), _| *v != vf);
                        }
                        irq.set_owner(VfId(vf), owner).unwrap();
                    }
                    Op::Raise { vf, vector, dt } => {
                        now += dt;
                        let masked = irq.is_masked(VfId(vf), Vector(vector));
                        let r = irq.raise(VfId(vf), Vector(vector), Micros(now), &mut rec);
                        if masked {
                            prop_assert!(matches!(r, Raise::Blocked(_)));
                        }
                    }
                    Op::Poll { dt } => { now += dt; irq.poll(Micros(now), &mut rec); }
                    Op::Flr { vf } => { irq.flr(VfId(vf)).unwrap(); }
                }
                for &(vf, vector, target) in &rec.0[seen..] {
                    prop_assert_eq!(bound.get(&(vf.0, vector.0)), Some(&target.0),
                        "delivered to a target {:?} not bound by {}", target, vf);
                    prop_assert!(!irq.is_masked(vf, vector), "delivered while masked");
                }
            }
            for vf in 0..4 {
                let c = irq.counts(VfId(vf));
                prop_assert!(c.delivered <= c.raised);
                prop_assert_eq!(c.raised >= c.blocked + c.coalesced, true);
            }
        }
    }
}
