//! memif rings in a client's shared memory (`vf_abi::memif` has the layout), and
//! the server's two ends of them.
//!
//! A memif client owns all the memory: its rings sit in one of its regions, and
//! every descriptor names a buffer in one of them. The server keeps one index per
//! ring (`tail`), and trusts nothing it reads: a `head` that moved backwards or
//! further than the ring holds is [`MemifRingError::IndexJump`]; descriptors are
//! returned as read, for the caller to translate and check.
//!
//! - [`M2sRing`]: server → client (the client's receive). The client advances
//!   `head` over empty buffers; the server fills the buffer at `tail`, writes its
//!   length and advances `tail`. nfhost's fill and rx rings in one.
//! - [`S2mRing`]: client → server (the client's transmit). The client advances
//!   `head` over filled buffers; the server reads them and advances `tail`, which
//!   gives them back. nfhost's tx and completion rings in one.
//!
//! Indices are 16 bits, free-running; slot = `index & (size - 1)`. Shared words are
//! only ever touched through atomics (see the [`crate::shm`] module docs).

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};

use vf_abi::memif::{
    COOKIE, COOKIE_OFFSET, DESC_LEN, DESCS_OFFSET, FLAGS_OFFSET, HEAD_OFFSET, MAX_LOG2_RING_SIZE,
    MemifDesc, RING_FLAG_MASK_INT, TAIL_OFFSET, ring_len,
};

use crate::shm::SharedMemory;

/// A memif ring that cannot be used, or a peer that broke its rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemifRingError {
    /// The ring's size is out of range.
    #[error("a ring of 2^{0} slots is larger than 2^{MAX_LOG2_RING_SIZE}")]
    TooLarge(u8),
    /// The ring does not start on a cache line.
    #[error("ring offset {0:#x} is not 64-byte aligned")]
    Misaligned(usize),
    /// The ring does not fit in its region.
    #[error("ring at {offset:#x} of {len:#x} bytes exceeds the {region_len:#x}-byte region")]
    OutOfBounds {
        /// Ring base.
        offset: usize,
        /// Ring length.
        len: usize,
        /// Region length.
        region_len: usize,
    },
    /// The ring header does not start with the memif cookie.
    #[error("ring cookie is {0:#x}, not memif's {COOKIE:#x}")]
    Cookie(u32),
    /// The client's `head` moved backwards or past what the ring holds.
    #[error("head jumped to {head} with tail at {tail} in a ring of {size}")]
    IndexJump {
        /// The head read.
        head: u16,
        /// The server's tail.
        tail: u16,
        /// Ring size.
        size: u16,
    },
}

/// A ring's memory. Invariant: the whole ring lies inside `shm`, from a 64-byte
/// aligned offset (checked in `new`), so every accessor stays inside the mapping.
#[derive(Debug)]
pub struct MemifRing {
    shm: Arc<SharedMemory>,
    offset: usize,
    size: u16,
}

impl MemifRing {
    /// The ring of `2^log2` slots at `offset` in `shm`.
    pub fn new(shm: Arc<SharedMemory>, offset: usize, log2: u8) -> Result<Self, MemifRingError> {
        if log2 > MAX_LOG2_RING_SIZE {
            return Err(MemifRingError::TooLarge(log2));
        }
        if offset % 64 != 0 {
            return Err(MemifRingError::Misaligned(offset));
        }
        let len = ring_len(log2);
        if offset.checked_add(len).is_none_or(|end| end > shm.len()) {
            return Err(MemifRingError::OutOfBounds {
                offset,
                len,
                region_len: shm.len(),
            });
        }
        Ok(MemifRing {
            shm,
            offset,
            size: 1 << log2,
        })
    }

    /// Slots in the ring.
    pub fn size(&self) -> u16 {
        self.size
    }

    fn ptr(&self, at: usize) -> *mut u8 {
        debug_assert!(at < ring_len(self.size.trailing_zeros() as u8));
        // SAFETY: `at` is below the ring's length, and the ring lies inside the
        // mapping (struct invariant), so the pointer stays inside it.
        unsafe { self.shm.as_ptr().add(self.offset + at) }
    }

    fn word16(&self, at: usize) -> &AtomicU16 {
        // SAFETY: `at` is one of the header's u16 fields (4, 6, 64), inside the
        // ring; the base is 64-aligned (checked in `new`) on a page-aligned
        // mapping, so the word is 2-aligned. The mapping lives as long as
        // `self.shm`, which outlives the borrow. Shared words are only accessed
        // atomically here; the peer is outside the Rust memory model (`shm` docs).
        unsafe { AtomicU16::from_ptr(self.ptr(at).cast::<u16>()) }
    }

    fn word32(&self, at: usize) -> &AtomicU32 {
        // SAFETY: as in `word16`: `at` is the cookie (0) or a descriptor's length
        // (128 + 16 * slot + 4), inside the ring and 4-aligned.
        unsafe { AtomicU32::from_ptr(self.ptr(at).cast::<u32>()) }
    }

    fn slot(&self, index: u16) -> [&AtomicU64; 2] {
        let at = DESCS_OFFSET + usize::from(index & (self.size - 1)) * DESC_LEN;
        let p = self.ptr(at).cast::<u64>();
        // SAFETY: slot < size, so its 16 bytes lie inside the ring and the mapping
        // (struct invariant), alive as long as `self.shm`. The base is 64-aligned
        // and descriptors are 16-byte multiples from 128, so both words are
        // 8-aligned. Accessed only atomically.
        unsafe { [AtomicU64::from_ptr(p), AtomicU64::from_ptr(p.add(1))] }
    }

    /// The cookie word.
    pub fn cookie(&self) -> u32 {
        self.word32(COOKIE_OFFSET).load(Ordering::Relaxed)
    }

    /// The ring's flags ([`RING_FLAG_MASK_INT`]).
    pub fn flags(&self) -> u16 {
        self.word16(FLAGS_OFFSET).load(Ordering::Acquire)
    }

    /// Sets the flags word.
    pub fn set_flags(&self, flags: u16) {
        self.word16(FLAGS_OFFSET).store(flags, Ordering::Release);
    }

    /// `head`, loaded with Acquire (the descriptors before it are visible).
    pub fn head(&self) -> u16 {
        self.word16(HEAD_OFFSET).load(Ordering::Acquire)
    }

    /// `tail`, loaded with Acquire.
    pub fn tail(&self) -> u16 {
        self.word16(TAIL_OFFSET).load(Ordering::Acquire)
    }

    /// Stores `head` with Release (after the descriptors it publishes).
    pub fn store_head(&self, head: u16) {
        self.word16(HEAD_OFFSET).store(head, Ordering::Release);
    }

    /// Stores `tail` with Release (after the descriptors it gives back).
    pub fn store_tail(&self, tail: u16) {
        self.word16(TAIL_OFFSET).store(tail, Ordering::Release);
    }

    /// The descriptor in the slot of `index`.
    pub fn desc(&self, index: u16) -> MemifDesc {
        let [a, b] = self.slot(index);
        MemifDesc::from_words([a.load(Ordering::Relaxed), b.load(Ordering::Relaxed)])
    }

    /// Writes the descriptor in the slot of `index`.
    pub fn write_desc(&self, index: u16, desc: &MemifDesc) {
        let [a, b] = self.slot(index);
        let [wa, wb] = desc.to_words();
        a.store(wa, Ordering::Relaxed);
        b.store(wb, Ordering::Relaxed);
    }

    /// Writes a header: the cookie, flags 0, `head` and `tail` 0 (what a client
    /// does before it announces the ring).
    pub fn init(&self) {
        self.word32(COOKIE_OFFSET).store(COOKIE, Ordering::Relaxed);
        self.set_flags(0);
        self.store_head(0);
        self.store_tail(0);
    }

    /// Checks the cookie.
    pub fn check_cookie(&self) -> Result<(), MemifRingError> {
        match self.cookie() {
            COOKIE => Ok(()),
            other => Err(MemifRingError::Cookie(other)),
        }
    }

    /// Slots between the server's `tail` and the client's `head`, if `head` did
    /// not jump.
    fn outstanding(&self, tail: u16) -> Result<u16, MemifRingError> {
        let head = self.head();
        let n = head.wrapping_sub(tail);
        if n > self.size {
            return Err(MemifRingError::IndexJump {
                head,
                tail,
                size: self.size,
            });
        }
        Ok(n)
    }
}

/// The server's end of a server → client ring: empty buffers in, frames out.
#[derive(Debug)]
pub struct M2sRing {
    ring: MemifRing,
    tail: u16,
}

impl M2sRing {
    /// Takes the ring over from its current `tail` (0 on a fresh connection).
    pub fn new(ring: MemifRing) -> Self {
        let tail = ring.tail();
        M2sRing { ring, tail }
    }

    /// Slots in the ring.
    pub fn size(&self) -> u16 {
        self.ring.size()
    }

    /// Empty buffers the client has posted.
    pub fn available(&self) -> Result<u16, MemifRingError> {
        self.ring.outstanding(self.tail)
    }

    /// The next empty buffer, if there is one. Fill it and [`post`](Self::post) it.
    pub fn peek(&self) -> Result<Option<MemifDesc>, MemifRingError> {
        if self.available()? == 0 {
            return Ok(None);
        }
        Ok(Some(self.ring.desc(self.tail)))
    }

    /// Gives the buffer at `tail` back holding `len` bytes (0: unused), and
    /// advances `tail`.
    pub fn post(&mut self, len: u32) {
        let mut d = self.ring.desc(self.tail);
        d.length = len;
        d.flags = 0;
        self.ring.write_desc(self.tail, &d);
        self.tail = self.tail.wrapping_add(1);
        self.ring.store_tail(self.tail);
    }

    /// Whether the client masked its interrupt (it polls).
    pub fn masked(&self) -> bool {
        self.ring.flags() & RING_FLAG_MASK_INT != 0
    }
}

/// The server's end of a client → server ring: frames in, buffers back.
#[derive(Debug)]
pub struct S2mRing {
    ring: MemifRing,
    tail: u16,
}

impl S2mRing {
    /// Takes the ring over from its current `tail`.
    pub fn new(ring: MemifRing) -> Self {
        let tail = ring.tail();
        S2mRing { ring, tail }
    }

    /// Frames the client has sent.
    pub fn available(&self) -> Result<u16, MemifRingError> {
        self.ring.outstanding(self.tail)
    }

    /// The `i`-th frame past `tail` (`i` below [`available`](Self::available)).
    pub fn read(&self, i: u16) -> MemifDesc {
        self.ring.desc(self.tail.wrapping_add(i))
    }

    /// Gives `n` buffers back to the client, after their frames were read.
    pub fn release(&mut self, n: u16) {
        self.tail = self.tail.wrapping_add(n);
        self.ring.store_tail(self.tail);
    }

    /// Asks the client for an interrupt when it sends (`true`: the server is
    /// about to sleep), or not (`false`: the server polls this ring).
    pub fn want_interrupts(&self, on: bool) {
        self.ring.set_flags(if on { 0 } else { RING_FLAG_MASK_INT });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(log2: u8) -> MemifRing {
        let shm = Arc::new(SharedMemory::create("memif-test", 1 << 16).unwrap());
        let r = MemifRing::new(shm, 64, log2).unwrap();
        r.init();
        r
    }

    #[test]
    fn rings_outside_their_region_or_misaligned_are_refused() {
        let shm = Arc::new(SharedMemory::create("memif-test", 4096).unwrap());
        assert!(matches!(
            MemifRing::new(shm.clone(), 0, 10),
            Err(MemifRingError::OutOfBounds { .. })
        ));
        assert_eq!(
            MemifRing::new(shm.clone(), 8, 2).unwrap_err(),
            MemifRingError::Misaligned(8)
        );
        assert_eq!(
            MemifRing::new(shm.clone(), 0, 16).unwrap_err(),
            MemifRingError::TooLarge(16)
        );
        let r = MemifRing::new(shm, 4096 - 128 - 16 * 4, 2).unwrap();
        assert_eq!(r.check_cookie(), Err(MemifRingError::Cookie(0)));
        r.init();
        assert_eq!(r.check_cookie(), Ok(()));
    }

    #[test]
    fn m2s_fills_what_the_client_posted_and_wraps() {
        let client = ring(2);
        let shared = MemifRing {
            shm: client.shm.clone(),
            offset: client.offset,
            size: client.size,
        };
        let mut server = M2sRing::new(shared);
        assert_eq!(server.peek(), Ok(None));
        for round in 0u16..40 {
            let d = MemifDesc {
                region: 1,
                offset: u32::from(round) * 2048,
                length: 2048,
                ..MemifDesc::default()
            };
            client.write_desc(round, &d);
            client.store_head(round.wrapping_add(1));
            assert_eq!(server.peek(), Ok(Some(d)));
            server.post(60);
            assert_eq!(client.tail(), round.wrapping_add(1));
            assert_eq!(client.desc(round).length, 60);
        }
    }

    #[test]
    fn a_head_that_jumps_is_an_error_not_a_read() {
        let client = ring(2);
        let server = S2mRing::new(MemifRing {
            shm: client.shm.clone(),
            offset: client.offset,
            size: client.size,
        });
        client.store_head(5);
        assert_eq!(
            server.available(),
            Err(MemifRingError::IndexJump {
                head: 5,
                tail: 0,
                size: 4
            })
        );
        client.store_head(u16::MAX);
        assert!(server.available().is_err());
        client.store_head(4);
        assert_eq!(server.available(), Ok(4));
    }

    #[test]
    fn s2m_reads_then_gives_back_and_sets_the_interrupt_mask() {
        let client = ring(3);
        let mut server = S2mRing::new(MemifRing {
            shm: client.shm.clone(),
            offset: client.offset,
            size: client.size,
        });
        for i in 0..3u16 {
            client.write_desc(
                i,
                &MemifDesc {
                    length: 100 + u32::from(i),
                    ..MemifDesc::default()
                },
            );
        }
        client.store_head(3);
        assert_eq!(server.available(), Ok(3));
        assert_eq!(server.read(2).length, 102);
        server.release(3);
        assert_eq!(client.tail(), 3);
        assert_eq!(server.available(), Ok(0));
        server.want_interrupts(false);
        assert_eq!(client.flags(), RING_FLAG_MASK_INT);
        server.want_interrupts(true);
        assert_eq!(client.flags(), 0);
    }
}
