//! The mmap'd rings of an `AF_PACKET` link (`PACKET_RX_RING` and `PACKET_TX_RING`,
//! `TPACKET_V2`; kernel `Documentation/networking/packet_mmap.rst`): frames are
//! read and written in shared memory, with no system call per frame. The kernel
//! writes each received frame into the next free slot and marks it
//! `TP_STATUS_USER`; the reader hands the slot back by marking it
//! `TP_STATUS_KERNEL`. Frames to send are written into slots marked
//! `TP_STATUS_SEND_REQUEST`, and one `send()` per batch (submitted by the
//! [`super::WireRing`]) has the kernel send them all.
//!
//! Version 2 rather than 3: `TPACKET_V3` hands frames over a block at a time,
//! when the block is full or its timer (a millisecond at least) fires, which
//! would add up to a millisecond of latency at low rates. A V2 slot is visible
//! the moment the kernel has written it.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::io::Errno;

use super::WireError;
use super::ring::RingFrame;

/// Slots for receiving.
const RX_SLOTS: u32 = 4096;
/// Slots for sending.
const TX_SLOTS: u32 = 1024;
/// The header at the start of every slot (`tpacket2_hdr`, aligned).
const HDR: usize = 32;
/// Where a frame to send starts in its slot (`TPACKET2_HDRLEN` less the
/// `sockaddr_ll` it leaves room for).
const TX_DATA: usize = libc::TPACKET2_HDRLEN - size_of::<libc::sockaddr_ll>();
/// Bytes kept free in front of a received frame (`PACKET_RESERVE`), so an
/// 802.1Q tag can be put back without moving it.
const RESERVE: u32 = 4;

/// The two rings of one packet socket, mapped.
pub struct PacketRing {
    base: *mut u8,
    len: usize,
    slot: usize,
    rx_head: u32,
    tx_head: u32,
    tx_unsent: u32,
    tx_errors: u64,
}

// SAFETY: `base` points to this ring's own mapping (unmapped on drop), and the
// ring is used through `&mut self` only; nothing in it is tied to a thread.
unsafe impl Send for PacketRing {}

impl std::fmt::Debug for PacketRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketRing")
            .field("slot", &self.slot)
            .field("rx_head", &self.rx_head)
            .field("tx_head", &self.tx_head)
            .finish()
    }
}

fn setsockopt<T>(
    fd: BorrowedFd<'_>,
    name: i32,
    value: &T,
    what: &'static str,
) -> Result<(), WireError> {
    super::link::setsockopt(fd, libc::SOL_PACKET, name, value).map_err(|e| WireError::Io(what, e))
}

impl PacketRing {
    /// Sets up and maps the rings of packet socket `fd` for frames of up to
    /// `frame_cap` bytes.
    pub fn new(fd: BorrowedFd<'_>, frame_cap: usize) -> Result<Self, WireError> {
        let version = libc::tpacket_versions::TPACKET_V2 as i32;
        setsockopt(
            fd,
            libc::PACKET_VERSION,
            &version,
            "PACKET_VERSION (TPACKET_V2)",
        )?;
        setsockopt(fd, libc::PACKET_RESERVE, &RESERVE, "PACKET_RESERVE")?;
        // A malformed frame to send is skipped (and counted), not a stuck ring.
        setsockopt(fd, libc::PACKET_LOSS, &1i32, "PACKET_LOSS")?;
        // Header, address, the kernel's alignment slack, the reserve, the frame
        // and one byte to tell a frame that fits from one that was cut.
        let need = libc::TPACKET2_HDRLEN + 16 + RESERVE as usize + frame_cap + 1;
        let slot = need.next_power_of_two().max(2048);
        let page = 4096usize.max(slot);
        let req = |slots: u32| libc::tpacket_req {
            tp_block_size: page as u32,
            tp_block_nr: slots * slot as u32 / page as u32,
            tp_frame_size: slot as u32,
            tp_frame_nr: slots,
        };
        setsockopt(fd, libc::PACKET_RX_RING, &req(RX_SLOTS), "PACKET_RX_RING")?;
        setsockopt(fd, libc::PACKET_TX_RING, &req(TX_SLOTS), "PACKET_TX_RING")?;
        let len = (RX_SLOTS + TX_SLOTS) as usize * slot;
        // SAFETY: maps the socket's two rings, one after the other, as the kernel
        // lays them out; the mapping is owned by the returned value and unmapped
        // in its `Drop`.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(WireError::Io(
                "mapping the packet rings",
                Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO),
            ));
        }
        Ok(PacketRing {
            base: base.cast(),
            len,
            slot,
            rx_head: 0,
            tx_head: 0,
            tx_unsent: 0,
            tx_errors: 0,
        })
    }

    fn slot_at(&self, index: usize) -> *mut u8 {
        // SAFETY: `index` is below RX_SLOTS + TX_SLOTS (callers wrap it), so the
        // offset stays inside the mapping of `len` bytes.
        unsafe { self.base.add(index * self.slot) }
    }

    fn status(&self, index: usize) -> &AtomicU32 {
        // SAFETY: every slot starts with its header, whose first field is the
        // 4-byte-aligned `tp_status` that the kernel reads and writes atomically;
        // the mapping outlives `&self`.
        unsafe { AtomicU32::from_ptr(self.slot_at(index).cast()) }
    }

    fn header(&self, index: usize) -> libc::tpacket2_hdr {
        // SAFETY: the slot's header is a `tpacket2_hdr` the kernel finished
        // writing before it set `TP_STATUS_USER` (read with Acquire).
        unsafe { std::ptr::read_volatile(self.slot_at(index).cast::<libc::tpacket2_hdr>()) }
    }

    /// Whether a received frame waits.
    pub fn rx_ready(&self) -> bool {
        self.status(self.rx_head as usize).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    /// Hands up to `max` received frames to `f`, giving each slot back once `f`
    /// returns. Returns how many were handed.
    pub fn receive(&mut self, max: usize, mut f: impl FnMut(RingFrame<'_>)) -> usize {
        let mut handed = 0;
        while handed < max {
            let index = self.rx_head as usize;
            let status = self.status(index).load(Ordering::Acquire);
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            let hdr = self.header(index);
            let start = usize::from(hdr.tp_mac).saturating_sub(HDR);
            let room = self.slot - HDR;
            let captured = (hdr.tp_snaplen as usize).min(room.saturating_sub(start));
            // SAFETY: the slot past its header belongs to this reader until its
            // status goes back to TP_STATUS_KERNEL below; no other reference to it
            // exists, and it lies inside the mapping.
            let buf = unsafe { std::slice::from_raw_parts_mut(self.slot_at(index).add(HDR), room) };
            let vlan = (status & libc::TP_STATUS_VLAN_VALID != 0).then(|| {
                let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                    hdr.tp_vlan_tpid
                } else {
                    0x8100
                };
                (tpid, hdr.tp_vlan_tci)
            });
            f(RingFrame {
                buf,
                start,
                captured,
                len: hdr.tp_len as usize,
                vlan,
                partial_checksum: Some(status & libc::TP_STATUS_CSUMNOTREADY != 0),
            });
            self.status(index)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.rx_head = (self.rx_head + 1) % RX_SLOTS;
            handed += 1;
        }
        handed
    }

    /// Queues a frame of `len` bytes, written by `fill` into the next send slot.
    /// `Ok(false)` if every slot is still in the kernel's hands.
    pub fn send_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> bool,
    ) -> Result<bool, ()> {
        let index = (RX_SLOTS + self.tx_head) as usize;
        let status = self.status(index).load(Ordering::Acquire);
        if status & libc::TP_STATUS_WRONG_FORMAT != 0 {
            self.tx_errors += 1;
        } else if status != libc::TP_STATUS_AVAILABLE {
            return Ok(false);
        }
        if TX_DATA + len > self.slot {
            return Err(());
        }
        // SAFETY: the slot is available (the kernel is done with it) until its
        // status is set to SEND_REQUEST below; the range lies inside the slot,
        // past its header.
        let buf = unsafe { std::slice::from_raw_parts_mut(self.slot_at(index).add(TX_DATA), len) };
        if !fill(buf) {
            return Err(());
        }
        // SAFETY: `tp_len` is the second field of the slot's header, which the
        // kernel does not touch while the slot is available.
        unsafe { self.slot_at(index).add(4).cast::<u32>().write(len as u32) };
        self.status(index)
            .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.tx_head = (self.tx_head + 1) % TX_SLOTS;
        self.tx_unsent += 1;
        Ok(true)
    }

    /// Send slots free from the next one on, counting at most `max`.
    pub fn tx_room(&self, max: usize) -> usize {
        (0..max.min(TX_SLOTS as usize))
            .take_while(|i| {
                let index = (RX_SLOTS + (self.tx_head + *i as u32) % TX_SLOTS) as usize;
                let status = self.status(index).load(Ordering::Acquire);
                status == libc::TP_STATUS_AVAILABLE || status & libc::TP_STATUS_WRONG_FORMAT != 0
            })
            .count()
    }

    /// Frames queued since the last [`Self::take_kicks`].
    pub fn unsent(&self) -> bool {
        self.tx_unsent > 0
    }

    /// Kicks (`send()` calls) needed: one if frames were queued since the last
    /// call, which sends them all (the [`super::WireRing`] submits it).
    pub fn take_kicks(&mut self) -> u32 {
        u32::from(std::mem::take(&mut self.tx_unsent) > 0)
    }

    /// Frames the kernel refused to send (`TP_STATUS_WRONG_FORMAT`) since the
    /// last call.
    pub fn take_tx_errors(&mut self) -> u64 {
        std::mem::take(&mut self.tx_errors)
    }
}

impl Drop for PacketRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no reference into it
        // outlives `self`.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}
