//! The NIC ends of a VF's queue pair, whichever face the NF attached with: the
//! four rings of the native BAR, or the two rings of a memif client
//! (ARCHITECTURE.md §2). The engine's per-packet path speaks to [`Queues`] only:
//! take an empty buffer and post a frame into it (receive), take frames sent and
//! hand them back (transmit).
//!
//! A memif descriptor names a buffer as `{region, offset}` in the client's
//! regions. Region `r` is mapped in the VF's IOMMU domain at [`memif_iova`]`(r, 0)`,
//! so a descriptor becomes an IOVA and goes through the same translation and the
//! same checks as a native one: a buffer outside the client's regions is a DMA
//! fault, never obeyed.

use nfhost_sys::{Consumer, Desc, M2sRing, MemifRingError, Producer, RingError, S2mRing};
use vf_abi::memif::{DESC_FLAG_NEXT, MemifDesc};

use crate::dataplane::engine::BATCH;

pub use vf_abi::FRAME_SIZE;

/// Where memif clients' regions sit in IOVA space: VF `v`'s region `r` at
/// `MEMIF_IOVA_BASE + v << 40 + r << 32` (a memif region is at most 4 GiB, its
/// offsets being 32 bits, and a client has at most [`MEMIF_MAX_REGIONS`]).
/// Distinct per VF, so that memif hops of one `shared` chain (one domain) never
/// overlap.
pub const MEMIF_IOVA_BASE: u64 = 0x80_0000_0000;

/// Regions a memif client may add (indices 0–15).
pub const MEMIF_MAX_REGIONS: u16 = 16;

/// The IOVA a descriptor naming a region beyond [`MEMIF_MAX_REGIONS`] gets: the
/// last page, which no mapping can cover (it would wrap), so the access faults.
pub const MEMIF_NO_REGION: u64 = !0xFFF;

/// The IOVA of region 0 of the memif client on VF `vf`.
pub fn memif_base(vf: u16) -> u64 {
    MEMIF_IOVA_BASE + (u64::from(vf) << 40)
}

/// The IOVA of byte `offset` of region `region`, for a client whose region 0 is at
/// `base` ([`memif_base`]); [`MEMIF_NO_REGION`] for a region no client can have.
pub fn memif_iova(base: u64, region: u16, offset: u32) -> u64 {
    if region >= MEMIF_MAX_REGIONS {
        return MEMIF_NO_REGION;
    }
    base + (u64::from(region) << 32) + u64::from(offset)
}

/// A ring the peer broke: the queue halts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// A native ring.
    #[error(transparent)]
    Native(#[from] RingError),
    /// A memif ring.
    #[error(transparent)]
    Memif(#[from] MemifRingError),
}

/// The NIC ends of the native BAR's rings.
#[derive(Debug)]
pub struct Rings {
    /// Empty frames from the NF.
    pub fill: Consumer,
    /// Received frames to the NF.
    pub rx: Producer,
    /// Frames the NF sends.
    pub tx: Consumer,
    /// Sent frames back to the NF.
    pub completion: Producer,
}

impl Rings {
    /// The NIC ends of every ring of `bar`.
    pub fn open(bar: &nfhost_sys::Bar<nfhost_sys::Nic>) -> Result<Self, RingError> {
        Ok(Rings {
            fill: bar.fill_consumer()?,
            rx: bar.rx_producer()?,
            tx: bar.tx_consumer()?,
            completion: bar.completion_producer()?,
        })
    }
}

/// The server ends of a memif client's two rings.
#[derive(Debug)]
pub struct MemifRings {
    /// Where the client's region 0 is mapped ([`memif_base`]).
    pub base: u64,
    /// Server → client: empty buffers in, frames out.
    pub m2s: M2sRing,
    /// Client → server: frames in, buffers back.
    pub s2m: S2mRing,
}

/// A queue pair.
#[derive(Debug)]
pub enum Queues {
    /// The native face: fill, rx, tx and completion rings in the BAR.
    Native(Rings),
    /// The memif face.
    Memif(MemifRings),
}

/// An empty buffer taken for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Its IOVA.
    pub iova: u64,
    /// Its size.
    pub cap: u32,
}

impl Queues {
    /// Whether this is the native face (frames can be handed over between two
    /// native VFs of one domain; a memif client owns its buffers).
    pub fn is_native(&self) -> bool {
        matches!(self, Queues::Native(_))
    }

    /// How many frames the NF can take now (empty buffers and rx slots).
    pub fn rx_room(&mut self) -> Result<u32, QueueError> {
        match self {
            Queues::Native(r) => Ok(r.fill.available()?.min(r.rx.free()?)),
            Queues::Memif(m) => Ok(u32::from(m.m2s.available()?)),
        }
    }

    /// Whether there is a slot to post a received frame in (a native rx ring can
    /// be full while fill buffers wait).
    pub fn rx_slot(&mut self) -> Result<bool, QueueError> {
        match self {
            Queues::Native(r) => Ok(r.rx.free()? > 0),
            Queues::Memif(_) => Ok(true),
        }
    }

    /// The next empty buffer, taken: post it with [`post_rx`](Self::post_rx)
    /// (a memif buffer goes back with length 0 if no frame lands in it).
    pub fn take_buffer(&mut self) -> Result<Option<Buffer>, QueueError> {
        match self {
            Queues::Native(r) => Ok(r.fill.consume_one()?.map(|d| Buffer {
                iova: d.iova,
                cap: FRAME_SIZE,
            })),
            Queues::Memif(m) => Ok(m.m2s.peek()?.map(|d| Buffer {
                iova: memif_iova(m.base, d.region, d.offset),
                cap: d.length,
            })),
        }
    }

    /// Posts `len` bytes received into `buffer` (native: on the rx ring, with the
    /// stripped VLAN `tci`; memif has no field for it). A memif buffer posted with
    /// `len` 0 goes back unused.
    pub fn post_rx(&mut self, buffer: Buffer, len: u32, tci: u16) -> Result<(), QueueError> {
        match self {
            Queues::Native(r) => Ok(r.rx.produce(&Desc {
                iova: buffer.iova,
                len,
                flags: 0,
                vlan: tci,
            })?),
            Queues::Memif(m) => {
                m.m2s.post(len);
                Ok(())
            }
        }
    }

    /// Hands a taken buffer back without a frame (memif only: a native fill
    /// frame that could not be used is dropped with its frame).
    pub fn return_buffer(&mut self) {
        if let Queues::Memif(m) = self {
            m.m2s.post(0);
        }
    }

    /// Frames the NF has sent and the NIC not yet taken.
    pub fn tx_waiting(&mut self) -> Result<u32, QueueError> {
        match self {
            Queues::Native(r) => Ok(r.tx.available()?),
            Queues::Memif(m) => Ok(u32::from(m.s2m.available()?)),
        }
    }

    /// Takes up to `out.len()` sent frames into `out` (at most [`BATCH`]).
    /// Native descriptors are released at once (copied out; the frames stay the
    /// NIC's until completion); memif buffers are given back by
    /// [`tx_done`](Self::tx_done), after the frames were read. A chained memif
    /// descriptor is returned with length 0, which the transmit path refuses as
    /// a ring error.
    pub fn tx_take(&mut self, out: &mut [Desc]) -> Result<u32, QueueError> {
        let want = out.len().min(BATCH as usize) as u32;
        match self {
            Queues::Native(r) => {
                let n = r.tx.peek(want)?;
                for (i, d) in out.iter_mut().enumerate().take(n as usize) {
                    *d = r.tx.read(i as u32);
                }
                r.tx.release(n);
                Ok(n)
            }
            Queues::Memif(m) => {
                let n = u32::from(m.s2m.available()?).min(want);
                for (i, d) in out.iter_mut().enumerate().take(n as usize) {
                    *d = memif_tx_desc(m.base, m.s2m.read(i as u16));
                }
                Ok(n)
            }
        }
    }

    /// The NIC is done with the `completions.len()` frames last taken: native,
    /// posts them on the completion ring and returns how many fit; memif, gives
    /// the buffers back.
    pub fn tx_done(&mut self, completions: &[Desc]) -> u32 {
        let n = completions.len() as u32;
        match self {
            Queues::Native(r) => {
                let granted = r.completion.reserve(n).unwrap_or(0);
                for (i, c) in completions[..granted as usize].iter().enumerate() {
                    r.completion.write(i as u32, c);
                }
                r.completion.submit(granted);
                granted
            }
            Queues::Memif(m) => {
                m.s2m.release(n as u16);
                n
            }
        }
    }

    /// Asks the NF to signal when it next sends (`true`, before the NIC stops
    /// looking at its transmit ring), or not (`false`, while it looks every pass).
    /// Native: the tx ring's `NEED_WAKEUP`; memif: the S2M ring's interrupt mask.
    pub fn want_tx_wakeup(&self, on: bool) {
        match self {
            Queues::Native(r) => {
                if on {
                    r.tx.set_need_wakeup();
                } else {
                    r.tx.clear_need_wakeup();
                }
            }
            Queues::Memif(m) => m.s2m.want_interrupts(on),
        }
    }
}

/// A memif transmit descriptor as a native one (the IOVA of its buffer, its
/// length); a chained one gets length 0.
fn memif_tx_desc(base: u64, d: MemifDesc) -> Desc {
    let len = if d.flags & DESC_FLAG_NEXT != 0 {
        0
    } else {
        d.length
    };
    Desc {
        iova: memif_iova(base, d.region, d.offset),
        len,
        flags: 0,
        vlan: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_sit_4_gib_apart_and_vfs_never_overlap() {
        let base = memif_base(0);
        assert_eq!(memif_iova(base, 0, 0), MEMIF_IOVA_BASE);
        assert_eq!(
            memif_iova(base, 1, 0x10),
            MEMIF_IOVA_BASE + (1 << 32) + 0x10
        );
        let last = memif_iova(base, MEMIF_MAX_REGIONS - 1, u32::MAX);
        assert!(
            last < memif_base(1),
            "VF 0's last byte is below VF 1's first"
        );
        // The highest VF and region do not wrap.
        let top = memif_iova(memif_base(u16::MAX), MEMIF_MAX_REGIONS - 1, u32::MAX);
        assert!(top > MEMIF_IOVA_BASE && top < MEMIF_NO_REGION);
        // A region no client can have never lands in another VF's range.
        assert_eq!(memif_iova(base, MEMIF_MAX_REGIONS, 0), MEMIF_NO_REGION);
        assert_eq!(memif_iova(base, u16::MAX, u32::MAX), MEMIF_NO_REGION);
    }

    #[test]
    fn a_chained_descriptor_is_refused_by_length() {
        let d = MemifDesc {
            flags: DESC_FLAG_NEXT,
            length: 1500,
            ..MemifDesc::default()
        };
        assert_eq!(memif_tx_desc(0, d).len, 0);
        let d = MemifDesc { flags: 0, ..d };
        assert_eq!(memif_tx_desc(0, d).len, 1500);
    }
}
