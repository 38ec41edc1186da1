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
//! if it moved forward within bounds, otherwise it is an index jump
//! (`nfhost_sys::ring::RingError::IndexJump`).
//! Descriptor contents are whatever the peer wrote; the caller validates them
//! (IOVA, length) before acting. Every shared access is atomic, so nothing the
//! peer writes can cause a panic or an out-of-bounds access.

/// Offset of the producer index from the ring base.
pub const PRODUCER_OFFSET: usize = 0;
/// Offset of the consumer index from the ring base.
pub const CONSUMER_OFFSET: usize = 64;
/// Offset of the flags word from the ring base.
pub const FLAGS_OFFSET: usize = 128;
/// Offset of the first descriptor from the ring base.
pub const DESCS_OFFSET: usize = 192;
/// Size of one descriptor.
pub const DESC_LEN: usize = 16;
/// Required alignment of a ring base (one cache line).
pub const RING_ALIGN: usize = 64;
/// Flags bit 0: the consumer sleeps; the producer must kick its doorbell.
pub const NEED_WAKEUP: u32 = 1;
/// Largest ring: indices are `u32`, and a full ring must stay distinguishable
/// from an index jump.
pub const MAX_RING_SIZE: u32 = 1 << 31;

/// One ring descriptor, as laid out in shared memory (16 bytes, native
/// endian).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Desc {
    /// I/O virtual address of the frame in the NF's UMEM.
    pub iova: u64,
    /// Frame length in bytes.
    pub len: u32,
    /// Per-descriptor flags.
    pub flags: u16,
    /// VLAN tag (TCI), 0 if none.
    pub vlan: u16,
}

const _: () = assert!(size_of::<Desc>() == DESC_LEN);
// `Desc` is moved as two u64 words; the second word packs len/flags/vlan in
// the `#[repr(C)]` byte order of a little-endian host.
const _: () = assert!(cfg!(target_endian = "little"));

impl Desc {
    /// The second 8-byte word as laid out in shared memory: `len`, `flags`, `vlan`.
    pub fn second_word(&self) -> u64 {
        u64::from(self.len) | (u64::from(self.flags) << 32) | (u64::from(self.vlan) << 48)
    }

    /// A descriptor from its two 8-byte words.
    pub fn from_words(iova: u64, word: u64) -> Self {
        // Truncating casts pick out the packed fields.
        Self {
            iova,
            len: word as u32,
            flags: (word >> 32) as u16,
            vlan: (word >> 48) as u16,
        }
    }
}

/// Bytes a ring of `size` slots takes: its index lines plus the descriptors.
pub const fn ring_bytes(size: u32) -> usize {
    DESCS_OFFSET + size as usize * DESC_LEN
}

/// A tx descriptor flag: send the frame back out of the port it came in on
/// (the NF's `Reflect` verdict), not on to the next hop.
pub const TX_REFLECT: u16 = 1;

/// A completion descriptor flag: the NIC could not send the frame (a DMA fault,
/// a bad length); the frame is the NF's again all the same.
pub const COMPLETION_ERROR: u16 = 1;

/// Size of one UMEM frame: every descriptor's frame lives in one slot of this
/// many bytes, so a frame never crosses a slot.
pub const FRAME_SIZE: u32 = 2048;
