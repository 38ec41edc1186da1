//! The host's Ethernet interfaces a PF uplink can use: a TAP device
//! (`tun(4)`, opened or created with `TUNSETIFF`), or an existing interface
//! through an `AF_PACKET` raw socket (`packet(7)`) or an `AF_XDP` socket with
//! nfhost's XDP program in front of it.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::WireError;
use super::xsk::{XdpMode, Xsk};

/// What kind of fd a [`Link`] reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// `/dev/net/tun` in TAP mode without packet information: one `read` is
    /// one frame, exactly as the kernel sends it (802.1Q tags inline).
    Tap,
    /// An `AF_PACKET`/`SOCK_RAW` socket bound to one interface, promiscuous,
    /// with `PACKET_IGNORE_OUTGOING` (it does not hear its own transmissions)
    /// and, once a [`super::WireRing`] drives it, mmap'd receive and send rings
    /// (the kernel moves a received 802.1Q tag out of the frame into the slot's
    /// header; the ring puts it back).
    Packet,
    /// An `AF_XDP` socket on the interface's queue 0, fed by nfhost's XDP
    /// program (attached with a BPF link, so it goes when nfhost goes). The
    /// frames skip the kernel's stack; the rings and UMEM are its own.
    Xdp,
}

/// An interface's state as `SIOCGIFFLAGS` and `SIOCGIFMTU` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    /// Administratively up (`IFF_UP`) and operational (`IFF_RUNNING`: carrier,
    /// or for a veth, its peer up).
    pub up: bool,
    /// The interface MTU (IP payload bytes, without the Ethernet header).
    pub mtu: u32,
}

/// One open interface. Dropping it closes the fd; a TAP device that nfhost
/// created (not persistent) disappears with it.
#[derive(Debug)]
pub struct Link {
    fd: OwnedFd,
    /// An `AF_PACKET` datagram socket for interface ioctls.
    ctl: OwnedFd,
    kind: LinkKind,
    name: String,
    /// The AF_XDP socket, for an [`LinkKind::Xdp`] link (`fd` is then a
    /// duplicate of its fd, to poll).
    xsk: Option<Box<Xsk>>,
}

const IFNAMSIZ: usize = 16;

fn check_name(name: &str) -> Result<CString, WireError> {
    if name.is_empty() || name.len() >= IFNAMSIZ || name.contains(['/', ' ', '\0', ':', ',']) {
        return Err(WireError::BadName(name.to_owned()));
    }
    CString::new(name).map_err(|_| WireError::BadName(name.to_owned()))
}

/// The index of the interface `c_name` (`name`, for the error).
fn ifindex(c_name: &CString, name: &str) -> Result<u32, WireError> {
    // SAFETY: `c_name` is a NUL-terminated string that lives across the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(WireError::NoSuchInterface(name.to_owned()));
    }
    Ok(index)
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is a plain C struct (a name array and a union of integers
    // and pointers); all-zero bytes are a valid value of it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

fn ctl_socket() -> Result<OwnedFd, WireError> {
    rustix::net::socket_with(
        rustix::net::AddressFamily::PACKET,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| WireError::Io("opening a control socket", e))
}

fn last_errno() -> Errno {
    Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO)
}

pub(super) fn setsockopt<T>(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    value: &T,
) -> Result<(), Errno> {
    // SAFETY: `value` points to a live `T` of `size_of::<T>()` bytes for the
    // duration of the call; the kernel only reads that many bytes from it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(last_errno()) }
}

impl Link {
    /// Opens the TAP device `name`, creating it if it does not exist (it then
    /// lives as long as this fd). The device starts administratively down
    /// unless it already existed and was up: `ip link set NAME up` brings it up.
    pub fn tap(name: &str) -> Result<Link, WireError> {
        check_name(name)?;
        let fd = rustix::fs::open(
            "/dev/net/tun",
            OFlags::RDWR | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| WireError::Io("opening /dev/net/tun", e))?;
        let mut req = ifreq(name);
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `ifreq`, and `req` is a live,
        // initialised `ifreq` for the duration of the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req) };
        if rc != 0 {
            return Err(WireError::Io(
                "TUNSETIFF (is it an existing interface that is not a TAP, or is CAP_NET_ADMIN missing?)",
                last_errno(),
            ));
        }
        Ok(Link {
            fd,
            ctl: ctl_socket()?,
            kind: LinkKind::Tap,
            name: name.to_owned(),
            xsk: None,
        })
    }

    /// Attaches to the existing interface `name` with an `AF_PACKET` socket:
    /// promiscuous, without its own transmissions looped back.
    pub fn packet(name: &str) -> Result<Link, WireError> {
        let c_name = check_name(name)?;
        // Protocol 0: the socket hears nothing until it is bound to the interface,
        // so no frame of another interface slips in between.
        let fd = rustix::net::socket_with(
            rustix::net::AddressFamily::PACKET,
            rustix::net::SocketType::RAW,
            rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
            None,
        )
        .map_err(|e| WireError::Io("opening an AF_PACKET socket (needs CAP_NET_RAW)", e))?;
        let index = ifindex(&c_name, name)? as i32;
        let mreq = libc::packet_mreq {
            mr_ifindex: index,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        setsockopt(
            fd.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mreq,
        )
        .map_err(|e| WireError::Io("PACKET_ADD_MEMBERSHIP (promiscuous)", e))?;
        setsockopt(
            fd.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            &1i32,
        )
        .map_err(|e| WireError::Io("PACKET_IGNORE_OUTGOING", e))?;
        // Room for bursts; FORCE lifts the sysctl cap when we have CAP_NET_ADMIN.
        let rcvbuf = 8i32 << 20;
        if setsockopt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &rcvbuf).is_err() {
            let _ = setsockopt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, &rcvbuf);
        }
        // SAFETY: `sockaddr_ll` is a plain C struct of integers and a byte array;
        // all-zero bytes are a valid value of it.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = index;
        // SAFETY: `addr` is a live, initialised `sockaddr_ll` and the length passed
        // is its size; the kernel only reads it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(WireError::Io("binding the AF_PACKET socket", last_errno()));
        }
        Ok(Link {
            fd,
            ctl: ctl_socket()?,
            kind: LinkKind::Packet,
            name: name.to_owned(),
            xsk: None,
        })
    }

    /// Attaches to the existing interface `name` with an `AF_XDP` socket on its
    /// receive queue 0: loads and attaches nfhost's XDP program, which redirects
    /// the queue's frames into the socket (frames of other queues go on to the
    /// kernel's stack: give the interface one queue, as a veth has).
    pub fn xdp(name: &str) -> Result<Link, WireError> {
        let index = ifindex(&check_name(name)?, name)?;
        let xsk = Xsk::open(name, index)?;
        let fd = dup(xsk.fd())?;
        Ok(Link {
            fd,
            ctl: ctl_socket()?,
            kind: LinkKind::Xdp,
            name: name.to_owned(),
            xsk: Some(Box::new(xsk)),
        })
    }

    /// For an `AF_XDP` link: copy or zero-copy, and why not zero-copy.
    pub fn xdp_mode(&self) -> Option<(XdpMode, Option<&str>)> {
        self.xsk
            .as_deref()
            .map(|x| (x.mode(), x.zero_copy_refused()))
    }

    pub(super) fn xsk_mut(&mut self) -> Option<&mut Xsk> {
        self.xsk.as_deref_mut()
    }

    pub(super) fn xsk(&self) -> Option<&Xsk> {
        self.xsk.as_deref()
    }

    /// Receive queues of the interface (from sysfs; 1 if unknown). An `AF_XDP`
    /// link hears queue 0 only.
    pub fn rx_queues(&self) -> usize {
        std::fs::read_dir(format!("/sys/class/net/{}/queues", self.name))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                    .count()
            })
            .unwrap_or(1)
            .max(1)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// TAP, `AF_PACKET` or `AF_XDP`.
    pub fn kind(&self) -> LinkKind {
        self.kind
    }

    /// Frames the kernel dropped since the last call because the socket's receive
    /// buffer was full (`PACKET_STATISTICS`; reading resets the kernel's count),
    /// or for `AF_XDP`, its rx ring full or fill ring empty (`XDP_STATISTICS`).
    /// Always 0 for a TAP, whose reader is never overrun: the kernel queues for it
    /// and drops on the device's side instead (`tx_dropped` of the interface).
    pub fn take_drops(&self) -> Result<u64, WireError> {
        if let Some(xsk) = &self.xsk {
            return xsk.take_drops();
        }
        if self.kind != LinkKind::Packet {
            return Ok(0);
        }
        let mut stats = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: PACKET_STATISTICS writes at most `len` bytes into `stats`, a live
        // `tpacket_stats` of exactly that size, and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut stats).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(WireError::Io("PACKET_STATISTICS", last_errno()));
        }
        Ok(u64::from(stats.tp_drops))
    }

    /// The interface's state now. An interface that has disappeared (deleted,
    /// or moved to another namespace) is an error.
    pub fn status(&self) -> Result<LinkStatus, WireError> {
        let mut req = ifreq(&self.name);
        // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into one
        // `ifreq`; `req` is live and initialised for the duration of the call.
        let rc = unsafe { libc::ioctl(self.ctl.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) };
        if rc != 0 {
            return Err(WireError::NoSuchInterface(self.name.clone()));
        }
        // SAFETY: after a successful SIOCGIFFLAGS the union holds the flags.
        let flags = i32::from(unsafe { req.ifr_ifru.ifru_flags });
        let mut req = ifreq(&self.name);
        // SAFETY: as above, for SIOCGIFMTU, which writes the MTU into the union.
        let rc = unsafe { libc::ioctl(self.ctl.as_raw_fd(), libc::SIOCGIFMTU as _, &mut req) };
        if rc != 0 {
            return Err(WireError::NoSuchInterface(self.name.clone()));
        }
        // SAFETY: after a successful SIOCGIFMTU the union holds the MTU.
        let mtu = unsafe { req.ifr_ifru.ifru_mtu };
        let want = libc::IFF_UP | libc::IFF_RUNNING;
        Ok(LinkStatus {
            up: flags & want == want,
            mtu: mtu.max(0) as u32,
        })
    }
}

impl AsFd for Link {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Duplicates an fd (for a second owner such as a reactor registration).
pub(super) fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd, WireError> {
    rustix::io::fcntl_dupfd_cloexec(fd, 3).map_err(|e| WireError::Io("dup", e))
}
