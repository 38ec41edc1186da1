//! Eventfds (interrupts and doorbells) and fd passing over Unix sockets
//! (`SCM_RIGHTS`, see `unix(7)`), the way VFIO-user hands a device's fds to
//! its driver.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::EventfdFlags;
use rustix::fs::OFlags;
use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Most fds one `SCM_RIGHTS` message can carry (`SCM_MAX_FD` in the kernel).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

/// Errors from eventfds and fd passing.
#[derive(Debug, thiserror::Error)]
pub enum FdError {
    /// Creating the eventfd failed.
    #[error("eventfd creation failed")]
    EventFdCreate(#[source] Errno),
    /// Making a received eventfd nonblocking failed.
    #[error("setting O_NONBLOCK on the eventfd failed")]
    SetNonblock(#[source] Errno),
    /// Creating a timerfd failed.
    #[error("timerfd creation failed")]
    TimerCreate(#[source] Errno),
    /// Arming a timerfd failed.
    #[error("arming the timerfd failed")]
    TimerSet(#[source] Errno),
    /// Setting the thread's timer slack failed.
    #[error("setting the timer slack failed")]
    TimerSlack(#[source] Errno),
    /// Writing to the eventfd failed.
    #[error("eventfd write failed")]
    Notify(#[source] Errno),
    /// Reading the eventfd failed.
    #[error("eventfd read failed")]
    Read(#[source] Errno),
    /// An eventfd read or write moved a number of bytes other than 8, so the
    /// fd is not an eventfd.
    #[error("eventfd transfer of {0} bytes instead of 8 (not an eventfd?)")]
    ShortTransfer(usize),
    /// A message carrying fds must have at least one data byte.
    #[error("cannot send fds with an empty message")]
    EmptyMessage,
    /// More fds than one message can carry.
    #[error("{0} fds exceed the per-message limit of 253")]
    TooManyFds(usize),
    /// `sendmsg` or `send` failed.
    #[error("sending on the socket failed")]
    Send(#[source] Errno),
    /// The peer stopped reading mid-message.
    #[error("socket accepted no bytes")]
    SendStalled,
    /// `recvmsg` failed.
    #[error("receiving on the socket failed")]
    Recv(#[source] Errno),
    /// The peer sent more fds than we had room for (`MSG_CTRUNC`); the ones
    /// that arrived have been closed.
    #[error("control message truncated: peer sent more than {max_fds} fds")]
    ControlTruncated {
        /// Room we offered.
        max_fds: usize,
    },
    /// The datagram was longer than the buffer (`MSG_TRUNC`).
    #[error("message truncated to the {0}-byte buffer")]
    DataTruncated(usize),
}

/// A nonblocking, close-on-exec eventfd (`eventfd(2)`), used for interrupts
/// (NIC → NF) and doorbells (NF → NIC). Dropping it closes the fd.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// Creates an eventfd with counter 0.
    pub fn new() -> Result<Self, FdError> {
        let fd = rustix::event::eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)
            .map_err(FdError::EventFdCreate)?;
        Ok(Self { fd })
    }

    /// Wraps an eventfd received from a peer. It is switched to nonblocking
    /// so that a peer cannot make [`notify`](Self::notify) block.
    pub fn from_owned(fd: OwnedFd) -> Result<Self, FdError> {
        let flags = rustix::fs::fcntl_getfl(&fd).map_err(FdError::SetNonblock)?;
        if !flags.contains(OFlags::NONBLOCK) {
            rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK).map_err(FdError::SetNonblock)?;
        }
        Ok(Self { fd })
    }

    /// Adds 1 to the counter, waking a reader. A saturated counter (`EAGAIN`)
    /// counts as success: the reader has a wakeup pending anyway.
    pub fn notify(&self) -> Result<(), FdError> {
        match rustix::io::write(&self.fd, &1u64.to_ne_bytes()) {
            Ok(8) | Err(Errno::AGAIN) => Ok(()),
            Ok(n) => Err(FdError::ShortTransfer(n)),
            Err(e) => Err(FdError::Notify(e)),
        }
    }

    /// Reads and resets the counter: `Some(count)` if it was non-zero,
    /// `None` if nothing was pending.
    pub fn try_read(&self) -> Result<Option<u64>, FdError> {
        read_count(&self.fd)
    }

    /// Gives up ownership of the fd.
    pub fn into_owned(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Reads and resets an 8-byte kernel counter (an eventfd's count, a timerfd's
/// expiries) from a nonblocking fd: `None` if it was zero.
fn read_count(fd: &OwnedFd) -> Result<Option<u64>, FdError> {
    let mut buf = [0u8; 8];
    match rustix::io::read(fd, &mut buf) {
        Ok(8) => Ok(Some(u64::from_ne_bytes(buf))),
        Ok(n) => Err(FdError::ShortTransfer(n)),
        Err(Errno::AGAIN) => Ok(None),
        Err(e) => Err(FdError::Read(e)),
    }
}

/// A nonblocking, close-on-exec timer on `CLOCK_MONOTONIC` (`timerfd_create(2)`): a
/// one-shot deadline with nanosecond resolution, readable when it expires. The engine
/// sleeps on it where a frame is due in microseconds, which a millisecond timer
/// wheel would round up (set the thread's timer slack low as well, see
/// [`set_timer_slack`]).
#[derive(Debug)]
pub struct TimerFd {
    fd: OwnedFd,
}

impl TimerFd {
    /// A disarmed timer.
    pub fn new() -> Result<Self, FdError> {
        let fd = rustix::time::timerfd_create(
            rustix::time::TimerfdClockId::Monotonic,
            rustix::time::TimerfdFlags::NONBLOCK | rustix::time::TimerfdFlags::CLOEXEC,
        )
        .map_err(FdError::TimerCreate)?;
        Ok(Self { fd })
    }

    /// Arms the timer to expire once, `after` from now (at least 1 ns: a zero
    /// duration would disarm it), replacing any earlier deadline.
    pub fn arm(&self, after: std::time::Duration) -> Result<(), FdError> {
        let after = after.max(std::time::Duration::from_nanos(1));
        let spec = rustix::time::Itimerspec {
            it_interval: rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: rustix::time::Timespec {
                tv_sec: after.as_secs().try_into().unwrap_or(i64::MAX),
                tv_nsec: after.subsec_nanos().into(),
            },
        };
        rustix::time::timerfd_settime(&self.fd, rustix::time::TimerfdTimerFlags::empty(), &spec)
            .map(|_| ())
            .map_err(FdError::TimerSet)
    }

    /// Reads and resets the expiry count: `Some(n)` if it expired, `None` if not.
    pub fn try_read(&self) -> Result<Option<u64>, FdError> {
        read_count(&self.fd)
    }
}

impl AsFd for TimerFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl std::os::fd::AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.fd)
    }
}

/// Sets the calling thread's timer slack (`PR_SET_TIMERSLACK`): how late the kernel
/// may fire its timers to batch wake-ups. The default, 50 µs, is longer than the
/// gaps the engine and the NF loop sleep through.
pub fn set_timer_slack(slack: std::time::Duration) -> Result<(), FdError> {
    let ns = u64::try_from(slack.as_nanos()).unwrap_or(u64::MAX);
    rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(ns))
        .map_err(FdError::TimerSlack)
}

/// Sends `bytes` with `fds` attached (`SCM_RIGHTS`) on a connected Unix
/// socket. The fds ride on the first byte; if the kernel takes only part of
/// `bytes`, the rest follows in plain sends. Intended for blocking sockets:
/// on a nonblocking one `EAGAIN` surfaces as [`FdError::Send`].
pub fn send_with_fds(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), FdError> {
    if bytes.is_empty() {
        return Err(FdError::EmptyMessage);
    }
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(FdError::TooManyFds(fds.len()));
    }
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        // The buffer is sized by cmsg_space! for exactly these fds.
        return Err(FdError::TooManyFds(fds.len()));
    }
    let flags = SendFlags::NOSIGNAL;
    let mut sent = loop {
        match rustix::net::sendmsg(sock, &[IoSlice::new(bytes)], &mut control, flags) {
            Err(Errno::INTR) => continue,
            other => break other.map_err(FdError::Send)?,
        }
    };
    while sent < bytes.len() {
        match rustix::net::send(sock, &bytes[sent..], flags) {
            Ok(0) => return Err(FdError::SendStalled),
            Ok(n) => sent += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(FdError::Send(e)),
        }
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes and up to `max_fds` fds from a Unix
/// socket. Returns the byte count (0 means the peer closed a stream socket)
/// and the fds, which are close-on-exec. More fds than `max_fds`, or a
/// truncated datagram, is an error and every fd that arrived is closed.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> Result<(usize, Vec<OwnedFd>), FdError> {
    let max_fds = max_fds.min(MAX_FDS_PER_MESSAGE);
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(max_fds))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let buf_len = buf.len();
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match rustix::net::recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Err(Errno::INTR) => continue,
            other => break other.map_err(FdError::Recv)?,
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    // Checked after draining so that every fd that arrived is owned by `fds`
    // and closed when it drops on the error path.
    // cmsg_space! rounds up, so the kernel may deliver a few more fds than
    // asked for without setting MSG_CTRUNC.
    if msg.flags.contains(ReturnFlags::CTRUNC) || fds.len() > max_fds {
        return Err(FdError::ControlTruncated { max_fds });
    }
    if msg.flags.contains(ReturnFlags::TRUNC) {
        return Err(FdError::DataTruncated(buf_len));
    }
    Ok((msg.bytes, fds))
}

/// Registers an owned fd (an attach socket) with the current tokio reactor, so a
/// task can wait for it to become readable.
///
/// Must be called inside a tokio (or tokio-uring) runtime.
pub fn async_fd(fd: OwnedFd) -> Result<tokio::io::unix::AsyncFd<OwnedFd>, std::io::Error> {
    // SAFETY: `register` requires that the inner value's raw fd is open and refers to
    // the same file description for as long as the `AsyncFd` lives. An `OwnedFd` owns
    // its descriptor: it stays open until the `OwnedFd` is dropped, which only happens
    // when the `AsyncFd` is dropped or unwrapped, and its raw fd never changes.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// Registers a [`TimerFd`] with the current tokio reactor, to await its expiry.
pub fn async_timer(timer: TimerFd) -> Result<tokio::io::unix::AsyncFd<TimerFd>, std::io::Error> {
    // SAFETY: as for `async_fd`: the `TimerFd` owns its descriptor through an
    // `OwnedFd`, which stays open, and keeps the same raw fd, until the `TimerFd`
    // is dropped, which only happens when the `AsyncFd` is dropped or unwrapped.
    unsafe { tokio::io::unix::AsyncFd::register(timer) }.map_err(|e| e.into_parts().1)
}

/// Sets close-on-exec on every open descriptor above stderr, so that a child this
/// process starts inherits only what is handed to it explicitly (stdin, stdout,
/// stderr). Everything Rust opens is close-on-exec already; what is not is what
/// this process itself inherited (a shell's or a supervisor's descriptors), which
/// must not reach an NF. Returns how many descriptors it changed.
pub fn cloexec_inherited() -> std::io::Result<usize> {
    // Listed first and the listing closed, so its own descriptor is not among them.
    let fds: Vec<std::os::fd::RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    let mut changed = 0;
    for raw in fds {
        // SAFETY: `raw` was open a moment ago; it is borrowed only for the two
        // fcntl calls below and not kept. If another thread closed it in between,
        // fcntl fails with EBADF (ignored); if it was closed and the number reused,
        // the new descriptor gets close-on-exec, which everything in Rust sets
        // anyway. No memory is touched through it.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        let Ok(flags) = rustix::io::fcntl_getfd(fd) else {
            continue;
        };
        if !flags.contains(rustix::io::FdFlags::CLOEXEC)
            && rustix::io::fcntl_setfd(fd, flags | rustix::io::FdFlags::CLOEXEC).is_ok()
        {
            changed += 1;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::SharedMemory;
    use std::os::unix::net::UnixStream;

    #[test]
    fn inherited_descriptors_become_close_on_exec() {
        // A descriptor as a parent process would leave it: without CLOEXEC.
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        rustix::io::fcntl_setfd(&file, rustix::io::FdFlags::empty()).unwrap();
        assert!(cloexec_inherited().unwrap() >= 1);
        let flags = rustix::io::fcntl_getfd(&file).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    }

    #[test]
    fn timerfd_expires_once_after_its_deadline() {
        let timer = TimerFd::new().expect("timerfd");
        assert_eq!(timer.try_read().expect("read"), None, "disarmed");
        let armed = std::time::Instant::now();
        timer
            .arm(std::time::Duration::from_micros(200))
            .expect("arm");
        assert_eq!(timer.try_read().expect("read"), None, "not yet");
        while timer.try_read().expect("read").is_none() {
            std::hint::spin_loop();
        }
        assert!(armed.elapsed() >= std::time::Duration::from_micros(200));
        assert_eq!(timer.try_read().expect("read"), None, "one shot");
        set_timer_slack(std::time::Duration::from_micros(1)).expect("slack");
    }

    #[test]
    fn eventfd_counts() {
        let efd = EventFd::new().expect("eventfd");
        assert_eq!(efd.try_read().expect("read"), None);
        efd.notify().expect("notify");
        efd.notify().expect("notify");
        assert_eq!(efd.try_read().expect("read"), Some(2));
        assert_eq!(efd.try_read().expect("read"), None);
    }

    #[test]
    fn from_owned_forces_nonblocking() {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC).expect("eventfd");
        let efd = EventFd::from_owned(fd).expect("wrap");
        // A blocking eventfd would hang here.
        assert_eq!(efd.try_read().expect("read"), None);
        let fd = efd.into_owned();
        let flags = rustix::fs::fcntl_getfl(&fd).expect("getfl");
        assert!(flags.contains(OFlags::NONBLOCK));
    }

    #[test]
    fn pass_eventfd_and_memfd() {
        let (a, b) = UnixStream::pair().expect("pair");
        let efd = EventFd::new().expect("eventfd");
        let shm = SharedMemory::create("bar", 4096).expect("shm");
        send_with_fds(a.as_fd(), b"hello", &[efd.as_fd(), shm.fd()]).expect("send");

        let mut buf = [0u8; 16];
        let (n, fds) = recv_with_fds(b.as_fd(), &mut buf, 4).expect("recv");
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 2);
        for fd in &fds {
            let flags = rustix::io::fcntl_getfd(fd).expect("getfd");
            assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        }
        let mut fds = fds.into_iter();
        let (Some(efd_fd), Some(shm_fd)) = (fds.next(), fds.next()) else {
            panic!("two fds expected");
        };

        let remote_efd = EventFd::from_owned(efd_fd).expect("efd");
        remote_efd.notify().expect("notify");
        assert_eq!(efd.try_read().expect("read"), Some(1));

        let remote_shm = SharedMemory::from_fd(shm_fd).expect("shm");
        assert_eq!(remote_shm.len(), 4096);
        remote_shm.write_at(123, b"dma").expect("write");
        let mut out = [0u8; 3];
        shm.read_at(123, &mut out).expect("read");
        assert_eq!(&out, b"dma");
    }

    #[test]
    fn plain_bytes_without_fds() {
        let (a, b) = UnixStream::pair().expect("pair");
        send_with_fds(a.as_fd(), b"x", &[]).expect("send");
        let mut buf = [0u8; 4];
        let (n, fds) = recv_with_fds(b.as_fd(), &mut buf, 0).expect("recv");
        assert_eq!((n, fds.len()), (1, 0));
        drop(a);
        let (n, fds) = recv_with_fds(b.as_fd(), &mut buf, 1).expect("eof");
        assert_eq!((n, fds.len()), (0, 0));
    }

    #[test]
    fn too_many_fds_is_truncation_error() {
        let (a, b) = UnixStream::pair().expect("pair");
        let efds: Vec<EventFd> = (0..8).map(|_| EventFd::new().expect("eventfd")).collect();
        let fds: Vec<BorrowedFd<'_>> = efds.iter().map(AsFd::as_fd).collect();
        // Two fds fit the rounded-up buffer for one (our check); eight do not
        // (the kernel's MSG_CTRUNC).
        for count in [2, 8] {
            send_with_fds(a.as_fd(), b"m", &fds[..count]).expect("send");
            let mut buf = [0u8; 1];
            let err = recv_with_fds(b.as_fd(), &mut buf, 1).expect_err("must fail");
            assert!(matches!(err, FdError::ControlTruncated { max_fds: 1 }));
        }
        // Nothing of the failed messages is left queued.
        send_with_fds(a.as_fd(), b"z", &[]).expect("send");
        let mut buf = [0u8; 1];
        let (n, got) = recv_with_fds(b.as_fd(), &mut buf, 1).expect("recv");
        assert_eq!((n, got.len(), buf[0]), (1, 0, b'z'));
    }

    #[test]
    fn empty_message_rejected() {
        let (a, _b) = UnixStream::pair().expect("pair");
        let e = EventFd::new().expect("e");
        assert!(matches!(
            send_with_fds(a.as_fd(), b"", &[e.as_fd()]),
            Err(FdError::EmptyMessage)
        ));
    }
}
