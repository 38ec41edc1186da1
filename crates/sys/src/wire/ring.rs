//! The io_uring that drives a wire's links. A TAP has a fixed set of receive
//! buffers kept in flight (`IORING_OP_READ`) and shares a pool of transmit buffers
//! (`IORING_OP_WRITE`), submitted in batches with one `io_uring_enter` per engine
//! poll. Completions signal an eventfd so that an idle engine can sleep.
//!
//! A packet socket ([`super::packet_ring`]) and an `AF_XDP` socket need no
//! operation per frame: their frames are read straight off their rx ring and
//! written onto their tx ring, and one call per flush has the kernel send a
//! batch (from an io_uring worker, see [`WireRing::flush`]). The io_uring only
//! watches such a socket (`IORING_OP_POLL_ADD`, armed by
//! [`WireRing::prepare_to_sleep`]), so that a frame arriving while the engine
//! sleeps wakes it through the same eventfd.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use io_uring::{IoUring, opcode, squeue, types};

use super::WireError;
use super::link::{Link, LinkKind, dup};
use super::packet_ring::PacketRing;
use super::xsk::{SendOutcome, Xsk};
use crate::fd::EventFd;

/// Bytes kept free in front of every received frame, so that an 802.1Q tag can
/// be put in (by the ring, from a packet ring slot's header, or by the caller) without
/// moving the frame.
pub const HEADROOM: usize = 4;
/// Receive buffers kept in flight per link.
pub const RX_PER_LINK: usize = 128;
/// Transmit buffers.
pub const TX_SLOTS: usize = 512;
/// Links one ring drives.
pub const MAX_LINKS: usize = 8;

const TX_BIT: u64 = 1 << 63;
const CANCEL_BIT: u64 = 1 << 62;
const POLL_BIT: u64 = 1 << 61;
const KICK_BIT: u64 = 1 << 60;

/// What one completed receive holds.
#[derive(Debug)]
pub enum Received<'a> {
    /// A frame, 802.1Q tag (if any) inline.
    Frame(RxFrame<'a>),
    /// A frame longer than the ring's frame capacity; its length (from a packet
    /// socket, without a tag the kernel took out; from a TAP, which cannot tell,
    /// the capacity plus one). Nothing of it is handed on.
    Oversize(usize),
}

/// A received frame in its buffer, with headroom for one tag.
#[derive(Debug)]
pub struct RxFrame<'a> {
    buf: &'a mut [u8],
    start: usize,
    end: usize,
    partial_checksum: Option<bool>,
}

/// A frame as a link with its own rings (a packet ring slot, an `AF_XDP` chunk)
/// hands it over, before [`WireRing::receive`] makes it a [`Received`].
#[derive(Debug)]
pub(super) struct RingFrame<'a> {
    /// The slot or chunk.
    pub buf: &'a mut [u8],
    /// Where the frame starts in `buf`.
    pub start: usize,
    /// How many of its bytes are there.
    pub captured: usize,
    /// How long it was on the wire, without a tag the kernel took out.
    pub len: usize,
    /// The tag the kernel took out (`TP_STATUS_VLAN_VALID`): TPID and TCI.
    pub vlan: Option<(u16, u16)>,
    /// Whether its transport checksum is partial, if the link can tell.
    pub partial_checksum: Option<bool>,
}

impl RxFrame<'_> {
    /// The frame's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The frame's bytes, to edit in place.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// Whether the kernel handed the frame over with its transport checksum not
    /// yet computed (`TP_STATUS_CSUMNOTREADY`: the sender left it to an
    /// offload); `None` where the link cannot tell (`AF_XDP` carries no
    /// checksum state).
    pub fn partial_checksum(&self) -> Option<bool> {
        self.partial_checksum
    }

    /// Inserts an 802.1Q tag (`tpid`, `tci`) after the MAC addresses. False if
    /// there is no headroom left or the frame is shorter than two addresses.
    pub fn push_tag(&mut self, tpid: u16, tci: u16) -> bool {
        if self.start < 4 || self.end - self.start < 12 {
            return false;
        }
        self.buf
            .copy_within(self.start..self.start + 12, self.start - 4);
        self.start -= 4;
        let at = self.start + 12;
        self.buf[at..at + 2].copy_from_slice(&tpid.to_be_bytes());
        self.buf[at + 2..at + 4].copy_from_slice(&tci.to_be_bytes());
        true
    }
}

/// Ring-level counts (the caller counts frames).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RingStats {
    /// Receives that failed (the buffer is parked until [`WireRing::rearm`]).
    pub rx_errors: u64,
    /// Transmits that failed or were cut short.
    pub tx_errors: u64,
    /// The last error seen, as an errno.
    pub last_errno: i32,
}

struct RxSlot {
    link: usize,
    buf: Box<[u8]>,
    busy: bool,
    parked: bool,
}

struct TxSlot {
    buf: Box<[u8]>,
    len: usize,
    busy: bool,
}

/// The wire's io_uring: owns its links and every buffer the kernel may write to.
pub struct WireRing {
    ring: IoUring,
    links: Vec<Link>,
    rx: Box<[RxSlot]>,
    tx: Box<[TxSlot]>,
    tx_free: Vec<u32>,
    queued: u32,
    eventfd: EventFd,
    frame_cap: usize,
    stats: RingStats,
    /// Per link: the socket poll of a link with its own rings is in flight.
    polling: Vec<bool>,
    /// Per link: a packet socket's mapped rings.
    packet: Vec<Option<PacketRing>>,
    /// Per link: send kicks in flight, and whether another is due once they
    /// complete (the kernel had more to send than the calls sent).
    kicking: Vec<u32>,
    rekick: Vec<bool>,
}

impl std::fmt::Debug for WireRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireRing")
            .field("links", &self.links)
            .field("frame_cap", &self.frame_cap)
            .field("stats", &self.stats)
            .finish()
    }
}

impl WireRing {
    /// Sets up the ring for `links`, receiving frames of up to `frame_cap`
    /// bytes (with one 802.1Q tag), and arms every receive.
    pub fn new(links: Vec<Link>, frame_cap: usize) -> Result<Self, WireError> {
        if links.is_empty() || links.len() > MAX_LINKS {
            return Err(WireError::LinkCount(links.len()));
        }
        let in_flight = links.len() * RX_PER_LINK + TX_SLOTS;
        // The completion queue (twice the submission queue) must hold every
        // operation in flight at once.
        let entries = (in_flight as u32).next_power_of_two().max(64);
        let ring = IoUring::new(entries).map_err(|e| {
            WireError::Uring(
                "io_uring_setup (a container's seccomp profile may block io_uring)",
                e,
            )
        })?;
        let eventfd = EventFd::new().map_err(WireError::EventFd)?;
        ring.submitter()
            .register_eventfd(eventfd.as_fd().as_raw_fd())
            .map_err(|e| WireError::Uring("registering the eventfd", e))?;
        let packet = links
            .iter()
            .map(|l| {
                (l.kind() == LinkKind::Packet)
                    .then(|| PacketRing::new(l.as_fd(), frame_cap))
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rx = (0..links.len())
            .filter(|&link| links[link].kind() == LinkKind::Tap)
            .flat_map(|link| (0..RX_PER_LINK).map(move |_| link))
            .map(|link| RxSlot {
                link,
                // One byte more than the largest frame: a TAP read that fills it
                // was a longer frame, cut short.
                buf: vec![0u8; HEADROOM + frame_cap + 1].into_boxed_slice(),
                busy: false,
                parked: false,
            })
            .collect();
        let tx = (0..TX_SLOTS)
            .map(|_| TxSlot {
                buf: vec![0u8; frame_cap].into_boxed_slice(),
                len: 0,
                busy: false,
            })
            .collect();
        let polling = vec![false; links.len()];
        let mut wire = WireRing {
            ring,
            kicking: vec![0; polling.len()],
            rekick: polling.clone(),
            polling,
            packet,
            links,
            rx,
            tx,
            tx_free: (0..TX_SLOTS as u32).rev().collect(),
            queued: 0,
            eventfd,
            frame_cap,
            stats: RingStats::default(),
        };
        for i in 0..wire.rx.len() {
            wire.arm(i)?;
        }
        wire.flush()?;
        Ok(wire)
    }

    /// The links, in the order given.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// The largest frame handed on or sent.
    pub fn frame_cap(&self) -> usize {
        self.frame_cap
    }

    /// Ring-level error counts.
    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// A duplicate of the eventfd signalled on every completion, to sleep on.
    pub fn wakeup_fd(&self) -> Result<OwnedFd, WireError> {
        dup(self.eventfd.as_fd())
    }

    /// Resets the wakeup eventfd. Call before checking [`Self::has_completions`]
    /// and going to sleep on [`Self::wakeup_fd`].
    pub fn clear_wakeup(&self) {
        let _ = self.eventfd.try_read();
    }

    /// Whether completions (or frames on an `AF_XDP` link) are waiting.
    pub fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
            || self
                .links
                .iter()
                .any(|l| l.xsk().is_some_and(|x| x.rx_ready()))
            || self.packet.iter().flatten().any(PacketRing::rx_ready)
    }

    /// Hands up to `max` received frames to `f` with the index of their link,
    /// and re-arms their buffers. Transmit completions found on the way free
    /// their buffers. Returns the number of frames (and oversize reports) handed.
    pub fn receive(&mut self, max: usize, mut f: impl FnMut(usize, Received<'_>)) -> usize {
        let mut handed = 0;
        while handed < max {
            let mut batch = [(0u64, 0i32); 64];
            let mut n = 0;
            for cqe in self.ring.completion() {
                batch[n] = (cqe.user_data(), cqe.result());
                n += 1;
                if n == batch.len() {
                    break;
                }
            }
            if n == 0 {
                break;
            }
            for &(user_data, result) in &batch[..n] {
                if user_data & CANCEL_BIT != 0 {
                    continue;
                }
                if user_data & TX_BIT != 0 {
                    self.tx_done((user_data & !TX_BIT) as usize, result);
                    continue;
                }
                if user_data & POLL_BIT != 0 {
                    if let Some(p) = self.polling.get_mut((user_data & !POLL_BIT) as usize) {
                        *p = false;
                    }
                    continue;
                }
                if user_data & KICK_BIT != 0 {
                    self.kicked((user_data & !KICK_BIT) as usize, result);
                    continue;
                }
                let i = user_data as usize;
                let Some(slot) = self.rx.get_mut(i) else {
                    continue;
                };
                slot.busy = false;
                if result < 0 {
                    // A failing receive (the interface went away, say) would fail
                    // again at once: park the buffer until the caller re-arms.
                    self.stats.rx_errors += 1;
                    self.stats.last_errno = -result;
                    slot.parked = true;
                    continue;
                }
                let len = result as usize;
                let link = slot.link;
                if len > self.frame_cap {
                    f(link, Received::Oversize(len));
                } else {
                    let frame = RxFrame {
                        buf: &mut slot.buf,
                        start: HEADROOM,
                        end: HEADROOM + len,
                        // A TAP read gets the frame with its checksum complete.
                        partial_checksum: Some(false),
                    };
                    f(link, Received::Frame(frame));
                }
                handed += 1;
                if self.arm(i).is_err() {
                    self.rx[i].parked = true;
                }
            }
        }
        for link in 0..self.links.len() {
            if handed >= max {
                break;
            }
            let frame_cap = self.frame_cap;
            let hand = |frame: RingFrame<'_>| hand_over(&mut f, link, frame_cap, frame);
            if let Some(rings) = &mut self.packet[link] {
                handed += rings.receive(max - handed, hand);
            } else if let Some(xsk) = self.links[link].xsk_mut() {
                handed += xsk.receive(max - handed, hand);
            }
        }
        handed
    }

    /// Before the caller sleeps on [`Self::wakeup_fd`]: resets the eventfd, arms
    /// the socket polls of links with their own rings (so that a frame arriving
    /// now wakes the sleeper), submits what is queued, and tells whether anything
    /// is waiting already (then do not sleep).
    ///
    /// The polls are armed here only, not on every pass, and not while a send
    /// kick is in flight: polling an `AF_XDP` socket in copy mode also sends its
    /// queued frames, in the polling thread (the kernel's `xsk_poll`), which is
    /// the work the send kicks move out of the engine's thread.
    pub fn prepare_to_sleep(&mut self) -> Result<bool, WireError> {
        self.clear_wakeup();
        self.flush()?;
        for link in 0..self.links.len() {
            // A link with a send kick in flight is not polled: the kick's
            // completion wakes the sleeper, and then the poll finds nothing left
            // to send.
            if self.kicking[link] == 0 {
                self.watch(link)?;
            }
        }
        self.flush()?;
        Ok(self.has_completions())
    }

    /// Arms the poll of a socket with its own rings, unless it is in flight.
    fn watch(&mut self, link: usize) -> Result<(), WireError> {
        if self.polling[link] || self.links[link].kind() == LinkKind::Tap {
            return Ok(());
        }
        let fd = types::Fd(self.links[link].as_fd().as_raw_fd());
        let entry = opcode::PollAdd::new(fd, libc::POLLIN as u32)
            .build()
            .user_data(POLL_BIT | link as u64);
        self.push(&entry)?;
        self.polling[link] = true;
        Ok(())
    }

    /// Re-arms receive buffers parked after errors (call now and then, e.g.
    /// when a link comes back up).
    pub fn rearm(&mut self) -> Result<(), WireError> {
        for i in 0..self.rx.len() {
            if self.rx[i].parked && !self.rx[i].busy {
                self.rx[i].parked = false;
                self.arm(i)?;
            }
        }
        Ok(())
    }

    /// Sends a frame of `len` bytes on link `link`, written by `fill` straight
    /// into a transmit buffer. `fill` returns false to abandon the frame.
    pub fn send_with(
        &mut self,
        link: usize,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> bool,
    ) -> Result<(), SendError> {
        if link >= self.links.len() {
            return Err(SendError::NoSuchLink(link));
        }
        if len > self.frame_cap {
            return Err(SendError::TooLong(len));
        }
        if let Some(rings) = &mut self.packet[link] {
            return match rings.send_with(len, fill) {
                Ok(true) => Ok(()),
                Ok(false) => Err(SendError::Busy),
                Err(()) => Err(SendError::Abandoned),
            };
        }
        if let Some(xsk) = self.links[link].xsk_mut() {
            return xsk.send_with(len, fill).map_err(|e| match e {
                SendOutcome::Busy => SendError::Busy,
                SendOutcome::Abandoned => SendError::Abandoned,
            });
        }
        let Some(&i) = self.tx_free.last() else {
            return Err(SendError::Busy);
        };
        let slot = &mut self.tx[i as usize];
        if !fill(&mut slot.buf[..len]) {
            return Err(SendError::Abandoned);
        }
        slot.len = len;
        let fd = types::Fd(self.links[link].as_fd().as_raw_fd());
        let entry = opcode::Write::new(fd, slot.buf.as_ptr(), len as u32)
            .offset(u64::MAX)
            .build()
            .user_data(TX_BIT | u64::from(i));
        self.push(&entry).map_err(|_| SendError::Busy)?;
        self.tx_free.pop();
        self.tx[i as usize].busy = true;
        Ok(())
    }

    /// Submits everything queued since the last call: one `io_uring_enter`,
    /// carrying for each packet or `AF_XDP` socket with frames queued a `send`
    /// that has the kernel send them.
    ///
    /// The kick runs in an io_uring worker (`IOSQE_ASYNC`), not in the engine's
    /// thread: on a veth, sending runs the receiver's network stack (its softirq)
    /// in the sender's context, which would otherwise take most of the engine's
    /// time. `AF_XDP` copy mode sends 32 frames a call, so it gets one kick per
    /// 32 frames. While a link's kicks are in flight it gets no more: frames
    /// queued meanwhile, or left over by a kick that stopped short, go with the
    /// next, at the first flush after [`Self::receive`] has reaped the last
    /// completion (which also wakes a sleeping engine).
    pub fn flush(&mut self) -> Result<(), WireError> {
        for link in 0..self.links.len() {
            if self.kicking[link] > 0 {
                continue;
            }
            let kicks = if let Some(rings) = &mut self.packet[link] {
                self.stats.tx_errors += rings.take_tx_errors();
                rings.take_kicks().max(u32::from(self.rekick[link]))
            } else if let Some(xsk) = self.links[link].xsk_mut() {
                xsk.take_kicks()
            } else {
                0
            };
            let fd = types::Fd(self.links[link].as_fd().as_raw_fd());
            for _ in 0..kicks {
                let entry = opcode::Send::new(fd, std::ptr::null(), 0)
                    .flags(libc::MSG_DONTWAIT)
                    .build()
                    .flags(squeue::Flags::ASYNC)
                    .user_data(KICK_BIT | link as u64);
                self.push(&entry)?;
                self.kicking[link] += 1;
            }
            self.rekick[link] = false;
        }
        if self.queued > 0 {
            self.ring
                .submit()
                .map_err(|e| WireError::Uring("io_uring_enter", e))?;
            self.queued = 0;
        }
        Ok(())
    }

    /// Frames that can be queued on every link now (the fewest of any link),
    /// counting at most `max`: what a sender may hand over without a frame
    /// finding its link's send buffers all in flight.
    pub fn tx_room(&mut self, max: usize) -> usize {
        let mut room = max;
        for link in 0..self.links.len() {
            let here = if let Some(rings) = &self.packet[link] {
                rings.tx_room(max)
            } else if let Some(xsk) = self.links[link].xsk_mut() {
                xsk.tx_room()
            } else {
                self.tx_free.len()
            };
            room = room.min(here);
        }
        room
    }

    /// Whether frames queued on a packet or `AF_XDP` socket wait for a kick, or
    /// a kick is in flight: until not, keep calling [`Self::receive`] and
    /// [`Self::flush`].
    pub fn sending(&self) -> bool {
        (0..self.links.len()).any(|link| {
            self.kicking[link] > 0
                || self.rekick[link]
                || self.packet[link].as_ref().is_some_and(PacketRing::unsent)
                || self.links[link].xsk().is_some_and(Xsk::unsent)
        })
    }

    /// A send kick completed: another is due if the kernel stopped short.
    fn kicked(&mut self, link: usize, result: i32) {
        let Some(kicking) = self.kicking.get_mut(link) else {
            return;
        };
        *kicking = kicking.saturating_sub(1);
        match -result {
            // More queued than one call sends (AF_XDP copy mode: 32), or the
            // completion ring or socket buffer was full for a moment.
            libc::EAGAIN | libc::EBUSY | libc::ENOBUFS => self.rekick[link] = true,
            errno if result < 0 => {
                self.stats.tx_errors += 1;
                self.stats.last_errno = errno;
            }
            _ => {}
        }
    }

    fn tx_done(&mut self, i: usize, result: i32) {
        let Some(slot) = self.tx.get_mut(i) else {
            return;
        };
        if result < 0 || result as usize != slot.len {
            self.stats.tx_errors += 1;
            if result < 0 {
                self.stats.last_errno = -result;
            }
        }
        if slot.busy {
            slot.busy = false;
            self.tx_free.push(i as u32);
        }
    }

    fn arm(&mut self, i: usize) -> Result<(), WireError> {
        let slot = &mut self.rx[i];
        let link = &self.links[slot.link];
        let fd = types::Fd(link.as_fd().as_raw_fd());
        let entry = match link.kind() {
            LinkKind::Tap => opcode::Read::new(
                fd,
                slot.buf[HEADROOM..].as_mut_ptr(),
                self.frame_cap as u32 + 1,
            )
            .offset(u64::MAX)
            .build(),
            // No receive slots: their frames are read off their own rx ring.
            LinkKind::Packet | LinkKind::Xdp => return Ok(()),
        }
        .user_data(i as u64);
        self.push(&entry)?;
        self.rx[i].busy = true;
        Ok(())
    }

    fn push(&mut self, entry: &squeue::Entry) -> Result<(), WireError> {
        for _ in 0..2 {
            // SAFETY: every buffer, iovec, msghdr, address and control area an entry
            // points to lives in `self.rx` or `self.tx`, boxed slices that are never
            // reallocated, and is not touched again until the entry's completion is
            // reaped (`busy`). `Drop` waits for (or cancels) every operation in
            // flight before the buffers are freed.
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                self.queued += 1;
                return Ok(());
            }
            // The submission queue is full: hand it to the kernel and retry.
            self.ring
                .submit()
                .map_err(|e| WireError::Uring("io_uring_enter", e))?;
            self.queued = 0;
        }
        Err(WireError::Uring(
            "submission queue full",
            std::io::Error::from(std::io::ErrorKind::WouldBlock),
        ))
    }

    fn in_flight(&self) -> usize {
        self.rx.iter().filter(|s| s.busy).count() + self.tx.iter().filter(|s| s.busy).count()
    }
}

impl Drop for WireRing {
    fn drop(&mut self) {
        // The kernel may still write into receive buffers: cancel every operation
        // and wait for its completion before the buffers are freed.
        for i in 0..self.rx.len() {
            if self.rx[i].busy {
                let cancel = opcode::AsyncCancel::new(i as u64)
                    .build()
                    .user_data(CANCEL_BIT | i as u64);
                let _ = self.push(&cancel);
            }
        }
        let _ = self.flush();
        let ts = types::Timespec::from(Duration::from_millis(100));
        for _ in 0..50 {
            if self.in_flight() == 0 {
                return;
            }
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            let cqes: Vec<(u64, i32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (user_data, result) in cqes {
                if user_data & (CANCEL_BIT | POLL_BIT | KICK_BIT) != 0 {
                    continue;
                }
                if user_data & TX_BIT != 0 {
                    self.tx_done((user_data & !TX_BIT) as usize, result);
                } else if let Some(slot) = self.rx.get_mut(user_data as usize) {
                    slot.busy = false;
                }
            }
        }
        // Something never completed: leak the buffers rather than free memory the
        // kernel may still write to.
        std::mem::forget(std::mem::take(&mut self.rx));
        std::mem::forget(std::mem::take(&mut self.tx));
    }
}

/// Hands a frame from a link's own ring to `f`: as an oversize report if it is
/// longer than `frame_cap` or was cut short, else with the tag the kernel took
/// out put back (dropped if there is no room for it).
fn hand_over(
    f: &mut impl FnMut(usize, Received<'_>),
    link: usize,
    frame_cap: usize,
    frame: RingFrame<'_>,
) {
    if frame.len > frame_cap || frame.captured < frame.len {
        f(link, Received::Oversize(frame.len));
        return;
    }
    let mut rx = RxFrame {
        buf: frame.buf,
        start: frame.start,
        end: frame.start + frame.captured,
        partial_checksum: frame.partial_checksum,
    };
    if frame.vlan.is_none_or(|(tpid, tci)| rx.push_tag(tpid, tci)) {
        f(link, Received::Frame(rx));
    }
}

/// A refused send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Every transmit buffer is in flight.
    #[error("every transmit buffer is in flight")]
    Busy,
    /// The frame exceeds the ring's frame capacity.
    #[error("a {0}-byte frame exceeds the wire's frame capacity")]
    TooLong(usize),
    /// No such link.
    #[error("no link {0}")]
    NoSuchLink(usize),
    /// The filler gave up.
    #[error("the frame could not be read")]
    Abandoned,
}
