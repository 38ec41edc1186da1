//! What a network function implements: [`NetworkFunction::process`] over a [`Batch`]
//! of packets that live in the NF's own UMEM (zero copy: the NIC wrote each frame
//! once, the NF edits it in place and sets a [`Verdict`]).

use std::fmt;

use arrayvec::ArrayVec;

/// What happens to a packet after `process`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Verdict {
    /// Send it on through the VF's tx (the next hop, or the wire).
    #[default]
    Forward,
    /// Free the frame; nothing is sent.
    Drop,
    /// Send it back out the port it came in (the NF swapped addresses itself).
    Reflect,
}

/// One received frame, in place in the NF's memory.
pub struct Packet<'a> {
    buf: &'a mut [u8],
    len: usize,
    vlan: u16,
    verdict: Verdict,
}

impl fmt::Debug for Packet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packet")
            .field("len", &self.len)
            .field("vlan", &self.vlan)
            .field("verdict", &self.verdict)
            .finish()
    }
}

impl<'a> Packet<'a> {
    /// A packet of `len` bytes at the start of `buf` (the whole frame buffer, so an NF
    /// may grow the packet up to the buffer's size). `len` is clamped to the buffer.
    pub fn new(buf: &'a mut [u8], len: usize, vlan: u16) -> Self {
        let len = len.min(buf.len());
        Packet {
            buf,
            len,
            vlan,
            verdict: Verdict::Forward,
        }
    }

    /// The frame's bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The frame's bytes, to rewrite in place.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }

    /// Frame length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room in the frame buffer.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Changes the frame length (to trim, or to grow into the buffer). Returns false
    /// and changes nothing if `len` exceeds the buffer.
    pub fn set_len(&mut self, len: usize) -> bool {
        if len > self.buf.len() {
            return false;
        }
        self.len = len;
        true
    }

    /// The VLAN tag (TCI) the NIC stripped on receive, 0 if none.
    pub fn vlan(&self) -> u16 {
        self.vlan
    }

    /// The current verdict (`Forward` unless changed).
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Sets the verdict.
    pub fn set_verdict(&mut self, verdict: Verdict) {
        self.verdict = verdict;
    }
}

/// Most packets handed to one `process` call.
pub const MAX_BATCH: usize = 64;

/// The packets of one `process` call.
#[derive(Debug)]
pub struct Batch<'a> {
    packets: Storage<'a>,
}

// The owned variant is big on purpose: a batch lives on the stack of the receive
// loop, and boxing it would allocate once per batch.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Storage<'a> {
    Borrowed(&'a mut [Packet<'a>]),
    Owned(ArrayVec<Packet<'a>, MAX_BATCH>),
}

impl<'a> Batch<'a> {
    /// A batch over packets the caller prepared (tests, benchmarks).
    pub fn new(packets: &'a mut [Packet<'a>]) -> Self {
        Batch {
            packets: Storage::Borrowed(packets),
        }
    }

    /// A batch that owns its packet views (the runtime's, no allocation).
    pub fn from_packets(packets: ArrayVec<Packet<'a>, MAX_BATCH>) -> Self {
        Batch {
            packets: Storage::Owned(packets),
        }
    }

    fn slice(&self) -> &[Packet<'a>] {
        match &self.packets {
            Storage::Borrowed(p) => p,
            Storage::Owned(p) => p,
        }
    }

    fn slice_mut(&mut self) -> &mut [Packet<'a>] {
        match &mut self.packets {
            Storage::Borrowed(p) => p,
            Storage::Owned(p) => p,
        }
    }

    /// Number of packets.
    pub fn len(&self) -> usize {
        self.slice().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slice().is_empty()
    }

    /// The packets, to read and rewrite.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Packet<'a>> {
        self.slice_mut().iter_mut()
    }

    /// The packets, to read.
    pub fn iter(&self) -> std::slice::Iter<'_, Packet<'a>> {
        self.slice().iter()
    }

    /// One packet.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Packet<'a>> {
        self.slice_mut().get_mut(i)
    }
}

/// A network function: handles one batch at a time, in place.
pub trait NetworkFunction: Send + 'static {
    /// Handles one batch; sets each packet's verdict (default `Forward`).
    fn process(&mut self, batch: &mut Batch<'_>);

    /// NF-specific state the host may show (JSON), sent about once a second.
    fn report(&self) -> Option<String> {
        None
    }

    /// Takes a new configuration (the same JSON the NF was started with) while
    /// running, keeping its state where the new configuration allows: a firewall
    /// its connections, a policer its buckets, a load balancer its flows. The host
    /// has validated `config` already. `Err` says why it cannot be applied in place;
    /// nothing has changed then, and the host restarts the NF with the new
    /// configuration instead. By default an NF does not reconfigure in place.
    fn reconfigure(&mut self, config: &str) -> Result<(), String> {
        let _ = config;
        Err("this NF kind does not take a new configuration while running".into())
    }
}

impl NetworkFunction for Box<dyn NetworkFunction> {
    fn process(&mut self, batch: &mut Batch<'_>) {
        (**self).process(batch);
    }

    fn report(&self) -> Option<String> {
        (**self).report()
    }

    fn reconfigure(&mut self, config: &str) -> Result<(), String> {
        (**self).reconfigure(config)
    }
}

/// An Ethernet II frame view in smoltcp's style: getters on `AsRef`, setters on
/// `AsMut`; once [`EthernetFrame::new_checked`] returned `Ok`, no accessor panics.
#[derive(Debug)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: usize = 14;
}

/// A buffer shorter than an Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} bytes is too short for an Ethernet header (14)")]
pub struct Truncated(pub usize);

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer after checking it holds a full header.
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        let len = buffer.as_ref().len();
        if len < field::PAYLOAD {
            return Err(Truncated(len));
        }
        Ok(EthernetFrame { buffer })
    }

    /// Destination MAC.
    pub fn dst(&self) -> [u8; 6] {
        let mut out = [0; 6];
        out.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        out
    }

    /// Source MAC.
    pub fn src(&self) -> [u8; 6] {
        let mut out = [0; 6];
        out.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        out
    }

    /// EtherType (or TPID of an inner tag).
    pub fn ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC.
    pub fn set_dst(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&mac);
    }

    /// Sets the source MAC.
    pub fn set_src(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&mac);
    }

    /// Swaps source and destination in place.
    pub fn swap_addresses(&mut self) {
        let (dst, src) = (self.dst(), self.src());
        self.set_dst(src);
        self.set_src(dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct DropOdd;

    impl NetworkFunction for DropOdd {
        fn process(&mut self, batch: &mut Batch<'_>) {
            for (i, p) in batch.iter_mut().enumerate() {
                if i % 2 == 1 {
                    p.set_verdict(Verdict::Drop);
                }
            }
        }
    }

    #[test]
    fn verdicts_default_to_forward_and_stick() {
        let mut bufs = [[0u8; 64]; 3];
        let [a, b, c] = &mut bufs;
        let mut pkts = [
            Packet::new(a, 60, 0),
            Packet::new(b, 60, 0),
            Packet::new(c, 60, 0),
        ];
        let mut batch = Batch::new(&mut pkts);
        DropOdd.process(&mut batch);
        let v: Vec<_> = batch.iter().map(Packet::verdict).collect();
        assert_eq!(v, [Verdict::Forward, Verdict::Drop, Verdict::Forward]);
    }

    #[test]
    fn packet_length_stays_inside_its_buffer() {
        let mut buf = [0u8; 128];
        let mut p = Packet::new(&mut buf, 500, 7);
        assert_eq!(p.len(), 128);
        assert!(!p.set_len(129));
        assert!(p.set_len(60));
        assert_eq!(p.data().len(), 60);
        assert_eq!(p.vlan(), 7);
    }

    #[test]
    fn ethernet_view_swaps_in_place() {
        let mut buf = [0u8; 60];
        buf[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        buf[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        buf[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let mut eth = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        eth.swap_addresses();
        assert_eq!(eth.dst(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(eth.src(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(eth.ethertype(), 0x0800);
        assert_eq!(
            EthernetFrame::new_checked(&buf[..13]).unwrap_err(),
            Truncated(13)
        );
    }
}
