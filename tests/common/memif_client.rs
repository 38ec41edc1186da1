//! A memif client written for the tests, on `vf_abi::memif` and `nfhost-sys`: it
//! sets up as DPDK's client does (one region holding both rings and the buffers),
//! and can then break any rule on purpose.
#![allow(dead_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nfhost_sys::{EventFd, MemifRing, SharedMemory};
use vf_abi::memif::{
    MODE_ETHERNET, MSG_LEN, MemifDesc, Msg, RING_FLAG_MASK_INT, RING_FLAG_S2M, VERSION, ring_len,
    secret_field,
};

/// log2 of the ring size.
pub const LOG2: u8 = 5;
/// Slots per ring.
pub const SLOTS: u16 = 1 << LOG2;
/// Bytes per buffer.
pub const BUFFER: u32 = 2048;
/// Where the S2M ring, the M2S ring and the buffers sit in region 0.
pub const S2M_AT: u32 = 0;
pub const M2S_AT: u32 = 1024;
pub const BUFFERS_AT: u32 = 4096;
/// Region 0's size: the rings, then 2 × SLOTS buffers (M2S first, then S2M).
pub const REGION: u32 = BUFFERS_AT + 2 * SLOTS as u32 * BUFFER;

fn timespec(d: Duration) -> rustix::event::Timespec {
    rustix::event::Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// A connected control socket to a memif server.
pub struct Control {
    pub sock: OwnedFd,
}

impl Control {
    /// Connects to `path` and reads the server's `HELLO`.
    pub fn connect(path: &Path) -> (Control, Msg) {
        let sock = rustix::net::socket(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            None,
        )
        .unwrap();
        let addr = rustix::net::SocketAddrUnix::new(path).unwrap();
        rustix::net::connect(&sock, &addr).unwrap();
        let c = Control { sock };
        let hello = c.recv().expect("the server speaks first");
        (c, hello)
    }

    pub fn send(&self, msg: &Msg, fd: Option<&OwnedFd>) {
        let fds: Vec<_> = fd.iter().map(|f| f.as_fd()).collect();
        nfhost_sys::send_with_fds(self.sock.as_fd(), &msg.encode(), &fds).unwrap();
    }

    /// The next message, or `None` when the server closed the connection. Waits
    /// at most 10 s.
    pub fn recv(&self) -> Option<Msg> {
        let mut pfd = [rustix::event::PollFd::new(
            &self.sock,
            rustix::event::PollFlags::IN,
        )];
        let ready =
            rustix::event::poll(&mut pfd, Some(&timespec(Duration::from_secs(10)))).unwrap();
        assert!(ready > 0, "the memif server said nothing for 10 s");
        let mut buf = [0u8; MSG_LEN];
        match nfhost_sys::recv_with_fds(self.sock.as_fd(), &mut buf, 1) {
            Ok((0, _)) | Err(nfhost_sys::FdError::Recv(rustix::io::Errno::CONNRESET)) => None,
            Ok((n, _)) => Some(Msg::decode(&buf[..n]).unwrap()),
            Err(e) => panic!("reading the memif socket: {e}"),
        }
    }

    /// Sends `msg` and returns the answer.
    pub fn ask(&self, msg: &Msg, fd: Option<&OwnedFd>) -> Option<Msg> {
        self.send(msg, fd);
        self.recv()
    }

    pub fn init(&self, secret: &str) -> Option<Msg> {
        self.ask(
            &Msg::Init {
                version: VERSION,
                id: 0,
                mode: MODE_ETHERNET,
                secret: secret_field(secret).unwrap(),
                name: "nfhost-test-client".into(),
            },
            None,
        )
    }
}

/// The reason of a `DISCONNECT`, or a panic.
pub fn reason(msg: Option<Msg>) -> String {
    match msg {
        Some(Msg::Disconnect { reason, .. }) => reason,
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

/// A client connected and set up.
pub struct Client {
    pub control: Control,
    pub region: Arc<SharedMemory>,
    pub m2s: MemifRing,
    pub s2m: MemifRing,
    /// Written by the server when frames arrive (unless masked).
    pub rx_irq: EventFd,
    /// Written by this client when it sends (unless the server masked it).
    pub tx_irq: EventFd,
    /// M2S: how far this client has read.
    pub rx_seen: u16,
    /// S2M: how far this client has sent.
    pub tx_head: u16,
}

/// Sets up as DPDK's client does: `INIT`, region 0 (rings and buffers, the memfd
/// sealed against shrinking), the S2M then the M2S ring, `CONNECT`. Panics on any
/// refusal.
pub fn connect(path: &Path, secret: &str) -> Client {
    let (control, hello) = Control::connect(path);
    assert!(matches!(hello, Msg::Hello { .. }), "{hello:?}");
    assert_eq!(control.init(secret), Some(Msg::Ack));
    let region = Arc::new(SharedMemory::create("memif-test-client", REGION as usize).unwrap());
    let region_fd = region.fd().try_clone_to_owned().unwrap();
    assert_eq!(
        control.ask(
            &Msg::AddRegion {
                index: 0,
                size: u64::from(REGION)
            },
            Some(&region_fd)
        ),
        Some(Msg::Ack)
    );
    let s2m = MemifRing::new(region.clone(), S2M_AT as usize, LOG2).unwrap();
    let m2s = MemifRing::new(region.clone(), M2S_AT as usize, LOG2).unwrap();
    assert!(ring_len(LOG2) <= (M2S_AT - S2M_AT) as usize);
    s2m.init();
    m2s.init();
    // Polling until told otherwise, as DPDK's client starts.
    m2s.set_flags(RING_FLAG_MASK_INT);
    let (tx_irq, rx_irq) = (EventFd::new().unwrap(), EventFd::new().unwrap());
    for (flags, at, irq) in [(RING_FLAG_S2M, S2M_AT, &tx_irq), (0, M2S_AT, &rx_irq)] {
        let fd = irq.as_fd().try_clone_to_owned().unwrap();
        let ring = Msg::AddRing {
            flags,
            index: 0,
            region: 0,
            offset: at,
            log2_ring_size: LOG2,
            private_hdr_size: 0,
        };
        assert_eq!(control.ask(&ring, Some(&fd)), Some(Msg::Ack));
    }
    let connected = control.ask(
        &Msg::Connect {
            if_name: "test0".into(),
        },
        None,
    );
    assert!(
        matches!(connected, Some(Msg::Connected { .. })),
        "{connected:?}"
    );
    Client {
        control,
        region,
        m2s,
        s2m,
        rx_irq,
        tx_irq,
        rx_seen: 0,
        tx_head: 0,
    }
}

impl Client {
    /// The offset of M2S buffer `i` (0..SLOTS) in region 0.
    pub fn rx_buffer(i: u16) -> u32 {
        BUFFERS_AT + u32::from(i % SLOTS) * BUFFER
    }

    /// The offset of S2M buffer `i`.
    pub fn tx_buffer(i: u16) -> u32 {
        BUFFERS_AT + (u32::from(SLOTS) + u32::from(i % SLOTS)) * BUFFER
    }

    /// Posts `n` more empty buffers on M2S, each described by `desc(slot index)`.
    pub fn post_buffers(&mut self, n: u16, desc: impl Fn(u16) -> MemifDesc) {
        let head = self.m2s.head();
        for i in 0..n {
            let index = head.wrapping_add(i);
            self.m2s.write_desc(index, &desc(index));
        }
        self.m2s.store_head(head.wrapping_add(n));
    }

    /// Posts `n` good buffers.
    pub fn post_good_buffers(&mut self, n: u16) {
        self.post_buffers(n, |i| MemifDesc {
            region: 0,
            offset: Self::rx_buffer(i),
            length: BUFFER,
            ..MemifDesc::default()
        });
    }

    /// The frames received since the last call: (slot index, length).
    pub fn take_received(&mut self) -> Vec<(u16, u32)> {
        let tail = self.m2s.tail();
        let mut out = Vec::new();
        while self.rx_seen != tail {
            out.push((self.rx_seen, self.m2s.desc(self.rx_seen).length));
            self.rx_seen = self.rx_seen.wrapping_add(1);
        }
        out
    }

    /// Interrupt mode on (the server writes `rx_irq`) or off.
    pub fn interrupts(&self, on: bool) {
        self.m2s.set_flags(if on { 0 } else { RING_FLAG_MASK_INT });
    }

    /// Waits up to `timeout` for the server's rx interrupt; true if it came.
    pub fn wait_rx_irq(&self, timeout: Duration) -> bool {
        let mut pfd = [rustix::event::PollFd::new(
            &self.rx_irq,
            rustix::event::PollFlags::IN,
        )];
        let ready = rustix::event::poll(&mut pfd, Some(&timespec(timeout))).unwrap() > 0;
        if ready {
            let _ = self.rx_irq.try_read();
        }
        ready
    }

    /// Sends descriptors on S2M (their buffers already written), ringing the
    /// server if it asked for interrupts.
    pub fn send(&mut self, descs: &[MemifDesc]) {
        for d in descs {
            self.s2m.write_desc(self.tx_head, d);
            self.tx_head = self.tx_head.wrapping_add(1);
        }
        self.s2m.store_head(self.tx_head);
        if self.s2m.flags() & RING_FLAG_MASK_INT == 0 {
            self.tx_irq.notify().unwrap();
        }
    }

    /// Copies `frame` into S2M buffer `i` and returns its descriptor.
    pub fn tx_frame(&self, i: u16, frame: &[u8]) -> MemifDesc {
        let offset = Self::tx_buffer(i);
        self.region.write_at(offset as usize, frame).unwrap();
        MemifDesc {
            region: 0,
            offset,
            length: frame.len() as u32,
            ..MemifDesc::default()
        }
    }

    /// Region 0's buffer area, as bytes.
    pub fn buffers(&self) -> Vec<u8> {
        let mut out = vec![0; (REGION - BUFFERS_AT) as usize];
        self.region.read_at(BUFFERS_AT as usize, &mut out).unwrap();
        out
    }
}
