//! An AF_XDP socket on one interface queue (kernel
//! `Documentation/networking/af_xdp.rst`): its own UMEM, fill, completion, rx and
//! tx rings (through `xdpilone`), and nfhost's XDP program redirecting the queue's
//! frames into it.
//!
//! The UMEM is split in two: the first half of its frames circulate through the
//! fill and rx rings, the second half through the tx and completion rings. A
//! received frame's chunk goes back to the fill ring as soon as the caller has
//! read it, so the kernel never runs short while the engine keeps up.
//!
//! Zero-copy is asked for first and copy mode used where the driver has no
//! zero-copy (veth, TAP: copy mode). Need-wakeup is on: in copy mode every
//! transmit batch needs a `sendto` kick, which sends up to 32 frames per call.

use std::num::NonZeroU32;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use rustix::io::Errno;
use xdpilone::xdp::XdpDesc;
use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig, User};

use super::WireError;
use super::ring::RingFrame;
use super::xdp_prog::XdpProgram;

/// Bytes per UMEM chunk: one frame with the kernel's 256 bytes of headroom in
/// front of it, which also leaves room to put an 802.1Q tag back.
pub const CHUNK: usize = 4096;
/// Chunks for receiving (and entries of the fill and rx rings).
const RX_CHUNKS: u32 = 4096;
/// Chunks for transmitting (and entries of the tx and completion rings).
const TX_CHUNKS: u32 = 1024;
/// Frames handled per ring access.
const BATCH: u32 = 64;
/// Frames one `sendto` sends in copy mode (the kernel's `TX_BATCH_SIZE`).
const COPY_MODE_BATCH: u32 = 32;

/// How the kernel moves frames between the interface and the UMEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// The kernel copies each frame (drivers without AF_XDP zero-copy: veth, TAP,
    /// and any driver in generic XDP).
    Copy,
    /// The NIC's DMA lands in the UMEM itself.
    ZeroCopy,
}

impl std::fmt::Display for XdpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            XdpMode::Copy => "copy",
            XdpMode::ZeroCopy => "zero-copy",
        })
    }
}

/// The UMEM's memory: an anonymous private mapping, page-aligned.
struct Area(memmap2::MmapMut);

/// One bound AF_XDP socket with its UMEM and program. The program drops first
/// (detaching it), then the socket and what it maps.
pub struct Xsk {
    program: XdpProgram,
    io: Bound,
    /// Receive chunks read and waiting for room on the fill ring.
    rx_spare: Vec<u64>,
    tx_free: Vec<u64>,
    tx_unsent: u32,
    mode: XdpMode,
    zero_copy_refused: Option<String>,
    /// The kernel's drop count at the last [`Xsk::take_drops`].
    drops_seen: std::cell::Cell<u64>,
}

/// The socket bound in one mode, with its rings and the UMEM under them: what
/// each bind attempt makes anew. Fields drop in order: the rings, the socket,
/// then the memory under them.
struct Bound {
    rx: RingRx,
    tx: RingTx,
    device: DeviceQueue,
    _user: User,
    _socket: Socket,
    _umem: Umem,
    area: Area,
}

// SAFETY: the one field that is not `Send` is xdpilone's `Umem`, for the raw
// pointer to the UMEM area it keeps. That area is `self.area`, owned by this same
// struct and moved with it; nothing in a `Bound` is tied to the thread that made
// it (its rings are mmaps and its fds are plain descriptors).
unsafe impl Send for Bound {}

impl std::fmt::Debug for Xsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xsk")
            .field("mode", &self.mode)
            .field("program", &self.program)
            .field("tx_free", &self.tx_free.len())
            .finish()
    }
}

/// How long an interface queue (or its XDP hook) that is busy is waited for.
pub const BUSY_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether the kernel said `EBUSY`.
fn is_busy(e: &WireError) -> bool {
    matches!(
        e,
        WireError::Io(_, Errno::BUSY) | WireError::Bpf(_, Errno::BUSY)
    )
}

/// An error and its cause, on one line.
fn with_cause(e: &WireError) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

fn errno(e: xdpilone::Errno) -> Errno {
    Errno::from_raw_os_error(e.get_raw().abs())
}

impl Bound {
    /// Makes the UMEM and socket, binds it to queue 0 of interface `ifindex`
    /// (`name`, for messages) in `mode`, and maps its rings.
    fn new(name: &str, ifindex: u32, mode: XdpMode) -> Result<Bound, WireError> {
        let len = CHUNK * (RX_CHUNKS + TX_CHUNKS) as usize;
        let mut area = Area(
            memmap2::MmapOptions::new()
                .len(len)
                .map_anon()
                .map_err(|e| WireError::Uring("mapping the UMEM", e))?,
        );
        let config = UmemConfig {
            fill_size: RX_CHUNKS,
            complete_size: TX_CHUNKS,
            frame_size: CHUNK as u32,
            headroom: 0,
            flags: 0,
        };
        let region = NonNull::from(&mut area.0[..]);
        // SAFETY: `region` is the whole anonymous mapping in `area`, page-aligned
        // (mmap) and `len` bytes long. `area` is kept in the same `Bound` as the
        // `Umem` and dropped after it and after every ring and socket using it.
        let umem = unsafe { Umem::new(config, region) }
            .map_err(|e| WireError::Io("registering the UMEM (XDP_UMEM_REG)", errno(e)))?;
        let mut info = IfInfo::invalid();
        info.from_ifindex(ifindex)
            .map_err(|_| WireError::NoSuchInterface(name.to_owned()))?;
        info.set_queue(0);
        let socket = Socket::with_shared(&info, &umem)
            .map_err(|e| WireError::Io("opening the AF_XDP socket", errno(e)))?;
        let device = umem
            .fq_cq(&socket)
            .map_err(|e| WireError::Io("mapping the fill and completion rings", errno(e)))?;
        // Need-wakeup in zero-copy mode only. In copy mode the kernel sends only
        // when kicked anyway, and with need-wakeup on, every poll of the socket
        // (the io_uring's, waiting for received frames) would send the queued
        // frames too, in the engine's thread, instead of the kick's worker.
        let flags = match mode {
            XdpMode::ZeroCopy => {
                SocketConfig::XDP_BIND_ZEROCOPY | SocketConfig::XDP_BIND_NEED_WAKEUP
            }
            XdpMode::Copy => SocketConfig::XDP_BIND_COPY,
        };
        let user = umem
            .rx_tx(
                &socket,
                &SocketConfig {
                    rx_size: NonZeroU32::new(RX_CHUNKS),
                    tx_size: NonZeroU32::new(TX_CHUNKS),
                    bind_flags: flags,
                },
            )
            .map_err(|e| WireError::Io("configuring the rx and tx rings", errno(e)))?;
        umem.bind(&user).map_err(|e| {
            WireError::Io(
                match mode {
                    XdpMode::ZeroCopy => "binding the AF_XDP socket in zero-copy mode",
                    XdpMode::Copy => "binding the AF_XDP socket (copy mode)",
                },
                errno(e),
            )
        })?;
        let rx = user
            .map_rx()
            .map_err(|e| WireError::Io("mapping the rx ring", errno(e)))?;
        let tx = user
            .map_tx()
            .map_err(|e| WireError::Io("mapping the tx ring", errno(e)))?;
        Ok(Bound {
            rx,
            tx,
            device,
            _user: user,
            _socket: socket,
            _umem: umem,
            area,
        })
    }
}

impl Xsk {
    /// Opens an AF_XDP socket on queue 0 of interface `name` (index `ifindex`),
    /// attaches nfhost's XDP program and points it at the socket.
    ///
    /// The queue may still be held for a moment by a socket that is going away:
    /// the kernel tears a closed AF_XDP socket down asynchronously, and a killed
    /// nfhost's io_uring workers may hold it a little longer. An `EBUSY` is
    /// therefore retried for up to [`BUSY_GRACE`] before it is an error (as it
    /// stays when another live process holds the interface).
    pub fn open(name: &str, ifindex: u32) -> Result<Xsk, WireError> {
        let deadline = std::time::Instant::now() + BUSY_GRACE;
        loop {
            match Self::try_open(name, ifindex) {
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    fn try_open(name: &str, ifindex: u32) -> Result<Xsk, WireError> {
        let program = XdpProgram::attach(ifindex, name)?;
        let (io, mode, zero_copy_refused) = match Bound::new(name, ifindex, XdpMode::ZeroCopy) {
            Ok(io) => (io, XdpMode::ZeroCopy, None),
            Err(zero_copy) => (
                Bound::new(name, ifindex, XdpMode::Copy)?,
                XdpMode::Copy,
                Some(with_cause(&zero_copy)),
            ),
        };
        let mut xsk = Xsk {
            program,
            io,
            rx_spare: Vec::with_capacity(RX_CHUNKS as usize),
            tx_free: (RX_CHUNKS..RX_CHUNKS + TX_CHUNKS)
                .rev()
                .map(|i| u64::from(i) * CHUNK as u64)
                .collect(),
            tx_unsent: 0,
            mode,
            zero_copy_refused,
            drops_seen: std::cell::Cell::new(0),
        };
        xsk.fill_all()?;
        xsk.program.insert(0, xsk.fd())?;
        Ok(xsk)
    }

    /// Hands every receive chunk to the kernel.
    fn fill_all(&mut self) -> Result<(), WireError> {
        let mut fill = self.io.device.fill(RX_CHUNKS);
        let n = fill.insert((0..RX_CHUNKS).map(|i| u64::from(i) * CHUNK as u64));
        fill.commit();
        if n != RX_CHUNKS {
            return Err(WireError::Io("filling the fill ring", Errno::NOBUFS));
        }
        Ok(())
    }

    /// Copy or zero-copy.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Why zero-copy was not used, when the socket is in copy mode.
    pub fn zero_copy_refused(&self) -> Option<&str> {
        self.zero_copy_refused.as_deref()
    }

    /// The socket's fd (to poll for received frames).
    pub fn fd(&self) -> BorrowedFd<'_> {
        let raw = self.io.rx.as_raw_fd();
        // SAFETY: `raw` is the socket's fd, owned by `self.io._socket` (and shared by
        // its rings) for as long as `self` lives, which bounds the borrow.
        unsafe { BorrowedFd::borrow_raw(raw) }
    }

    /// Whether received frames are waiting.
    pub fn rx_ready(&self) -> bool {
        self.io.rx.available() > 0
    }

    /// Hands up to `max` received frames to `f`, each in its chunk, and gives
    /// each chunk back to the fill ring once `f` returns. Returns how many were
    /// handed.
    pub fn receive(&mut self, max: usize, mut f: impl FnMut(RingFrame<'_>)) -> usize {
        let mut handed = 0;
        if !self.rx_spare.is_empty() {
            self.give_back(&[]);
        }
        while handed < max {
            let want = (max - handed).min(BATCH as usize) as u32;
            let mut descs = [XdpDesc {
                addr: 0,
                len: 0,
                options: 0,
            }; BATCH as usize];
            let n = {
                let mut read = self.io.rx.receive(want);
                let mut n = 0;
                while let Some(desc) = read.read() {
                    descs[n] = desc;
                    n += 1;
                }
                read.release();
                n
            };
            if n == 0 {
                break;
            }
            for desc in &descs[..n] {
                let chunk = desc.addr - desc.addr % CHUNK as u64;
                let start = (desc.addr - chunk) as usize;
                if let Some(buf) = self.chunk(chunk) {
                    let len = desc.len as usize;
                    f(RingFrame {
                        buf,
                        start,
                        captured: len.min(CHUNK - start),
                        len,
                        // The tag stays in the frame; AF_XDP carries no checksum
                        // state.
                        vlan: None,
                        partial_checksum: None,
                    });
                }
            }
            self.give_back(&descs[..n]);
            handed += n;
        }
        handed
    }

    /// Puts the chunks of `descs` on the fill ring, and any that waited for room.
    ///
    /// The ring has an entry for every receive chunk, yet it can look full: the
    /// kernel publishes how far it has read the fill ring only when it has used
    /// up what it read last (4096 entries at first), and one reservation may
    /// count from a stale view and see less room than there is. Chunks that do
    /// not fit wait in `rx_spare` for the next call; one dropped here would be
    /// lost to the kernel for good, until the fill ring ran dry.
    fn give_back(&mut self, descs: &[XdpDesc]) {
        self.rx_spare
            .extend(descs.iter().map(|d| d.addr - d.addr % CHUNK as u64));
        while !self.rx_spare.is_empty() {
            let mut fill = self.io.device.fill(self.rx_spare.len() as u32);
            let room = fill.capacity() as usize;
            let from = self.rx_spare.len() - room.min(self.rx_spare.len());
            let n = fill.insert(self.rx_spare[from..].iter().copied()) as usize;
            fill.commit();
            self.rx_spare.truncate(self.rx_spare.len() - n);
            if n == 0 {
                break;
            }
        }
    }

    /// The chunk at UMEM offset `addr`, if it is one.
    fn chunk(&mut self, addr: u64) -> Option<&mut [u8]> {
        let at = usize::try_from(addr).ok()?;
        if at % CHUNK != 0 || at + CHUNK > self.io.area.0.len() {
            return None;
        }
        Some(&mut self.io.area.0[at..at + CHUNK])
    }

    /// Takes back transmit chunks the kernel has finished with (every one: a
    /// read may see fewer than are there, for the reason given at `give_back`).
    pub fn reap(&mut self) {
        loop {
            let mut done = self.io.device.complete(TX_CHUNKS);
            let mut n = 0;
            while let Some(addr) = done.read() {
                self.tx_free.push(addr - addr % CHUNK as u64);
                n += 1;
            }
            done.release();
            if n == 0 {
                break;
            }
        }
    }

    /// Queues a frame of `len` bytes (at most [`CHUNK`]), written by `fill`
    /// straight into a transmit chunk.
    pub fn send_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> bool,
    ) -> Result<(), SendOutcome> {
        if self.tx_free.is_empty() {
            self.reap();
        }
        let Some(&addr) = self.tx_free.last() else {
            return Err(SendOutcome::Busy);
        };
        let Some(buf) = self.chunk(addr) else {
            return Err(SendOutcome::Busy);
        };
        if !fill(&mut buf[..len]) {
            return Err(SendOutcome::Abandoned);
        }
        let mut tx = self.io.tx.transmit(1);
        let queued = tx.insert_once(XdpDesc {
            addr,
            len: len as u32,
            options: 0,
        });
        tx.commit();
        if !queued {
            return Err(SendOutcome::Busy);
        }
        self.tx_free.pop();
        self.tx_unsent += 1;
        Ok(())
    }

    /// Frames [`Self::send_with`] takes now: free transmit chunks (after taking
    /// back those the kernel is done with), as far as the transmit ring has room.
    ///
    /// A free chunk does not always mean room in the ring: the kernel publishes how
    /// far it has read the transmit ring only when it next reads it, so the frames
    /// of its last kick (up to 32) can be sent and their chunks back while their
    /// ring entries still look taken. Promising the chunks then made sends fail
    /// as busy, and the engine drop them as `wire_busy`.
    pub fn tx_room(&mut self) -> usize {
        self.reap();
        let ring_free = TX_CHUNKS.saturating_sub(self.io.tx.pending());
        self.tx_free.len().min(ring_free as usize)
    }

    /// Frames queued since the last [`Self::take_kicks`].
    pub fn unsent(&self) -> bool {
        self.tx_unsent > 0
    }

    /// How many kicks (`sendto` calls) the kernel needs to send what the tx ring
    /// holds: in copy mode, which sends in the kick, one per 32 frames; in
    /// zero-copy mode one, when the driver asks for it (need-wakeup).
    pub fn take_kicks(&mut self) -> u32 {
        self.tx_unsent = 0;
        let pending = self.io.tx.pending();
        match self.mode {
            XdpMode::Copy => pending.div_ceil(COPY_MODE_BATCH),
            XdpMode::ZeroCopy => u32::from(pending > 0 && self.io.tx.needs_wakeup()),
        }
    }

    /// How often the kernel found the fill ring empty, in all.
    #[cfg(test)]
    pub(super) fn fill_ring_empty(&self) -> Result<u64, WireError> {
        self.io
            .device
            .statistics_v2()
            .map(|s| s.rx_fill_ring_empty_descs)
            .map_err(|e| WireError::Io("XDP_STATISTICS", errno(e)))
    }

    /// Frames the kernel dropped for this socket since the last call: its rx ring
    /// was full or the fill ring empty.
    pub fn take_drops(&self) -> Result<u64, WireError> {
        let stats = self
            .io
            .device
            .statistics_v2()
            .map_err(|e| WireError::Io("XDP_STATISTICS", errno(e)))?;
        let now = stats.rx_dropped + stats.rx_ring_full;
        let new = now.saturating_sub(self.drops_seen.replace(now));
        Ok(new)
    }
}

/// Why [`Xsk::send_with`] queued nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// No transmit chunk or ring slot free.
    Busy,
    /// The filler gave up.
    Abandoned,
}
