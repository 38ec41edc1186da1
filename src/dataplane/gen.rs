//! The `gen` wire's packet logic: a traffic generator, a rate pacer and a sink.
//!
//! Pure code (no I/O, no threads, time passed in) that the NIC engine thread drives from
//! its hot loop, so nothing here allocates, locks or makes a syscall per packet:
//!
//! - [`Generator`] writes ready-made frames straight into a VF's buffer ("the DMA"): a
//!   copy of a precomputed template, a 16-byte stamp and an incremental checksum fix.
//! - [`Pacer`] says how many frames may go out now (a token bucket with time passed in).
//! - [`Sink`] counts the frames that come back out to the wire and turns their stamps into
//!   a latency histogram.
//!
//! # Frames
//!
//! Ethernet II, an optional single 802.1Q tag, IPv4 (no options, valid header checksum),
//! UDP or TCP (valid checksum). Flow `i` (0-based) goes from `10.0.(i>>8).(i&255)` port
//! `1024 + i % 64512` to `10.1.(i>>8).(i&255)` port [`DST_PORT`], so every flow is a distinct
//! 5-tuple. Frame `n` uses flow `n % flows` and VLAN `vlans[n % vlans.len()]`, so each
//! VLAN gets an equal share; when the two counts share a factor, a flow stays on a subset
//! of the VLANs (with 1024 flows over 4 VLANs, each VLAN carries its own 256 flows).
//!
//! # Stamp
//!
//! The L4 payload starts with a 2-byte marker [`STAMP_MAGIC`] and then the stamp: the
//! sequence number (`u64`, big endian) and the generation time in µs (`u64`, big endian).
//! The rest of the payload is zeros. The stamp sits at a fixed offset from the end of the
//! L4 header, so the sink finds it however NFs rewrote the frame in front of it (MACs,
//! VLAN tag, addresses, ports). The marker is what tells a stamped frame from foreign
//! traffic; it is 16 bits so that the default 64-byte UDP frame still has room for it.
//!
//! A frame whose payload is shorter than the 18 bytes of marker and stamp carries
//! neither (its payload is all zeros). Smallest stamped frames (`frame_size`, FCS
//! included): UDP 64 untagged / 68 tagged, TCP 76 untagged / 80 tagged.
//!
//! The L4 checksum of each template is computed by etherparse with a zero stamp; writing
//! the stamp folds its eight 16-bit words into it (RFC 1624, eqn. 3: with `m = 0`,
//! `HC' = ~(~HC + m')`).

use std::fmt;

use etherparse::err::packet::BuildWriteError;
use etherparse::{LaxSlicedPacket, PacketBuilder, TransportSlice, VlanId};
use thiserror::Error;

use crate::nic::types::{MacAddr, Micros};

/// Length of the Ethernet frame check sequence. Traffic generators (and RFC 2544) count it
/// in the frame size; it is not in memory, the NIC appends it on the wire.
pub const FCS_LEN: usize = 4;
/// Smallest `frame_size`: the Ethernet minimum, FCS included.
pub const MIN_FRAME_SIZE: usize = 64;
/// Largest `frame_size`: a 9000-byte jumbo frame, FCS included.
pub const MAX_FRAME_SIZE: usize = 9000;
/// Largest number of flows (one template each).
pub const MAX_FLOWS: u32 = 65536;
/// Highest accepted rate: above 400 GbE line rate at 64 bytes (595 Mpps).
pub const MAX_RATE_PPS: u64 = 1_000_000_000;
/// Destination port of every flow (iperf's default).
pub const DST_PORT: u16 = 5001;
/// Marker in front of the stamp, the first two bytes of the L4 payload.
pub const STAMP_MAGIC: u16 = 0xc57a;
/// Length of the stamp proper: sequence number and timestamp.
pub const STAMP_LEN: usize = 16;
/// Marker plus stamp: the payload a frame needs to be stamped.
pub const STAMPED_PAYLOAD_MIN: usize = MAGIC_LEN + STAMP_LEN;
/// Default source MAC: locally administered unicast.
pub const DEFAULT_SRC_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0xfe, 0x01]);
/// Default destination MAC: locally administered unicast.
pub const DEFAULT_DST_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0xff, 0x01]);

const MAGIC_LEN: usize = 2;
const ETH_LEN: usize = 14;
const VLAN_LEN: usize = 4;
const IPV4_LEN: usize = 20;
const UDP_LEN: usize = 8;
const TCP_LEN: usize = 20;
/// Offset of the 802.1Q TCI (PCP, DEI, VID) in a tagged frame.
const TCI_OFF: usize = 14;
/// End of the source MAC in the Ethernet header.
const SRC_MAC_END: usize = 12;
/// Room for the longest header stack: Ethernet, 802.1Q, IPv4, TCP.
const HEAD_STRIDE: usize = ETH_LEN + VLAN_LEN + IPV4_LEN + TCP_LEN;
const TTL: u8 = 64;
const TCP_WINDOW: u16 = 65535;

/// A [`GenConfig`] the generator cannot honour; each message says what to change.
#[derive(Debug, Error)]
pub enum GenError {
    /// The rate is beyond anything a port can carry.
    #[error(
        "rate of {rate_pps} frames/s exceeds the maximum of {MAX_RATE_PPS}; use 0 for as fast as possible"
    )]
    Rate {
        /// The requested rate.
        rate_pps: u64,
    },
    /// The frame size is outside the Ethernet range.
    #[error(
        "frame size {frame_size} is outside {MIN_FRAME_SIZE}..={MAX_FRAME_SIZE} bytes (the Ethernet frame length including the 4-byte FCS)"
    )]
    FrameSize {
        /// The requested frame size.
        frame_size: usize,
    },
    /// A VLAN id is reserved or out of range.
    #[error(
        "VLAN id {vid} is outside 1..=4094 (0 and 4095 are reserved); leave the list empty for untagged frames"
    )]
    Vlan {
        /// The offending VLAN id.
        vid: u16,
    },
    /// The flow count is zero or above what the generator keeps templates for.
    #[error("flow count {flows} is outside 1..={MAX_FLOWS}")]
    Flows {
        /// The requested number of flows.
        flows: u32,
    },
    /// The TCP share is not a percentage.
    #[error("TCP share {tcp_percent}% is above 100%")]
    TcpPercent {
        /// The requested share.
        tcp_percent: u8,
    },
    /// The source MAC is not one a station may send from.
    #[error("source MAC {mac} is not a unicast station address (group bit set or all zeros)")]
    SrcMac {
        /// The requested source MAC.
        mac: MacAddr,
    },
    /// The destination MAC is all zeros.
    #[error("destination MAC {mac} is all zeros; use a station, multicast or broadcast address")]
    DstMac {
        /// The requested destination MAC.
        mac: MacAddr,
    },
    /// etherparse refused to build a template frame.
    #[error("building the template frame of flow {flow} failed")]
    Build {
        /// The flow whose template failed.
        flow: u32,
        /// What etherparse reported.
        #[source]
        source: BuildWriteError,
    },
}

/// Configuration of the `gen` wire's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenConfig {
    /// Frames per second; 0 = as fast as the engine can go.
    pub rate_pps: u64,
    /// Ethernet frame length **including the 4-byte FCS**, as traffic generators and
    /// RFC 2544 count it: a 64-byte frame is 60 bytes in memory. 64..=9000.
    pub frame_size: usize,
    /// VLAN ids (1..=4094) the frames round-robin over; empty = untagged.
    pub vlans: Vec<u16>,
    /// Number of distinct IPv4 5-tuples, 1..=65536.
    pub flows: u32,
    /// Share of flows (and so of frames) that are TCP, 0..=100; the rest are UDP.
    pub tcp_percent: u8,
    /// Source MAC of every frame.
    pub src_mac: MacAddr,
    /// Destination MAC of every frame.
    pub dst_mac: MacAddr,
    /// One destination (IPv4 address and port) for every flow, such as a load
    /// balancer's VIP; flows then differ by source address and port only. `None`
    /// gives each flow its own destination `10.1.x.y:5001`.
    pub dst: Option<([u8; 4], u16)>,
    /// Each VLAN's frames come from a source MAC of their own: `src_mac` with the
    /// VLAN id in its last two octets (VLAN 100 from `…:00:64`), as if every VLAN had
    /// its own host, like the two sides of a two-way chain. `false`: every frame comes
    /// from `src_mac`. No effect on untagged frames.
    pub src_mac_per_vlan: bool,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            rate_pps: 0,
            frame_size: 64,
            vlans: Vec::new(),
            flows: 1024,
            tcp_percent: 0,
            src_mac: DEFAULT_SRC_MAC,
            dst_mac: DEFAULT_DST_MAC,
            dst: None,
            src_mac_per_vlan: false,
        }
    }
}

impl GenConfig {
    /// Checks every field; the first bad one is reported.
    pub fn validate(&self) -> Result<(), GenError> {
        if self.rate_pps > MAX_RATE_PPS {
            return Err(GenError::Rate {
                rate_pps: self.rate_pps,
            });
        }
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&self.frame_size) {
            return Err(GenError::FrameSize {
                frame_size: self.frame_size,
            });
        }
        if let Some(&vid) = self.vlans.iter().find(|&&v| !(1..=4094).contains(&v)) {
            return Err(GenError::Vlan { vid });
        }
        if !(1..=MAX_FLOWS).contains(&self.flows) {
            return Err(GenError::Flows { flows: self.flows });
        }
        if self.tcp_percent > 100 {
            return Err(GenError::TcpPercent {
                tcp_percent: self.tcp_percent,
            });
        }
        if !self.src_mac.is_unicast() {
            return Err(GenError::SrcMac { mac: self.src_mac });
        }
        if self.dst_mac == MacAddr::ZERO {
            return Err(GenError::DstMac { mac: self.dst_mac });
        }
        Ok(())
    }

    /// Length of a frame in memory: `frame_size` minus the FCS.
    pub fn frame_len(&self) -> usize {
        self.frame_size.saturating_sub(FCS_LEN)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    fn index(self) -> usize {
        match self {
            Proto::Udp => 0,
            Proto::Tcp => 1,
        }
    }
}

/// Where things sit in every frame of one protocol (all flows of it share a layout).
#[derive(Debug)]
struct Layout {
    proto: Proto,
    /// End of the L4 header = start of the payload.
    l4_end: usize,
    /// Offset of the L4 checksum.
    csum_off: usize,
    /// Offset of the stamp (after the marker), if the payload has room for it.
    stamp_off: Option<usize>,
    /// The payload: marker and zero stamp when stamped, zeros otherwise.
    payload: Vec<u8>,
}

impl Layout {
    fn new(proto: Proto, tagged: bool, frame_len: usize) -> Self {
        let l4_start = ETH_LEN + if tagged { VLAN_LEN } else { 0 } + IPV4_LEN;
        let (l4_len, csum_rel) = match proto {
            Proto::Udp => (UDP_LEN, 6),
            Proto::Tcp => (TCP_LEN, 16),
        };
        let l4_end = l4_start + l4_len;
        // Validation guarantees frame_len >= 60 >= the longest header stack (58).
        let payload_len = frame_len.saturating_sub(l4_end);
        let mut payload = vec![0; payload_len];
        let stamp_off = if payload_len >= STAMPED_PAYLOAD_MIN {
            payload[..MAGIC_LEN].copy_from_slice(&STAMP_MAGIC.to_be_bytes());
            Some(l4_end + MAGIC_LEN)
        } else {
            None
        };
        Layout {
            proto,
            l4_end,
            csum_off: l4_start + csum_rel,
            stamp_off,
            payload,
        }
    }
}

/// Per-flow state next to its header template.
#[derive(Debug, Clone, Copy)]
struct FlowMeta {
    proto: Proto,
    /// `~HC` of the template (zero stamp), as a ones-complement value in 1..=0xffff.
    csum_base: u16,
}

/// Source of the test generator's frames; see the module docs for their shape.
pub struct Generator {
    frame_len: usize,
    vlans: Vec<u16>,
    src_mac_per_vlan: bool,
    layouts: [Layout; 2],
    flows: Vec<FlowMeta>,
    /// Header bytes (through the L4 header) of every flow, `HEAD_STRIDE` apart.
    heads: Vec<u8>,
    /// Headers of the next frame, VLAN already applied (what `peek_header` shows).
    next_head: [u8; HEAD_STRIDE],
    flow: usize,
    vlan: usize,
    seq: u64,
    generated: u64,
}

impl fmt::Debug for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The templates run to megabytes; show the shape, not the bytes.
        f.debug_struct("Generator")
            .field("frame_len", &self.frame_len)
            .field("flows", &self.flows.len())
            .field("vlans", &self.vlans)
            .field("next_flow", &self.flow)
            .field("generated", &self.generated)
            .finish_non_exhaustive()
    }
}

/// Whether flow `i` is TCP: spreads `tcp_percent` evenly over the flows (Bresenham).
fn flow_is_tcp(i: u32, tcp_percent: u8) -> bool {
    let p = u64::from(tcp_percent);
    let i = u64::from(i);
    (i + 1) * p / 100 > i * p / 100
}

impl Generator {
    /// Validates `config` and builds one template per flow with etherparse.
    ///
    /// Costs one full frame build and checksum per flow (65536 × 9000 bytes at worst);
    /// memory is `flows × 58` bytes of headers plus two payloads.
    pub fn new(config: &GenConfig) -> Result<Generator, GenError> {
        config.validate()?;
        let frame_len = config.frame_len();
        let tagged = !config.vlans.is_empty();
        let first_vid = match config.vlans.first() {
            // validate() has checked the range; etherparse's error would only repeat it.
            Some(&vid) => Some(VlanId::try_new(vid).map_err(|_| GenError::Vlan { vid })?),
            None => None,
        };
        let layouts = [
            Layout::new(Proto::Udp, tagged, frame_len),
            Layout::new(Proto::Tcp, tagged, frame_len),
        ];
        let flow_count = config.flows as usize;
        let mut flows = Vec::with_capacity(flow_count);
        let mut heads = vec![0; flow_count * HEAD_STRIDE];
        let mut scratch = Vec::with_capacity(frame_len);
        for (i, head) in (0..config.flows).zip(heads.chunks_exact_mut(HEAD_STRIDE)) {
            let proto = if flow_is_tcp(i, config.tcp_percent) {
                Proto::Tcp
            } else {
                Proto::Udp
            };
            let layout = &layouts[proto.index()];
            build_template(config, i, proto, first_vid, &layout.payload, &mut scratch)?;
            debug_assert_eq!(scratch.len(), frame_len, "template length");
            head[..layout.l4_end].copy_from_slice(&scratch[..layout.l4_end]);
            let hc = u16::from_be_bytes([scratch[layout.csum_off], scratch[layout.csum_off + 1]]);
            // A UDP checksum of 0xffff stands for a computed 0, i.e. a sum of 0xffff (-0).
            let csum_base = match !hc {
                0 => 0xffff,
                base => base,
            };
            flows.push(FlowMeta { proto, csum_base });
        }
        let mut generator = Generator {
            frame_len,
            vlans: config.vlans.clone(),
            src_mac_per_vlan: config.src_mac_per_vlan,
            layouts,
            flows,
            heads,
            next_head: [0; HEAD_STRIDE],
            flow: 0,
            vlan: 0,
            seq: 0,
            generated: 0,
        };
        generator.prepare_next();
        Ok(generator)
    }

    /// Writes the next frame into `dst` and returns its length, or `None` (and writes
    /// nothing) if `dst` is shorter than [`frame_len`](Self::frame_len).
    pub fn write_next(&mut self, dst: &mut [u8], now: Micros) -> Option<usize> {
        let len = self.frame_len;
        let frame = dst.get_mut(..len)?;
        let meta = self.flows[self.flow];
        let layout = &self.layouts[meta.proto.index()];
        let (head, payload) = frame.split_at_mut(layout.l4_end);
        head.copy_from_slice(&self.next_head[..layout.l4_end]);
        payload.copy_from_slice(&layout.payload);
        if let Some(off) = layout.stamp_off {
            frame[off..off + 8].copy_from_slice(&self.seq.to_be_bytes());
            frame[off + 8..off + STAMP_LEN].copy_from_slice(&now.0.to_be_bytes());
            let csum = stamped_checksum(meta.csum_base, self.seq, now.0, layout.proto);
            frame[layout.csum_off..layout.csum_off + 2].copy_from_slice(&csum.to_be_bytes());
        }
        self.seq = self.seq.wrapping_add(1);
        self.generated += 1;
        self.flow += 1;
        if self.flow == self.flows.len() {
            self.flow = 0;
        }
        self.vlan += 1;
        if self.vlan >= self.vlans.len() {
            self.vlan = 0;
        }
        self.prepare_next();
        Some(len)
    }

    /// The next frame's headers (Ethernet, 802.1Q tag if any, IPv4, UDP/TCP) as
    /// [`write_next`](Self::write_next) will write them, so the switch can pick the
    /// destination before the frame is written. Only the L4 checksum may still change:
    /// it covers the stamp, which depends on the time of writing (so does the payload,
    /// which is not included).
    pub fn peek_header(&self) -> &[u8] {
        let layout = &self.layouts[self.flows[self.flow].proto.index()];
        &self.next_head[..layout.l4_end]
    }

    /// Length in memory of every frame: `frame_size` minus the FCS.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Frames written so far.
    pub fn generated(&self) -> u64 {
        self.generated
    }

    fn prepare_next(&mut self) {
        let start = self.flow * HEAD_STRIDE;
        self.next_head
            .copy_from_slice(&self.heads[start..start + HEAD_STRIDE]);
        if let Some(&vid) = self.vlans.get(self.vlan) {
            // PCP 0, DEI 0: the TCI is the VID alone.
            self.next_head[TCI_OFF..TCI_OFF + 2].copy_from_slice(&vid.to_be_bytes());
            if self.src_mac_per_vlan {
                // Not covered by any checksum: the IP and L4 ones start after it.
                self.next_head[SRC_MAC_END - 2..SRC_MAC_END].copy_from_slice(&vid.to_be_bytes());
            }
        }
    }
}

fn build_template(
    config: &GenConfig,
    flow: u32,
    proto: Proto,
    vid: Option<VlanId>,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), GenError> {
    let [_, _, hi, lo] = flow.to_be_bytes();
    let src_ip = [10, 0, hi, lo];
    let (dst_ip, dst_port) = config.dst.unwrap_or(([10, 1, hi, lo], DST_PORT));
    // flow < 65536, so the remainder fits; 1024 + 64511 = 65535.
    let src_port = 1024 + (flow % 64512) as u16;
    let eth = PacketBuilder::ethernet2(config.src_mac.0, config.dst_mac.0);
    let ip = match vid {
        Some(vid) => eth.single_vlan(vid).ipv4(src_ip, dst_ip, TTL),
        None => eth.ipv4(src_ip, dst_ip, TTL),
    };
    out.clear();
    let built = match proto {
        Proto::Udp => ip.udp(src_port, dst_port).write(out, payload),
        // An established-looking data segment: ACK + PSH, so stateful NFs let it pass
        // as mid-connection traffic rather than a flagless oddity.
        Proto::Tcp => ip
            .tcp(
                src_port,
                dst_port,
                flow.wrapping_mul(0x9e37_79b9),
                TCP_WINDOW,
            )
            .ack(1)
            .psh()
            .write(out, payload),
    };
    built.map_err(|source| GenError::Build { flow, source })
}

/// Ones-complement sum of the four 16-bit words of `x`, unfolded.
fn word_sum(x: u64) -> u64 {
    (x >> 48) + ((x >> 32) & 0xffff) + ((x >> 16) & 0xffff) + (x & 0xffff)
}

/// Folds carries back in until the sum fits 16 bits (end-around carry).
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The L4 checksum after writing the stamp over a zero stamp (RFC 1624, eqn. 3).
fn stamped_checksum(base: u16, seq: u64, timestamp: u64, proto: Proto) -> u16 {
    let csum = !fold(u64::from(base) + word_sum(seq) + word_sum(timestamp));
    // RFC 768: a computed UDP checksum of 0 is sent as all ones (0 means "none").
    if csum == 0 && proto == Proto::Udp {
        0xffff
    } else {
        csum
    }
}

/// Token-bucket rate limiter with time passed in.
///
/// Credit accrues at `rate_pps` frames per second up to a burst cap of 1 ms of traffic
/// (at least [`Pacer::MIN_BURST`] frames), so an engine that stalls catches up on jitter
/// but never floods after a long idle. Credit is kept in millionths of a frame, so the
/// long-run rate is exact.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate_pps: u64,
    /// Millionths of a frame.
    credit: u64,
    cap: u64,
    last: Option<Micros>,
}

/// One frame in credit units (millionths of a frame; credit grows `rate_pps` per µs).
const UNIT: u64 = 1_000_000;

impl Pacer {
    /// Smallest burst cap in frames, so low rates tolerate a late wake-up.
    pub const MIN_BURST: u64 = 4;

    /// A pacer for `rate_pps` frames per second; 0 = unlimited.
    pub fn new(rate_pps: u64) -> Self {
        let burst = (rate_pps / 1000).max(Self::MIN_BURST);
        Pacer {
            rate_pps,
            credit: 0,
            cap: burst.saturating_mul(UNIT),
            last: None,
        }
    }

    /// The configured rate (0 = unlimited).
    pub fn rate_pps(&self) -> u64 {
        self.rate_pps
    }

    /// Most frames one call to [`allowance`](Self::allowance) can grant after any idle.
    pub fn burst_cap(&self) -> u64 {
        self.cap / UNIT
    }

    /// How many frames may be generated at `now`, at most `max_batch`; the caller is
    /// assumed to send them all. The first call grants one frame. With rate 0 it is
    /// always `max_batch`.
    pub fn allowance(&mut self, now: Micros, max_batch: u32) -> u32 {
        if self.rate_pps == 0 {
            return max_batch;
        }
        self.credit = self.credit_at(now);
        self.last = Some(self.last.map_or(now, |last| last.max(now)));
        let frames = (self.credit / UNIT).min(u64::from(max_batch));
        self.credit -= frames * UNIT;
        // frames <= max_batch, a u32.
        frames as u32
    }

    /// How many whole frames are due at `now` (as many as wanted for rate 0).
    pub fn due_frames(&self, now: Micros) -> u64 {
        if self.rate_pps == 0 {
            return u64::MAX;
        }
        self.credit_at(now) / UNIT
    }

    /// When the `j`-th (oldest first) of the `granted` frames that
    /// [`allowance`](Self::allowance) granted at `now` fell due: a frame taken later
    /// than it was due carries the time it was due, so the latency measured from its
    /// stamp includes the wait. `now` for rate 0.
    pub fn due_at(&self, now: Micros, granted: u32, j: u32) -> Micros {
        if self.rate_pps == 0 || j >= granted {
            return now;
        }
        let behind = self
            .credit
            .saturating_add(u64::from(granted - 1 - j).saturating_mul(UNIT));
        Micros(now.0.saturating_sub(behind / self.rate_pps))
    }

    /// When the next frame is due: `now` if one is due already, `None` for rate 0.
    pub fn next_due(&self, now: Micros) -> Option<Micros> {
        if self.rate_pps == 0 {
            return None;
        }
        let credit = self.credit_at(now);
        if credit >= UNIT {
            return Some(now);
        }
        let from = self.last.map_or(now, |last| last.max(now));
        let wait = (UNIT - credit).div_ceil(self.rate_pps);
        Some(Micros(from.0.saturating_add(wait)))
    }

    fn credit_at(&self, now: Micros) -> u64 {
        match self.last {
            None => UNIT,
            Some(last) => {
                let elapsed = now.0.saturating_sub(last.0);
                self.credit
                    .saturating_add(elapsed.saturating_mul(self.rate_pps))
                    .min(self.cap)
            }
        }
    }
}

/// Number of latency buckets: bucket 0 holds 0 µs, bucket `k` holds `2^(k-1)..2^k` µs.
const BUCKETS: usize = 65;

/// What the sink found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// A stamp: sequence number and generation time.
    Stamp { seq: u64, timestamp: Micros },
    /// IPv4/UDP or TCP with a payload too short to carry a stamp.
    TooShort,
    /// Not Ethernet/IP/UDP-or-TCP, or no marker where the stamp would be.
    Foreign,
}

/// Looks for the stamp in `head`, a whole frame or its first bytes: the lax parser takes
/// headers whose lengths point past the end of `head` as truncated, not broken.
fn find_stamp(head: &[u8]) -> Found {
    let Ok(packet) = LaxSlicedPacket::from_ethernet(head) else {
        return Found::Foreign;
    };
    let payload = match &packet.transport {
        Some(TransportSlice::Udp(udp)) => udp.payload(),
        Some(TransportSlice::Tcp(tcp)) => tcp.payload(),
        _ => return Found::Foreign,
    };
    let Some(block) = payload.get(..STAMPED_PAYLOAD_MIN) else {
        return Found::TooShort;
    };
    let (magic, stamp) = block.split_at(MAGIC_LEN);
    let (seq, timestamp) = stamp.split_at(8);
    match (
        <[u8; 2]>::try_from(magic),
        <[u8; 8]>::try_from(seq),
        <[u8; 8]>::try_from(timestamp),
    ) {
        (Ok(magic), Ok(seq), Ok(timestamp)) if u16::from_be_bytes(magic) == STAMP_MAGIC => {
            Found::Stamp {
                seq: u64::from_be_bytes(seq),
                timestamp: Micros(u64::from_be_bytes(timestamp)),
            }
        }
        _ => Found::Foreign,
    }
}

/// Latency figures of the stamped frames, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyStats {
    /// Smallest latency seen.
    pub min_us: u64,
    /// Mean latency, rounded down.
    pub avg_us: u64,
    /// Largest latency seen.
    pub max_us: u64,
    /// Median estimate: the upper bound of its log2 bucket, clamped to `min..=max`, so
    /// at most twice the true value.
    pub p50_us: u64,
    /// 99th-percentile estimate, same method as `p50_us`.
    pub p99_us: u64,
}

/// What came back out to the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SinkStats {
    /// Every frame received.
    pub packets: u64,
    /// Their bytes as received (in memory, no FCS).
    pub bytes: u64,
    /// Frames with a stamp: the latency samples.
    pub stamped: u64,
    /// IPv4 UDP/TCP frames whose payload is too short for a stamp, such as the
    /// generator's own smallest frames.
    pub unstamped: u64,
    /// Frames that are not IPv4 UDP/TCP, or have room for a stamp but no marker, or a
    /// stamp from the future (not ours: the generator shares the sink's clock).
    pub foreign: u64,
    /// Frames only counted, not parsed (the engine samples one frame in 64 for latency).
    pub unsampled: u64,
    /// Latency of the stamped frames; `None` until one arrives.
    pub latency: Option<LatencyStats>,
}

/// Counts frames leaving through the `gen` wire and measures their latency.
#[derive(Debug, Clone)]
pub struct Sink {
    packets: u64,
    bytes: u64,
    stamped: u64,
    unstamped: u64,
    foreign: u64,
    unsampled: u64,
    min_us: u64,
    max_us: u64,
    sum_us: u128,
    histogram: [u64; BUCKETS],
}

impl Default for Sink {
    fn default() -> Self {
        Sink::new()
    }
}

impl Sink {
    /// An empty sink.
    pub fn new() -> Self {
        Sink {
            packets: 0,
            bytes: 0,
            stamped: 0,
            unstamped: 0,
            foreign: 0,
            unsampled: 0,
            min_us: u64::MAX,
            max_us: 0,
            sum_us: 0,
            histogram: [0; BUCKETS],
        }
    }

    /// Accounts one frame of `len` bytes that reached the wire at `now`. `head` is the
    /// frame or its first bytes: the engine reads only a prefix out of the NF's memory.
    /// The stamp is found if `head` reaches 18 bytes past the L4 header (at most 80
    /// bytes in from the start of a frame with one tag); otherwise the frame counts as
    /// unstamped.
    pub fn receive(&mut self, head: &[u8], len: usize, now: Micros) {
        self.packets += 1;
        self.bytes += len as u64;
        let head = head.get(..len).unwrap_or(head);
        match find_stamp(head) {
            Found::Stamp { timestamp, .. } if timestamp <= now => {
                self.record(now.0 - timestamp.0);
            }
            Found::Stamp { .. } | Found::Foreign => self.foreign += 1,
            Found::TooShort => self.unstamped += 1,
        }
    }

    /// Accounts one frame without looking inside it (frames not sampled for latency).
    pub fn count(&mut self, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
        self.unsampled += 1;
    }

    fn record(&mut self, latency_us: u64) {
        self.stamped += 1;
        self.min_us = self.min_us.min(latency_us);
        self.max_us = self.max_us.max(latency_us);
        self.sum_us += u128::from(latency_us);
        self.histogram[bucket(latency_us)] += 1;
    }

    /// A snapshot of the counters and latency figures.
    pub fn stats(&self) -> SinkStats {
        let latency = (self.stamped > 0).then(|| LatencyStats {
            min_us: self.min_us,
            // The mean is at most max_us, a u64.
            avg_us: (self.sum_us / u128::from(self.stamped)) as u64,
            max_us: self.max_us,
            p50_us: self.percentile(50),
            p99_us: self.percentile(99),
        });
        SinkStats {
            packets: self.packets,
            bytes: self.bytes,
            stamped: self.stamped,
            unstamped: self.unstamped,
            foreign: self.foreign,
            unsampled: self.unsampled,
            latency,
        }
    }

    /// Upper bound of the bucket holding the `pct`th percentile, clamped to the
    /// observed range.
    fn percentile(&self, pct: u64) -> u64 {
        let rank = (u128::from(self.stamped) * u128::from(pct))
            .div_ceil(100)
            .max(1);
        let mut seen = 0u128;
        for (k, &count) in self.histogram.iter().enumerate() {
            seen += u128::from(count);
            if seen >= rank {
                return bucket_upper(k).clamp(self.min_us, self.max_us);
            }
        }
        self.max_us
    }
}

fn bucket(latency_us: u64) -> usize {
    (u64::BITS - latency_us.leading_zeros()) as usize
}

/// Largest latency in bucket `k`.
fn bucket_upper(k: usize) -> u64 {
    match k {
        0 => 0,
        64.. => u64::MAX,
        k => (1u64 << k) - 1,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use etherparse::{NetSlice, SlicedPacket};

    use super::*;

    /// What a test learns from one generated frame, after checking its checksums.
    #[derive(Debug, Clone, Copy)]
    struct Parsed {
        vid: Option<u16>,
        tuple: ([u8; 4], [u8; 4], u16, u16, bool),
        stamp: Found,
    }

    /// Parses `frame` with etherparse and checks both checksums against ones computed
    /// independently from the parsed headers.
    fn parse_and_verify(frame: &[u8]) -> Parsed {
        let packet = SlicedPacket::from_ethernet(frame).expect("frame parses");
        let vid = packet.vlan_ids().first().map(|v| v.value());
        let Some(NetSlice::Ipv4(ip)) = &packet.net else {
            panic!("not IPv4: {packet:?}");
        };
        let ip = ip.header().to_header();
        assert_eq!(
            ip.calc_header_checksum(),
            ip.header_checksum,
            "IPv4 checksum"
        );
        assert_eq!(
            usize::from(ip.total_len),
            frame.len() - ETH_LEN - vid.map_or(0, |_| 4)
        );
        let (sport, dport, tcp) = match &packet.transport {
            Some(TransportSlice::Udp(udp)) => {
                let expected = udp
                    .to_header()
                    .calc_checksum_ipv4(&ip, udp.payload())
                    .expect("fits");
                assert_eq!(udp.checksum(), expected, "UDP checksum");
                (udp.source_port(), udp.destination_port(), false)
            }
            Some(TransportSlice::Tcp(tcp)) => {
                let expected = tcp
                    .calc_checksum_ipv4(ip.source, ip.destination)
                    .expect("fits");
                assert_eq!(tcp.checksum(), expected, "TCP checksum");
                assert!(tcp.ack() && tcp.psh());
                (tcp.source_port(), tcp.destination_port(), true)
            }
            other => panic!("not UDP/TCP: {other:?}"),
        };
        Parsed {
            vid,
            tuple: (ip.source, ip.destination, sport, dport, tcp),
            stamp: find_stamp(frame),
        }
    }

    /// Offset of the L4 checksum, from the header length `peek_header` returned.
    fn layout_csum_off(tagged: bool, head_len: usize) -> usize {
        let l4_start = ETH_LEN + IPV4_LEN + if tagged { VLAN_LEN } else { 0 };
        match head_len - l4_start {
            UDP_LEN => l4_start + 6,
            TCP_LEN => l4_start + 16,
            other => panic!("L4 header of {other} bytes"),
        }
    }

    fn config(frame_size: usize, vlans: &[u16], tcp_percent: u8, flows: u32) -> GenConfig {
        GenConfig {
            frame_size,
            vlans: vlans.to_vec(),
            tcp_percent,
            flows,
            ..GenConfig::default()
        }
    }

    #[test]
    fn default_config_matches_the_documented_defaults() {
        let cfg = GenConfig::default();
        cfg.validate().expect("default is valid");
        assert_eq!(
            (cfg.rate_pps, cfg.frame_size, cfg.flows, cfg.tcp_percent),
            (0, 64, 1024, 0)
        );
        assert!(cfg.vlans.is_empty());
        assert!(cfg.src_mac.is_unicast() && cfg.dst_mac.is_unicast());
        assert_eq!(cfg.dst_mac.to_string(), "02:00:00:00:ff:01");
        assert_eq!(cfg.src_mac.to_string(), "02:00:00:00:fe:01");
        assert_eq!(cfg.frame_len(), 60);
    }

    #[test]
    fn each_bad_field_is_rejected_with_its_own_error() {
        let base = GenConfig::default();
        let cases: Vec<(GenConfig, GenError)> = vec![
            (
                GenConfig {
                    rate_pps: MAX_RATE_PPS + 1,
                    ..base.clone()
                },
                GenError::Rate {
                    rate_pps: MAX_RATE_PPS + 1,
                },
            ),
            (
                config(63, &[], 0, 1),
                GenError::FrameSize { frame_size: 63 },
            ),
            (
                config(9001, &[], 0, 1),
                GenError::FrameSize { frame_size: 9001 },
            ),
            (config(64, &[10, 0], 0, 1), GenError::Vlan { vid: 0 }),
            (config(64, &[4095], 0, 1), GenError::Vlan { vid: 4095 }),
            (config(64, &[], 0, 0), GenError::Flows { flows: 0 }),
            (config(64, &[], 0, 65537), GenError::Flows { flows: 65537 }),
            (
                config(64, &[], 101, 1),
                GenError::TcpPercent { tcp_percent: 101 },
            ),
            (
                GenConfig {
                    src_mac: MacAddr::BROADCAST,
                    ..base.clone()
                },
                GenError::SrcMac {
                    mac: MacAddr::BROADCAST,
                },
            ),
            (
                GenConfig {
                    src_mac: MacAddr::ZERO,
                    ..base.clone()
                },
                GenError::SrcMac { mac: MacAddr::ZERO },
            ),
            (
                GenConfig {
                    dst_mac: MacAddr::ZERO,
                    ..base.clone()
                },
                GenError::DstMac { mac: MacAddr::ZERO },
            ),
        ];
        for (cfg, expected) in cases {
            // GenError is not PartialEq (etherparse's build error is not); Debug shows
            // variant and fields.
            let expected = format!("{expected:?}");
            let err = cfg.validate().expect_err("rejected");
            assert_eq!(format!("{err:?}"), expected, "{cfg:?}");
            let err = Generator::new(&cfg).expect_err("generator refuses it too");
            assert_eq!(format!("{err:?}"), expected);
        }
        // The edges are fine.
        for cfg in [
            config(64, &[1, 4094], 100, 1),
            config(9000, &[], 0, 65536),
            GenConfig {
                rate_pps: MAX_RATE_PPS,
                dst_mac: MacAddr::BROADCAST,
                ..base.clone()
            },
        ] {
            cfg.validate().expect("edge value accepted");
        }
    }

    #[test]
    fn a_fixed_destination_sends_every_flow_to_it() {
        let cfg = GenConfig {
            dst: Some(([198, 51, 100, 10], 80)),
            tcp_percent: 50,
            flows: 16,
            ..GenConfig::default()
        };
        let mut generator = Generator::new(&cfg).expect("valid");
        let mut buf = vec![0u8; 128];
        let mut sources = HashSet::new();
        for _ in 0..32 {
            let len = generator.write_next(&mut buf, Micros(7)).expect("fits");
            let parsed = parse_and_verify(&buf[..len]);
            let (src, dst, sport, dport, _) = parsed.tuple;
            assert_eq!((dst, dport), ([198, 51, 100, 10], 80));
            sources.insert((src, sport));
        }
        assert_eq!(sources.len(), 16, "flows differ by source");
    }

    #[test]
    fn frames_parse_with_valid_checksums_for_all_sizes_tags_and_protocols() {
        let times = [0, 1, 0xffff, 0xffff_ffff_ffff_ffff, 0x1234_5678_9abc_def0];
        for size in [64, 65, 68, 76, 80, 128, 1518, 9000] {
            for vlans in [&[][..], &[7, 4094, 100][..]] {
                for tcp in [0, 50, 100] {
                    let cfg = config(size, vlans, tcp, 5);
                    let mut generator = Generator::new(&cfg).expect("valid");
                    assert_eq!(generator.frame_len(), size - 4);
                    let mut buf = vec![0u8; 9100];
                    let mut protos = HashSet::new();
                    for n in 0..30u64 {
                        let now = Micros(times[n as usize % times.len()]);
                        let peek = generator.peek_header().to_vec();
                        let len = generator.write_next(&mut buf, now).expect("fits");
                        assert_eq!(len, size - 4, "frame length = frame_size - FCS");
                        let frame = &buf[..len];
                        let csum_off = layout_csum_off(!vlans.is_empty(), peek.len());
                        let mut written = frame[..peek.len()].to_vec();
                        written[csum_off..csum_off + 2]
                            .copy_from_slice(&peek[csum_off..csum_off + 2]);
                        assert_eq!(
                            written, peek,
                            "peek matches the frame but for the L4 checksum"
                        );
                        let parsed = parse_and_verify(frame);
                        protos.insert(parsed.tuple.4);
                        let tagged = !vlans.is_empty();
                        let l4_len = if parsed.tuple.4 { TCP_LEN } else { UDP_LEN };
                        let room = len - ETH_LEN - IPV4_LEN - l4_len - if tagged { 4 } else { 0 };
                        if room >= STAMPED_PAYLOAD_MIN {
                            assert_eq!(
                                parsed.stamp,
                                Found::Stamp {
                                    seq: n,
                                    timestamp: now
                                }
                            );
                        } else {
                            assert_eq!(parsed.stamp, Found::TooShort);
                        }
                    }
                    let expected: HashSet<bool> = match tcp {
                        0 => [false].into(),
                        100 => [true].into(),
                        _ => [false, true].into(),
                    };
                    assert_eq!(protos, expected, "protocol mix at {tcp}%");
                    assert_eq!(generator.generated(), 30);
                }
            }
        }
    }

    #[test]
    fn incremental_checksum_is_right_for_every_residue() {
        // seq and timestamp both step by one, so the stamp's word sum steps by 2 and
        // covers every residue mod 0xffff, including the one where the UDP checksum
        // computes to zero and must go out as 0xffff.
        for (size, tcp) in [(64, 0), (76, 100)] {
            let mut generator = Generator::new(&config(size, &[], tcp, 1)).expect("valid");
            let mut buf = [0u8; 128];
            let mut saw_all_ones = false;
            for t in 0..=0xffffu64 {
                let len = generator.write_next(&mut buf, Micros(t)).expect("fits");
                let parsed = parse_and_verify(&buf[..len]);
                assert!(matches!(parsed.stamp, Found::Stamp { .. }));
                let csum_off = if tcp == 100 { 34 + 16 } else { 34 + 6 };
                saw_all_ones |= buf[csum_off..csum_off + 2] == [0xff, 0xff];
            }
            assert!(
                saw_all_ones || tcp == 100,
                "the 0 → 0xffff case was exercised"
            );
        }
    }

    #[test]
    fn flows_are_distinct_five_tuples_and_repeat_in_order() {
        let flows = 65536;
        let mut generator = Generator::new(&config(64, &[], 30, flows)).expect("valid");
        let mut buf = [0u8; 60];
        let mut first_round = Vec::with_capacity(flows as usize);
        for _ in 0..flows {
            generator.write_next(&mut buf, Micros(5)).expect("fits");
            first_round.push(parse_and_verify(&buf).tuple);
        }
        let distinct: HashSet<_> = first_round.iter().copied().collect();
        assert_eq!(distinct.len(), flows as usize);
        let tcp = first_round.iter().filter(|t| t.4).count();
        assert_eq!(tcp, 65536 * 30 / 100, "TCP share");
        for expected in &first_round[..10] {
            generator.write_next(&mut buf, Micros(6)).expect("fits");
            assert_eq!(
                parse_and_verify(&buf).tuple,
                *expected,
                "second round repeats"
            );
        }
        let (src, dst, sport, dport, _) = first_round[0x0102];
        assert_eq!(
            (src, dst, sport, dport),
            ([10, 0, 1, 2], [10, 1, 1, 2], 1024 + 0x0102, DST_PORT)
        );
    }

    #[test]
    fn each_vlan_can_have_its_own_source_mac() {
        let base = config(128, &[100, 200], 0, 4);
        let src_of = |frame: &[u8]| MacAddr(frame[6..12].try_into().expect("6 bytes"));
        for per_vlan in [false, true] {
            let mut generator = Generator::new(&GenConfig {
                src_mac_per_vlan: per_vlan,
                ..base.clone()
            })
            .expect("valid");
            let mut buf = vec![0u8; generator.frame_len()];
            for n in 0..6u16 {
                let len = generator.write_next(&mut buf, Micros(1)).expect("fits");
                let vid = [100u16, 200][usize::from(n % 2)];
                let mut want = DEFAULT_SRC_MAC;
                if per_vlan {
                    want.0[4..6].copy_from_slice(&vid.to_be_bytes());
                }
                assert_eq!(src_of(&buf), want, "frame {n}, per VLAN {per_vlan}");
                // Checksums still hold: the MAC is outside them.
                assert_eq!(parse_and_verify(&buf[..len]).vid, Some(vid));
            }
        }
    }

    #[test]
    fn vlans_round_robin_and_peek_shows_the_next_tag() {
        let vlans = [100, 200, 300];
        let mut generator = Generator::new(&config(128, &vlans, 50, 4)).expect("valid");
        let mut buf = [0u8; 124];
        for n in 0..12 {
            let expected = vlans[n % 3];
            let peeked = FrameHeaderPeek::of(generator.peek_header());
            assert_eq!(peeked, Some(expected));
            generator.write_next(&mut buf, Micros(1)).expect("fits");
            assert_eq!(parse_and_verify(&buf).vid, Some(expected));
        }
        let mut untagged = Generator::new(&config(128, &[], 0, 4)).expect("valid");
        assert_eq!(FrameHeaderPeek::of(untagged.peek_header()), None);
        untagged.write_next(&mut buf, Micros(1)).expect("fits");
        assert_eq!(parse_and_verify(&buf).vid, None);
    }

    /// The switch's view of a header, through the device model's own parser.
    struct FrameHeaderPeek;

    impl FrameHeaderPeek {
        fn of(header: &[u8]) -> Option<u16> {
            let parsed = crate::nic::veb::FrameHeader::parse(header).expect("parses");
            assert_eq!(parsed.dst, DEFAULT_DST_MAC);
            assert_eq!(parsed.src, DEFAULT_SRC_MAC);
            parsed.tag.map(|t| t.vid)
        }
    }

    #[test]
    fn too_small_buffer_gets_nothing_and_does_not_advance() {
        let mut generator = Generator::new(&config(128, &[5], 0, 3)).expect("valid");
        let mut small = [0xaau8; 123];
        assert_eq!(generator.write_next(&mut small, Micros(9)), None);
        assert!(small.iter().all(|&b| b == 0xaa), "nothing written");
        assert_eq!(generator.generated(), 0);
        let mut big = [0u8; 200];
        assert_eq!(generator.write_next(&mut big, Micros(9)), Some(124));
        let parsed = parse_and_verify(&big[..124]);
        assert_eq!(
            parsed.stamp,
            Found::Stamp {
                seq: 0,
                timestamp: Micros(9)
            }
        );
        assert_eq!(parsed.tuple.0, [10, 0, 0, 0], "still the first flow");
        assert!(
            big[124..].iter().all(|&b| b == 0),
            "nothing beyond the frame"
        );
    }

    /// Drives a pacer like the engine does over `duration_us`, both ends included: take
    /// what is allowed in batches of `batch`; when nothing is, sleep until `next_due`,
    /// but no finer than `tick_us` (timer granularity). Frames are due at the start and
    /// every `1/rate` after, so `rate × duration + 1` is exact.
    fn run_pacer(rate: u64, batch: u32, tick_us: u64, duration_us: u64) -> u64 {
        let mut pacer = Pacer::new(rate);
        let mut now = Micros(1_000_000); // not zero: time need not start at 0
        let end = now.0 + duration_us;
        let mut total = 0u64;
        loop {
            loop {
                let n = pacer.allowance(now, batch);
                assert!(n <= batch);
                total += u64::from(n);
                if n == 0 {
                    break;
                }
            }
            if now.0 >= end {
                return total;
            }
            let due = pacer.next_due(now).expect("limited");
            assert!(
                due > now,
                "nothing allowed, so the next frame is in the future"
            );
            now = Micros(due.0.max(now.0 + tick_us).min(end));
        }
    }

    #[test]
    fn pacer_delivers_the_rate_within_one_batch() {
        let batch = 32;
        for (rate, tick) in [
            (1_000_000, 1),
            (1_000_000, 50),
            (1_000_000, 333),
            (100, 1),
            (100, 1_000),
            (100, 7_000),
        ] {
            let total = run_pacer(rate, batch, tick, 1_000_000);
            assert!(
                total.abs_diff(rate + 1) <= u64::from(batch),
                "rate {rate} tick {tick}µs: {total} frames in 1 s"
            );
        }
    }

    #[test]
    fn pacer_never_bursts_beyond_its_cap_after_idle() {
        for rate in [100, 10_000, 1_000_000, MAX_RATE_PPS] {
            let mut pacer = Pacer::new(rate);
            assert_eq!(
                pacer.allowance(Micros(0), u32::MAX),
                1,
                "first frame at once"
            );
            // An hour of idle, then ask for as much as possible, repeatedly.
            let later = Micros(3_600_000_000);
            let mut burst = 0u64;
            loop {
                let n = pacer.allowance(later, 64);
                if n == 0 {
                    break;
                }
                burst += u64::from(n);
            }
            assert_eq!(burst, pacer.burst_cap(), "rate {rate}");
            assert!(burst <= (rate / 1000).max(Pacer::MIN_BURST));
            assert!(pacer.next_due(later).expect("limited") > later);
        }
    }

    #[test]
    fn pacer_next_due_is_when_the_next_frame_is_allowed() {
        let mut pacer = Pacer::new(100); // one frame per 10 ms
        assert_eq!(pacer.next_due(Micros(5)), Some(Micros(5)));
        assert_eq!(pacer.allowance(Micros(5), 8), 1);
        let due = pacer.next_due(Micros(5)).expect("limited");
        assert_eq!(due, Micros(10_005));
        assert_eq!(pacer.allowance(Micros(10_004), 8), 0);
        assert_eq!(pacer.allowance(due, 8), 1);
        // Time going backwards grants nothing and breaks nothing.
        assert_eq!(pacer.allowance(Micros(0), 8), 0);
        assert_eq!(pacer.next_due(Micros(0)), Some(Micros(20_005)));
    }

    #[test]
    fn frames_taken_late_carry_the_time_they_were_due() {
        let mut pacer = Pacer::new(100_000); // one frame per 10 µs
        assert_eq!(pacer.allowance(Micros(1_000), 64), 1);
        assert_eq!(pacer.due_at(Micros(1_000), 1, 0), Micros(1_000));
        // 45 µs later: four frames due (at 1010, 1020, 1030, 1040), half of a fifth.
        assert_eq!(pacer.due_frames(Micros(1_045)), 4);
        assert_eq!(pacer.allowance(Micros(1_045), 64), 4);
        let due: Vec<u64> = (0..4)
            .map(|j| pacer.due_at(Micros(1_045), 4, j).0)
            .collect();
        assert_eq!(due, [1_010, 1_020, 1_030, 1_040]);
        assert_eq!(pacer.due_frames(Micros(1_045)), 0);
        assert_eq!(Pacer::new(0).due_at(Micros(7), 3, 0), Micros(7));
    }

    #[test]
    fn unlimited_pacer_always_grants_the_batch() {
        let mut pacer = Pacer::new(0);
        for t in [0, 0, 1, 1_000_000] {
            assert_eq!(pacer.allowance(Micros(t), 64), 64);
            assert_eq!(pacer.next_due(Micros(t)), None);
        }
    }

    #[test]
    fn sink_finds_the_stamp_after_nfs_rewrote_the_frame() {
        let mut generator = Generator::new(&config(128, &[42], 50, 2)).expect("valid");
        let mut sink = Sink::new();
        let mut buf = [0u8; 124];
        for (sent, latency) in [(1_000u64, 250u64), (2_000, 7)] {
            let len = generator.write_next(&mut buf, Micros(sent)).expect("fits");
            let mut frame = buf[..len].to_vec();
            // A reflector swaps the MACs, the egress strips the tag, a NAT rewrites the
            // source address (without fixing checksums: the sink does not care).
            let (dst, src) = frame.split_at_mut(6);
            dst.swap_with_slice(&mut src[..6]);
            frame.drain(12..16);
            frame[ETH_LEN + 12..ETH_LEN + 16].copy_from_slice(&[192, 0, 2, 1]);
            assert_eq!(frame[..6], DEFAULT_SRC_MAC.0);
            sink.receive(&frame, frame.len(), Micros(sent + latency));
        }
        // Re-tagged onto another VLAN instead of stripped.
        let len = generator.write_next(&mut buf, Micros(3_000)).expect("fits");
        buf[TCI_OFF..TCI_OFF + 2].copy_from_slice(&999u16.to_be_bytes());
        sink.receive(&buf[..len], len, Micros(3_100));

        let stats = sink.stats();
        assert_eq!((stats.packets, stats.stamped, stats.foreign), (3, 3, 0));
        assert_eq!(stats.bytes, 120 + 120 + 124);
        let latency = stats.latency.expect("samples");
        assert_eq!((latency.min_us, latency.max_us), (7, 250));
        assert_eq!(latency.avg_us, (250 + 7 + 100) / 3);
    }

    #[test]
    fn sink_reads_the_stamp_from_a_prefix_and_counts_the_whole_frame() {
        let mut sink = Sink::new();
        for (size, vlans, tcp) in [(1518, &[][..], 0), (9000, &[3][..], 100)] {
            let mut generator = Generator::new(&config(size, vlans, tcp, 1)).expect("valid");
            let mut buf = vec![0u8; size];
            let len = generator.write_next(&mut buf, Micros(40)).expect("fits");
            // The smallest prefix that still holds the stamp, and the engine's 128.
            let l4_end = ETH_LEN
                + IPV4_LEN
                + vlans.len() * VLAN_LEN
                + [UDP_LEN, TCP_LEN][tcp as usize / 100];
            sink.receive(&buf[..l4_end + STAMPED_PAYLOAD_MIN], len, Micros(45));
            sink.receive(&buf[..128], len, Micros(50));
            // One byte short of the stamp: no latency sample, but not foreign either.
            sink.receive(&buf[..l4_end + STAMPED_PAYLOAD_MIN - 1], len, Micros(50));
        }
        let stats = sink.stats();
        assert_eq!(stats.packets, 6);
        assert_eq!(stats.bytes, 3 * 1514 + 3 * 8996);
        assert_eq!((stats.stamped, stats.unstamped, stats.foreign), (4, 2, 0));
        let latency = stats.latency.expect("samples");
        assert_eq!((latency.min_us, latency.max_us), (5, 10));
    }

    #[test]
    fn sink_counts_foreign_and_unstamped_frames() {
        let mut sink = Sink::new();
        assert_eq!(sink.stats(), SinkStats::default());
        // Garbage, and an ARP-sized frame that is not IP.
        sink.receive(&[1, 2, 3], 3, Micros(10));
        let mut arp = [0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        sink.receive(&arp, arp.len(), Micros(10));
        // UDP with room for a stamp but no marker.
        let mut generator = Generator::new(&config(128, &[], 0, 1)).expect("valid");
        let mut buf = [0u8; 124];
        generator.write_next(&mut buf, Micros(5)).expect("fits");
        let mut no_magic = buf;
        no_magic[42] ^= 0xff;
        sink.receive(&no_magic, no_magic.len(), Micros(10));
        // A stamp from the future is not ours.
        sink.receive(&buf, buf.len(), Micros(4));
        // The generator's own 64-byte TCP frames are too short for a stamp.
        let mut small = Generator::new(&config(64, &[], 100, 1)).expect("valid");
        let mut buf = [0u8; 60];
        small.write_next(&mut buf, Micros(5)).expect("fits");
        sink.receive(&buf, buf.len(), Micros(10));

        let stats = sink.stats();
        assert_eq!(stats.packets, 5);
        assert_eq!(stats.bytes, 3 + 60 + 124 + 124 + 60);
        assert_eq!((stats.foreign, stats.unstamped, stats.stamped), (4, 1, 0));
        assert_eq!(stats.latency, None);
    }

    #[test]
    fn percentiles_come_from_the_log2_histogram() {
        let mut sink = Sink::new();
        // 98 frames at 10 µs, one at 1000 µs, one at 100 000 µs.
        for latency in std::iter::repeat_n(10, 98).chain([1_000, 100_000]) {
            sink.record(latency);
        }
        let latency = sink.stats().latency.expect("samples");
        assert_eq!(latency.min_us, 10);
        assert_eq!(latency.max_us, 100_000);
        assert_eq!(latency.avg_us, (98 * 10 + 1_000 + 100_000) / 100);
        // 10 lies in bucket 8..16; its upper bound is 15, within 2x.
        assert_eq!(latency.p50_us, 15);
        // The 99th of 100 samples is the 1000 µs one: bucket 512..1024.
        assert_eq!(latency.p99_us, 1023);

        let mut one = Sink::new();
        one.record(0);
        let latency = one.stats().latency.expect("samples");
        assert_eq!((latency.p50_us, latency.p99_us, latency.max_us), (0, 0, 0));
        assert_eq!(bucket(u64::MAX), 64);
        assert_eq!(bucket_upper(64), u64::MAX);
    }
}
