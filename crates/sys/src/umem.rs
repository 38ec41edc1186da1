//! The UMEM's frames, lent out as the rings hand them over.
//!
//! A frame belongs to one side at a time and changes hands only through the
//! rings: the NIC puts a received frame on rx and does not touch it again until
//! the NF gives it back on tx or fill. [`FrameLender`] turns that protocol into
//! borrows: it reads the descriptors waiting on a ring itself, checks that each is
//! a whole frame of this UMEM and that none repeats, and lends the frames as
//! disjoint `&mut [u8]` for as long as it is borrowed.

use std::sync::Arc;

use arrayvec::ArrayVec;
use thiserror::Error;

use crate::ring::{Consumer, Desc, RingError};
use crate::shm::SharedMemory;

/// A descriptor the lender refuses, or the ring it came from failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LendError {
    /// Not the start of a frame of this UMEM, or longer than a frame.
    #[error("descriptor {iova:#x}+{len} is not a frame of this UMEM")]
    NotAFrame {
        /// The descriptor's IOVA.
        iova: u64,
        /// The descriptor's length.
        len: u32,
    },
    /// The same frame handed over twice in one batch.
    #[error("descriptor {iova:#x}+{len} hands over a frame already in this batch")]
    Twice {
        /// The descriptor's IOVA.
        iova: u64,
        /// The descriptor's length.
        len: u32,
    },
    /// The ring's peer published an impossible index.
    #[error(transparent)]
    Ring(#[from] RingError),
}

/// Lends the frames of one UMEM, mapped at `base_iova` in frames of
/// `frame_size` bytes.
#[derive(Debug)]
pub struct FrameLender {
    umem: Arc<SharedMemory>,
    base_iova: u64,
    frame_size: usize,
}

impl FrameLender {
    /// A lender of `umem`'s frames; `base_iova` is where the UMEM is mapped for DMA.
    pub fn new(umem: Arc<SharedMemory>, base_iova: u64, frame_size: usize) -> Self {
        Self {
            umem,
            base_iova,
            frame_size,
        }
    }

    /// The frame size in bytes.
    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// The index of the frame `iova` starts, if it is a frame start of this UMEM
    /// and `len` fits in a frame.
    pub fn frame_index(&self, iova: u64, len: u32) -> Option<usize> {
        let off = usize::try_from(iova.checked_sub(self.base_iova)?).ok()?;
        let frame = off / self.frame_size;
        let fits = off % self.frame_size == 0
            && len as usize <= self.frame_size
            && (frame + 1) * self.frame_size <= self.umem.len();
        fits.then_some(frame)
    }

    /// Lends the frames of up to `N` descriptors waiting on `ring`, a ring on which
    /// the peer hands this side frames it no longer touches (rx or completion): one
    /// slice per descriptor, in ring order, each a whole frame; the descriptors go
    /// to `descs`. The descriptors stay on the ring: the caller releases them once
    /// it has read them (the frames stay this side's until it gives them back).
    /// Nothing is lent if one descriptor is refused.
    pub fn lend<'a, const N: usize>(
        &'a mut self,
        ring: &mut Consumer,
        descs: &mut ArrayVec<Desc, N>,
    ) -> Result<ArrayVec<&'a mut [u8], N>, LendError> {
        self.lend_up_to(ring, descs, u32::MAX)
    }

    /// [`lend`](Self::lend), taking at most `limit` descriptors.
    pub fn lend_up_to<'a, const N: usize>(
        &'a mut self,
        ring: &mut Consumer,
        descs: &mut ArrayVec<Desc, N>,
        limit: u32,
    ) -> Result<ArrayVec<&'a mut [u8], N>, LendError> {
        descs.clear();
        let n = ring.peek(u32::try_from(N).unwrap_or(u32::MAX).min(limit))?;
        let mut frames: ArrayVec<usize, N> = ArrayVec::new();
        for i in 0..n {
            let d = ring.read(i);
            let frame = self
                .frame_index(d.iova, d.len)
                .ok_or(LendError::NotAFrame {
                    iova: d.iova,
                    len: d.len,
                })?;
            descs.push(d);
            frames.push(frame);
        }
        let mut sorted = frames.clone();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
            let d = descs[frames.iter().position(|&f| f == pair[0]).unwrap_or(0)];
            return Err(LendError::Twice {
                iova: d.iova,
                len: d.len,
            });
        }
        let mut out = ArrayVec::new();
        for (frame, d) in frames.into_iter().zip(descs.iter()) {
            // SAFETY: the peer handed this frame over on `ring`, so by the ring
            // protocol it does not touch it until this side gives it back (tx or
            // fill); it lies inside the UMEM (`frame_index`); no other slice of it
            // exists: the frames of this call are distinct (checked above), and
            // the slices borrow `self` exclusively, so no other `lend` runs while
            // they live.
            let buf = unsafe {
                self.umem
                    .slice_mut(frame * self.frame_size, self.frame_size)
            }
            .map_err(|_| LendError::NotAFrame {
                iova: d.iova,
                len: d.len,
            })?;
            out.push(buf);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Producer, RingLayout};

    const BASE: u64 = 0x10_0000;
    const FRAME: usize = 2048;

    fn ring() -> (Producer, Consumer) {
        let layout = RingLayout::new(0, 8).expect("layout");
        let shm = Arc::new(SharedMemory::create("ring", layout.len()).expect("shm"));
        layout.init(&shm, 0).expect("init");
        let p = layout.producer(Arc::clone(&shm)).expect("producer");
        let c = layout.consumer(shm).expect("consumer");
        (p, c)
    }

    fn lender() -> FrameLender {
        let umem = SharedMemory::create("umem", 4 * FRAME).expect("umem");
        FrameLender::new(Arc::new(umem), BASE, FRAME)
    }

    fn put(p: &mut Producer, iova: u64, len: u32) {
        p.produce(&Desc {
            iova,
            len,
            ..Desc::default()
        })
        .expect("produce");
    }

    #[test]
    fn lends_each_frame_handed_over_once_in_ring_order() {
        let (mut p, mut c) = ring();
        let mut l = lender();
        put(&mut p, BASE + 2 * FRAME as u64, 60);
        put(&mut p, BASE, 64);
        let mut descs: ArrayVec<Desc, 4> = ArrayVec::new();
        let mut frames = l.lend(&mut c, &mut descs).expect("lent");
        assert_eq!(frames.len(), 2);
        assert_eq!(descs.iter().map(|d| d.len).collect::<Vec<_>>(), [60, 64]);
        assert!(frames.iter().all(|f| f.len() == FRAME));
        frames[0][0] = 0xaa;
        frames[1][0] = 0xbb;
        drop(frames);
        c.release(2);
        // Nothing waiting: nothing lent.
        assert!(l.lend(&mut c, &mut descs).expect("empty").is_empty());
        assert!(descs.is_empty());
    }

    #[test]
    fn refuses_a_frame_twice_or_outside_the_umem() {
        for (iova, len, twice) in [
            (BASE, 64, true),
            (BASE + 1, 64, false),
            (BASE - FRAME as u64, 64, false),
            (BASE + 4 * FRAME as u64, 64, false),
            (BASE + FRAME as u64, FRAME as u32 + 1, false),
        ] {
            let (mut p, mut c) = ring();
            let mut l = lender();
            put(&mut p, BASE, 64);
            put(&mut p, iova, len);
            let mut descs: ArrayVec<Desc, 4> = ArrayVec::new();
            let err = l.lend(&mut c, &mut descs).expect_err("refused");
            let expected = if twice {
                LendError::Twice { iova, len }
            } else {
                LendError::NotAFrame { iova, len }
            };
            assert_eq!(err, expected, "{iova:#x}+{len}");
        }
    }
}
