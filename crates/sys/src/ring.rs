//! Single-producer/single-consumer descriptor rings in shared memory, laid
//! out and driven like AF_XDP rings (kernel `Documentation/networking/af_xdp.rst`,
//! libxdp `xsk.h`).
//!
//! Layout at a 64-byte-aligned base offset:
//!
//! | offset | field |
//! |---|---|
//! | 0   | producer index, `u32`, own cache line |
//! | 64  | consumer index, `u32`, own cache line |
//! | 128 | flags, `u32`, own cache line (bit 0 = [`NEED_WAKEUP`]) |
//! | 192 | `size` descriptors of 16 bytes ([`Desc`]) |
//!
//! Indices run freely over `u32` and wrap; slot = `index & (size - 1)`.
//!
//! Ordering: the producer writes descriptors, then stores its index with
//! Release; the consumer loads that index with Acquire, then reads the
//! descriptors. Symmetrically the consumer stores its index with Release
//! after it has finished reading the slots, and the producer loads it with
//! Acquire before reusing them.
//!
//! The two sides distrust each other. Each side keeps its own index locally
//! and never reloads it from shared memory; the peer's index is accepted only
//! if it moved forward within bounds, otherwise [`RingError::IndexJump`].
//! Descriptor contents are whatever the peer wrote; the caller validates them
//! (IOVA, length) before acting. Every shared access is atomic, so nothing the
//! peer writes can cause a panic or an out-of-bounds access.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use crate::shm::SharedMemory;
pub use vf_abi::ring::{
    CONSUMER_OFFSET, DESC_LEN, DESCS_OFFSET, Desc, FLAGS_OFFSET, MAX_RING_SIZE, NEED_WAKEUP,
    PRODUCER_OFFSET, RING_ALIGN,
};

/// Errors from ring setup and operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The ring size is not a power of two in `1..=2^31`.
    #[error("ring size {0} is not a power of two in 1..=2^31")]
    BadSize(u32),
    /// The ring base is not cache-line aligned.
    #[error("ring offset {0:#x} is not 64-byte aligned")]
    Misaligned(usize),
    /// The ring does not fit in the shared memory region.
    #[error("ring at {offset:#x} of {len:#x} bytes exceeds the {region_len:#x}-byte region")]
    OutOfBounds {
        /// Ring base.
        offset: usize,
        /// Ring length in bytes.
        len: usize,
        /// Region length in bytes.
        region_len: usize,
    },
    /// No free slot.
    #[error("ring is full")]
    Full,
    /// The peer published an index that is not a legal step forward.
    #[error("ring index jump: producer {producer}, consumer {consumer}, size {size}")]
    IndexJump {
        /// Producer index involved.
        producer: u32,
        /// Consumer index involved.
        consumer: u32,
        /// Ring size.
        size: u32,
    },
}

/// Where a ring sits in a shared memory region and how many slots it has.
/// Validated on construction (power-of-two size, aligned base); bounds are
/// checked against a region when a handle is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingLayout {
    offset: usize,
    size: u32,
}

impl RingLayout {
    /// A ring of `size` slots at byte `offset`.
    pub fn new(offset: usize, size: u32) -> Result<Self, RingError> {
        if !size.is_power_of_two() || size > MAX_RING_SIZE {
            return Err(RingError::BadSize(size));
        }
        if offset % RING_ALIGN != 0 {
            return Err(RingError::Misaligned(offset));
        }
        Ok(Self { offset, size })
    }

    /// Bytes taken by a ring of `size` slots.
    pub const fn bytes_for(size: u32) -> usize {
        vf_abi::ring::ring_bytes(size)
    }

    /// Base offset.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of slots.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Bytes taken by this ring.
    pub fn len(&self) -> usize {
        Self::bytes_for(self.size)
    }

    /// Always false: a ring has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Sets both indices to `start_index` and clears the flags. Done by the
    /// side that owns the region before sharing it, or on reset with no
    /// handles alive. Tests use a start near `u32::MAX` to exercise
    /// wrap-around.
    pub fn init(&self, shm: &SharedMemory, start_index: u32) -> Result<(), RingError> {
        let mem = RingMem::new(shm, *self)?;
        mem.index(PRODUCER_OFFSET)
            .store(start_index, Ordering::Release);
        mem.index(CONSUMER_OFFSET)
            .store(start_index, Ordering::Release);
        mem.index(FLAGS_OFFSET).store(0, Ordering::Release);
        Ok(())
    }

    /// Attaches the producer side. Only one producer may exist per ring;
    /// a second one breaks the protocol (though never memory safety).
    pub fn producer(&self, shm: Arc<SharedMemory>) -> Result<Producer, RingError> {
        let mem = RingMem::new(shm, *self)?;
        let prod = mem.index(PRODUCER_OFFSET).load(Ordering::Acquire);
        let cons = mem.index(CONSUMER_OFFSET).load(Ordering::Acquire);
        check_outstanding(prod, cons, self.size)?;
        Ok(Producer {
            mem,
            prod,
            cached_cons: cons,
            reserved: 0,
        })
    }

    /// Attaches the consumer side. Only one consumer may exist per ring.
    pub fn consumer(&self, shm: Arc<SharedMemory>) -> Result<Consumer, RingError> {
        let mem = RingMem::new(shm, *self)?;
        let prod = mem.index(PRODUCER_OFFSET).load(Ordering::Acquire);
        let cons = mem.index(CONSUMER_OFFSET).load(Ordering::Acquire);
        check_outstanding(prod, cons, self.size)?;
        Ok(Consumer {
            mem,
            cons,
            cached_prod: prod,
        })
    }
}

impl RingLayout {
    /// The IOVAs of the descriptors between the published consumer and producer
    /// indices of this ring in `shm`: what it holds, read while neither side moves.
    pub fn outstanding(&self, shm: &SharedMemory) -> Result<Vec<u64>, RingError> {
        let mem = RingMem::new(shm, *self)?;
        let (cons, n) = published(&mem, self.size)?;
        Ok((0..n)
            .map(|i| mem.read_desc(cons.wrapping_add(i)).iova)
            .collect())
    }

    /// How many descriptors this ring in `shm` holds, by its published indices.
    pub fn outstanding_len(&self, shm: &SharedMemory) -> Result<u32, RingError> {
        let mem = RingMem::new(shm, *self)?;
        published(&mem, self.size).map(|(_, n)| n)
    }
}

/// The published consumer index of a ring and how many descriptors follow it.
fn published(mem: &RingMem<&SharedMemory>, size: u32) -> Result<(u32, u32), RingError> {
    let prod = mem.index(PRODUCER_OFFSET).load(Ordering::Acquire);
    let cons = mem.index(CONSUMER_OFFSET).load(Ordering::Acquire);
    check_outstanding(prod, cons, size)?;
    Ok((cons, prod.wrapping_sub(cons)))
}

fn check_outstanding(producer: u32, consumer: u32, size: u32) -> Result<(), RingError> {
    if producer.wrapping_sub(consumer) > size {
        return Err(RingError::IndexJump {
            producer,
            consumer,
            size,
        });
    }
    Ok(())
}

/// A ring's memory. Invariant: `layout` lies inside `shm` (checked in
/// `new`, and neither field changes afterwards), so every accessor stays
/// inside the mapping.
#[derive(Debug)]
struct RingMem<S> {
    shm: S,
    layout: RingLayout,
}

impl<S: Deref<Target = SharedMemory>> RingMem<S> {
    fn new(shm: S, layout: RingLayout) -> Result<Self, RingError> {
        let in_bounds = layout
            .offset
            .checked_add(layout.len())
            .is_some_and(|end| end <= shm.len());
        if !in_bounds {
            return Err(RingError::OutOfBounds {
                offset: layout.offset,
                len: layout.len(),
                region_len: shm.len(),
            });
        }
        Ok(Self { shm, layout })
    }

    /// Pointer to byte `offset` of the ring; `offset < layout.len()`.
    fn ptr(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset < self.layout.len());
        // SAFETY: layout.offset + offset < layout.offset + layout.len() <=
        // shm.len() (struct invariant), so the result stays inside the
        // mapping.
        unsafe { self.shm.as_ptr().add(self.layout.offset + offset) }
    }

    /// One of the three header words.
    fn index(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset <= FLAGS_OFFSET && offset % RING_ALIGN == 0);
        // SAFETY: the word lies inside the mapping (struct invariant), which
        // `self.shm` keeps alive as long as the returned borrow. The ring base
        // is 64-aligned (page-aligned mapping, offset checked by
        // `RingLayout::new`), so the word is 4-aligned. This crate accesses
        // ring memory only through atomics; the peer process is outside the
        // Rust memory model (see the `shm` module docs).
        unsafe { AtomicU32::from_ptr(self.ptr(offset).cast::<u32>()) }
    }

    /// The two 8-byte words of the slot for `index`.
    fn slot(&self, index: u32) -> [&AtomicU64; 2] {
        let slot = (index & (self.layout.size - 1)) as usize;
        let p = self.ptr(DESCS_OFFSET + slot * DESC_LEN).cast::<u64>();
        // SAFETY: slot < size, so the 16 bytes at DESCS_OFFSET + slot * 16
        // lie inside the ring and the mapping (struct invariant), kept alive
        // by `self.shm` as long as the borrows. The base is 64-aligned and
        // DESCS_OFFSET, DESC_LEN are multiples of 16, so both words are
        // 8-aligned. Slots are only accessed atomically by this crate.
        unsafe { [AtomicU64::from_ptr(p), AtomicU64::from_ptr(p.add(1))] }
    }

    fn write_desc(&self, index: u32, desc: &Desc) {
        // Relaxed: publication is ordered by the Release store of the
        // producer index that follows.
        let [a, b] = self.slot(index);
        a.store(desc.iova, Ordering::Relaxed);
        b.store(desc.second_word(), Ordering::Relaxed);
    }

    fn read_desc(&self, index: u32) -> Desc {
        // Relaxed: ordered after the Acquire load of the producer index.
        let [a, b] = self.slot(index);
        Desc::from_words(a.load(Ordering::Relaxed), b.load(Ordering::Relaxed))
    }
}

/// Producer handle of a ring. Keeps its own index and a cached copy of the
/// consumer's, reloading it only when the cache says the ring is full.
#[derive(Debug)]
pub struct Producer {
    mem: RingMem<Arc<SharedMemory>>,
    /// Index published to the consumer.
    prod: u32,
    /// Last consumer index seen and accepted.
    cached_cons: u32,
    /// Slots reserved past `prod`, not yet submitted.
    reserved: u32,
}

impl Producer {
    /// Ring size in slots.
    pub fn size(&self) -> u32 {
        self.mem.layout.size
    }

    fn cached_free(&self) -> u32 {
        // prod - cached_cons <= size is an invariant, reserved fits in the rest.
        self.mem.layout.size - self.prod.wrapping_sub(self.cached_cons) - self.reserved
    }

    fn reload_consumer(&mut self) -> Result<(), RingError> {
        let cons = self.mem.index(CONSUMER_OFFSET).load(Ordering::Acquire);
        // Legal only within [cached_cons, prod]: the consumer cannot step back
        // or past what was published.
        if cons.wrapping_sub(self.cached_cons) > self.prod.wrapping_sub(self.cached_cons) {
            return Err(RingError::IndexJump {
                producer: self.prod,
                consumer: cons,
                size: self.mem.layout.size,
            });
        }
        self.cached_cons = cons;
        Ok(())
    }

    /// Free slots, after reloading the consumer index.
    pub fn free(&mut self) -> Result<u32, RingError> {
        self.reload_consumer()?;
        Ok(self.cached_free())
    }

    /// Reserves up to `n` slots; returns how many were granted (maybe 0).
    /// Fill them with [`write`](Self::write) and publish with
    /// [`submit`](Self::submit).
    pub fn reserve(&mut self, n: u32) -> Result<u32, RingError> {
        if self.cached_free() < n {
            self.reload_consumer()?;
        }
        let granted = n.min(self.cached_free());
        self.reserved += granted;
        Ok(granted)
    }

    /// Writes reserved slot `i` (0-based from the first unsubmitted slot).
    /// `i` must be below the reserved count; a larger `i` is a bug in the
    /// caller, caught in debug builds, and in release writes a slot the
    /// consumer may own (never outside the ring).
    pub fn write(&mut self, i: u32, desc: &Desc) {
        debug_assert!(i < self.reserved, "slot {i} not reserved");
        self.mem.write_desc(self.prod.wrapping_add(i), desc);
    }

    /// Publishes the first `n` reserved slots and drops the rest of the
    /// reservation.
    pub fn submit(&mut self, n: u32) {
        debug_assert!(n <= self.reserved, "submitting {n} unreserved slots");
        let n = n.min(self.reserved);
        self.prod = self.prod.wrapping_add(n);
        self.reserved = 0;
        // Release: the descriptor writes above happen-before the consumer's
        // Acquire load that observes this index.
        self.mem
            .index(PRODUCER_OFFSET)
            .store(self.prod, Ordering::Release);
    }

    /// Produces one descriptor.
    pub fn produce(&mut self, desc: &Desc) -> Result<(), RingError> {
        if self.reserve(1)? == 0 {
            return Err(RingError::Full);
        }
        self.write(0, desc);
        self.submit(1);
        Ok(())
    }

    /// Whether the consumer asked to be woken (flags bit [`NEED_WAKEUP`]).
    /// Call after [`submit`](Self::submit); if true, ring the doorbell.
    pub fn needs_wakeup(&self) -> bool {
        // Pairs with the fence in `Consumer::set_need_wakeup`: either we see
        // the flag, or the consumer sees our submitted index.
        fence(Ordering::SeqCst);
        self.mem.index(FLAGS_OFFSET).load(Ordering::Acquire) & NEED_WAKEUP != 0
    }
}

/// Consumer handle of a ring. Keeps its own index and a cached copy of the
/// producer's, reloading it only when the cache runs dry.
#[derive(Debug)]
pub struct Consumer {
    mem: RingMem<Arc<SharedMemory>>,
    /// Index published to the producer.
    cons: u32,
    /// Last producer index seen and accepted.
    cached_prod: u32,
}

impl Consumer {
    /// Ring size in slots.
    pub fn size(&self) -> u32 {
        self.mem.layout.size
    }

    fn cached_available(&self) -> u32 {
        self.cached_prod.wrapping_sub(self.cons)
    }

    fn reload_producer(&mut self) -> Result<(), RingError> {
        let prod = self.mem.index(PRODUCER_OFFSET).load(Ordering::Acquire);
        // Legal only within [cached_prod, cons + size]: the producer cannot
        // step back over published slots or lap the consumer.
        let limit = self.cons.wrapping_add(self.mem.layout.size);
        if prod.wrapping_sub(self.cached_prod) > limit.wrapping_sub(self.cached_prod) {
            return Err(RingError::IndexJump {
                producer: prod,
                consumer: self.cons,
                size: self.mem.layout.size,
            });
        }
        self.cached_prod = prod;
        Ok(())
    }

    /// Descriptors ready, after reloading the producer index.
    pub fn available(&mut self) -> Result<u32, RingError> {
        self.reload_producer()?;
        Ok(self.cached_available())
    }

    /// Makes up to `n` descriptors readable; returns how many (maybe 0).
    /// Read them with [`read`](Self::read), then [`release`](Self::release).
    pub fn peek(&mut self, n: u32) -> Result<u32, RingError> {
        if self.cached_available() < n {
            self.reload_producer()?;
        }
        Ok(n.min(self.cached_available()))
    }

    /// Reads descriptor `i` (0-based from the first unreleased one). `i` must
    /// be below what [`peek`](Self::peek) returned; a larger `i` is a bug in
    /// the caller, caught in debug builds, and in release reads a stale slot
    /// (never outside the ring).
    pub fn read(&self, i: u32) -> Desc {
        debug_assert!(i < self.cached_available(), "slot {i} not peeked");
        self.mem.read_desc(self.cons.wrapping_add(i))
    }

    /// Hands `n` slots back to the producer.
    pub fn release(&mut self, n: u32) {
        debug_assert!(n <= self.cached_available(), "releasing {n} unpeeked slots");
        let n = n.min(self.cached_available());
        self.cons = self.cons.wrapping_add(n);
        // Release: our reads of the slots happen-before the producer reuses
        // them.
        self.mem
            .index(CONSUMER_OFFSET)
            .store(self.cons, Ordering::Release);
    }

    /// Takes one descriptor, if any.
    pub fn consume_one(&mut self) -> Result<Option<Desc>, RingError> {
        if self.peek(1)? == 0 {
            return Ok(None);
        }
        let desc = self.read(0);
        self.release(1);
        Ok(Some(desc))
    }

    /// Asks the producer for a doorbell (sets [`NEED_WAKEUP`]). Before
    /// sleeping, check [`available`](Self::available) once more: a
    /// descriptor submitted just before the flag became visible would
    /// otherwise be missed.
    pub fn set_need_wakeup(&self) {
        self.mem
            .index(FLAGS_OFFSET)
            .fetch_or(NEED_WAKEUP, Ordering::SeqCst);
        // Store-load barrier against the producer's index store; pairs with
        // the fence in `Producer::needs_wakeup`.
        fence(Ordering::SeqCst);
    }

    /// Clears [`NEED_WAKEUP`] (the consumer is polling).
    pub fn clear_need_wakeup(&self) {
        self.mem
            .index(FLAGS_OFFSET)
            .fetch_and(!NEED_WAKEUP, Ordering::Release);
    }

    /// Whether [`NEED_WAKEUP`] is currently set.
    pub fn need_wakeup(&self) -> bool {
        self.mem.index(FLAGS_OFFSET).load(Ordering::Acquire) & NEED_WAKEUP != 0
    }
}

#[cfg(test)]
mod tests;
