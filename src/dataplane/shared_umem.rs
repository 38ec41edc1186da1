//! The packet memory of a `shared` chain (ARCHITECTURE.md §4): one UMEM the host owns, mapped
//! once into the chain's shared IOMMU domain, carved into frames that move between the
//! chain's NFs by descriptor hand-over.
//!
//! Every hand-over is a swap (the receiver gets the sender's frame, the sender one of
//! the receiver's free frames), so each NF keeps a constant number of frames. The
//! table below records who holds which frame; when an NF dies, its restarted instance
//! is given back exactly the frames its predecessor held, and no frame is ever held by
//! two NFs.

use std::sync::Arc;

use nfhost_sys::{SharedMemory, ShmError};

use crate::nic::{Iova, VfId};

/// Where shared chain memory sits in IOVA space (far from what NFs map themselves).
pub const SHARED_UMEM_IOVA: u64 = 0x40_0000_0000;

/// One shared chain's UMEM and its frame ownership.
#[derive(Debug)]
pub struct SharedUmem {
    memory: Arc<SharedMemory>,
    frame_size: u32,
    owner: Vec<VfId>,
    /// The chain's hops, in order.
    hops: Vec<VfId>,
}

impl SharedUmem {
    /// `frames_per_hop` frames for each hop, initially in hop order.
    pub fn new(hops: &[VfId], frames_per_hop: u32, frame_size: u32) -> Result<Self, ShmError> {
        let frames = hops.len() * frames_per_hop as usize;
        let memory = SharedMemory::create("nfhost-shared-chain", frames * frame_size as usize)?;
        let owner = hops
            .iter()
            .flat_map(|vf| std::iter::repeat_n(*vf, frames_per_hop as usize))
            .collect();
        Ok(SharedUmem {
            memory: Arc::new(memory),
            frame_size,
            owner,
            hops: hops.to_vec(),
        })
    }

    /// The memory.
    pub fn memory(&self) -> &Arc<SharedMemory> {
        &self.memory
    }

    /// First IOVA.
    pub fn iova(&self) -> Iova {
        Iova(SHARED_UMEM_IOVA)
    }

    fn frame_index(&self, iova: Iova) -> Option<usize> {
        let off = iova.0.checked_sub(SHARED_UMEM_IOVA)?;
        let i = (off / u64::from(self.frame_size)) as usize;
        (i < self.owner.len()).then_some(i)
    }

    /// Records that the frame at `iova` now belongs to `to`.
    pub fn transfer(&mut self, iova: Iova, to: VfId) {
        if let Some(i) = self.frame_index(iova) {
            self.owner[i] = to;
        }
    }

    /// The frames `vf` holds.
    pub fn frames_of(&self, vf: VfId) -> Vec<Iova> {
        self.owner
            .iter()
            .enumerate()
            .filter(|(_, o)| **o == vf)
            .map(|(i, _)| Iova(SHARED_UMEM_IOVA + i as u64 * u64::from(self.frame_size)))
            .collect()
    }

    /// The chain's hops, in order.
    pub fn hops(&self) -> &[VfId] {
        &self.hops
    }

    /// Settles who holds what after a hop stopped while NFs of the chain fed each
    /// other directly, swapping frames the host did not see (ARCHITECTURE.md §4).
    /// `holders` are the hops whose NFs wait between batches, each with the frames
    /// on its rings: those become theirs. The other frames recorded for a holder or
    /// for a hop in `stopped` are the ones the stopped NFs held in hand or on their
    /// rings: they go to the stopped hops, in turn. Frames recorded for any other
    /// hop (one that never fed or was fed directly) stay as they are, as do
    /// addresses outside the UMEM and frames not movable.
    pub fn settle(&mut self, holders: &[(VfId, Vec<Iova>)], stopped: &[VfId]) {
        let movable: Vec<bool> = self
            .owner
            .iter()
            .map(|o| stopped.contains(o) || holders.iter().any(|(h, _)| h == o))
            .collect();
        let mut placed = vec![false; self.owner.len()];
        for (holder, frames) in holders {
            for &iova in frames {
                if let Some(i) = self.frame_index(iova).filter(|&i| movable[i]) {
                    self.owner[i] = *holder;
                    placed[i] = true;
                }
            }
        }
        let mut turn = stopped.iter().cycle();
        for i in 0..self.owner.len() {
            if movable[i] && !placed[i] {
                if let Some(vf) = turn.next() {
                    self.owner[i] = *vf;
                }
            }
        }
    }

    /// How many frames `vf` holds.
    pub fn count_of(&self, vf: VfId) -> usize {
        self.owner.iter().filter(|o| **o == vf).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_keep_every_hop_at_a_constant_count() {
        let hops = [VfId(1), VfId(2), VfId(3)];
        let mut umem = SharedUmem::new(&hops, 4, 2048).unwrap();
        assert_eq!(umem.memory().len(), 3 * 4 * 2048);
        let a = umem.frames_of(VfId(1))[0];
        let b = umem.frames_of(VfId(2))[0];
        // Hop 1 hands frame a to hop 2 and gets frame b back.
        umem.transfer(a, VfId(2));
        umem.transfer(b, VfId(1));
        for hop in hops {
            assert_eq!(umem.count_of(hop), 4);
        }
        assert!(umem.frames_of(VfId(2)).contains(&a));
        assert!(umem.frames_of(VfId(1)).contains(&b));
        // Addresses outside the UMEM are ignored.
        umem.transfer(Iova(0), VfId(9));
        umem.transfer(Iova(SHARED_UMEM_IOVA + 12 * 2048), VfId(9));
        assert_eq!(umem.count_of(VfId(9)), 0);
    }

    fn frame(i: u64) -> Iova {
        Iova(SHARED_UMEM_IOVA + i * 2048)
    }

    #[test]
    fn settling_gives_holders_what_their_rings_hold_and_the_stopped_hop_the_rest() {
        // Four hops of 4 frames: 0-3 hop 1, 4-7 hop 2, 8-11 hop 3, 12-15 hop 4.
        let hops = [VfId(1), VfId(2), VfId(3), VfId(4)];
        let mut umem = SharedUmem::new(&hops, 4, 2048).unwrap();
        // Hops 1-3 fed each other directly; hop 2 died. Unrecorded swaps moved
        // frames around; now hop 1's rings hold 0, 1, 5 and hop 3's 2, 8, 9, 10, 11.
        let holders = [
            (VfId(1), vec![frame(0), frame(1), frame(5)]),
            (
                VfId(3),
                vec![frame(2), frame(8), frame(9), frame(10), frame(11)],
            ),
        ];
        umem.settle(&holders, &[VfId(2)]);
        let of = |vf| umem.frames_of(VfId(vf));
        assert_eq!(of(1), vec![frame(0), frame(1), frame(5)]);
        assert_eq!(
            of(3),
            vec![frame(2), frame(8), frame(9), frame(10), frame(11)]
        );
        // The stopped hop gets every other frame of the three.
        assert_eq!(of(2), vec![frame(3), frame(4), frame(6), frame(7)]);
        // Hop 4 never took part: its frames are not touched, even if a ring
        // claims one of them.
        assert_eq!(of(4), (12..16).map(frame).collect::<Vec<_>>());
        let total: usize = hops.iter().map(|h| umem.count_of(*h)).sum();
        assert_eq!(total, 16, "no frame lost or doubled");
    }

    #[test]
    fn settling_ignores_addresses_outside_the_umem_and_frames_of_bystanders() {
        let hops = [VfId(1), VfId(2), VfId(3)];
        let mut umem = SharedUmem::new(&hops, 2, 2048).unwrap();
        let holders = [(
            VfId(1),
            vec![
                Iova(0),
                frame(1),
                frame(4),
                Iova(SHARED_UMEM_IOVA + 6 * 2048),
            ],
        )];
        // Hop 3 is a bystander: frame 4 stays its own.
        umem.settle(&holders, &[VfId(2)]);
        assert_eq!(umem.frames_of(VfId(1)), vec![frame(1)]);
        assert_eq!(umem.frames_of(VfId(2)), vec![frame(0), frame(2), frame(3)]);
        assert_eq!(umem.frames_of(VfId(3)), vec![frame(4), frame(5)]);
    }
}
