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
}
