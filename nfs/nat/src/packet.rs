//! Just enough frame parsing for NAT: Ethernet, up to two VLAN tags, IPv4,
//! and the first bytes of TCP, UDP and ICMP.
//!
//! [`parse`] checks every length the translation relies on. The field
//! helpers below read and write through `get`, so even a wrong offset could
//! only misread, never panic: the packet path has no indexing that input
//! could push out of bounds.

use std::net::Ipv4Addr;

/// EtherType of IPv4.
const ETHERTYPE_IPV4: u16 = 0x0800;
/// TPIDs of a VLAN tag in the frame: 802.1Q, 802.1ad (QinQ S-tag), and the
/// pre-standard 0x9100 some switches still send.
const VLAN_TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];
/// Most VLAN tags parsed through (a QinQ pair).
pub(crate) const MAX_VLAN_TAGS: usize = 2;

/// IANA protocol numbers.
pub(crate) const IPPROTO_ICMP: u8 = 1;
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;

/// ICMP types (RFC 792) the NAT handles.
pub(crate) const ICMP_ECHO_REPLY: u8 = 0;
pub(crate) const ICMP_DEST_UNREACHABLE: u8 = 3;
pub(crate) const ICMP_ECHO_REQUEST: u8 = 8;
pub(crate) const ICMP_TIME_EXCEEDED: u8 = 11;
pub(crate) const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// IPv4 header field offsets (RFC 791 §3.1).
pub(crate) mod ipv4 {
    pub const FLAGS_FRAGMENT: usize = 6;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    pub const MIN_LEN: usize = 20;
    /// More-fragments flag and fragment offset; either set means a fragment.
    pub const FRAGMENT_MASK: u16 = 0x3fff;
    /// Fragment offset alone: set means a non-first fragment.
    pub const OFFSET_MASK: u16 = 0x1fff;
}

/// Transport field offsets: ports (RFC 793, RFC 768), checksums, and the
/// ICMP echo identifier (RFC 792).
pub(crate) mod l4 {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const TCP_CHECKSUM: usize = 16;
    pub const TCP_MIN_LEN: usize = 20;
    pub const UDP_LENGTH: usize = 4;
    pub const UDP_CHECKSUM: usize = 6;
    pub const UDP_LEN: usize = 8;
    pub const ICMP_CHECKSUM: usize = 2;
    pub const ICMP_ID: usize = 4;
    pub const ICMP_LEN: usize = 8;
}

/// What a frame is, as far as NAT cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// Well-formed, but not IPv4.
    NonIp,
    /// Runt, truncated or inconsistent headers, or more VLAN tags than we
    /// parse through.
    Malformed,
    /// An IPv4 fragment (first or not).
    Fragment,
    /// A whole IPv4 packet with a complete transport header.
    Ipv4(Ipv4Packet),
}

/// The transport of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// TCP, header complete.
    Tcp,
    /// UDP, header complete and its length consistent.
    Udp,
    /// ICMP, at least the 8-byte header.
    Icmp,
    /// Any other protocol (not parsed).
    Other,
}

/// Where a validated IPv4 packet lies in its frame: `frame[l3..end]` holds
/// the packet (Ethernet padding excluded), whose header is `l4` bytes long
/// and whose transport header is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ipv4Packet {
    pub l3: usize,
    pub end: usize,
    pub l4: usize,
    pub transport: Transport,
}

/// Classifies a frame and, for IPv4, checks every header length.
pub(crate) fn parse(frame: &[u8]) -> Frame {
    // Ethernet II: dst, src, EtherType at 12.
    let mut at = 12;
    if frame.len() < at + 2 {
        return Frame::Malformed;
    }
    let mut ethertype = rd16(frame, at);
    let mut tags = 0;
    while VLAN_TPIDS.contains(&ethertype) {
        if tags == MAX_VLAN_TAGS {
            return Frame::Malformed;
        }
        tags += 1;
        // TPID, TCI, then the next EtherType.
        at += 4;
        if frame.len() < at + 2 {
            return Frame::Malformed;
        }
        ethertype = rd16(frame, at);
    }
    if ethertype != ETHERTYPE_IPV4 {
        return Frame::NonIp;
    }
    let l3 = at + 2;
    let Some(ip) = frame.get(l3..) else {
        return Frame::Malformed;
    };
    match parse_ipv4(ip) {
        Ok((end, l4, transport)) => Frame::Ipv4(Ipv4Packet {
            l3,
            end: l3 + end,
            l4,
            transport,
        }),
        Err(frame) => frame,
    }
}

/// Checks an IPv4 header and its transport header at the start of `ip`
/// (which may run on into Ethernet padding). Returns the packet length, the
/// header length and the transport.
fn parse_ipv4(ip: &[u8]) -> Result<(usize, usize, Transport), Frame> {
    let (ihl, total) = ipv4_lengths(ip).ok_or(Frame::Malformed)?;
    if total > ip.len() {
        return Err(Frame::Malformed);
    }
    if rd16(ip, ipv4::FLAGS_FRAGMENT) & ipv4::FRAGMENT_MASK != 0 {
        return Err(Frame::Fragment);
    }
    let payload = total - ihl;
    let transport = match rd8(ip, ipv4::PROTOCOL) {
        IPPROTO_TCP => {
            // Data offset, in 32-bit words (RFC 793 §3.1).
            let data_offset = usize::from(rd8(ip, ihl + 12) >> 4) * 4;
            if payload < l4::TCP_MIN_LEN || data_offset < l4::TCP_MIN_LEN || data_offset > payload {
                return Err(Frame::Malformed);
            }
            Transport::Tcp
        }
        IPPROTO_UDP => {
            let length = usize::from(rd16(ip, ihl + l4::UDP_LENGTH));
            if payload < l4::UDP_LEN || length < l4::UDP_LEN || length > payload {
                return Err(Frame::Malformed);
            }
            Transport::Udp
        }
        IPPROTO_ICMP => {
            if payload < l4::ICMP_LEN {
                return Err(Frame::Malformed);
            }
            Transport::Icmp
        }
        _ => Transport::Other,
    };
    Ok((total, ihl, transport))
}

/// Header length and total length of the IPv4 header at the start of `ip`,
/// if it is version 4, its IHL at least 5 and no more than the bytes there,
/// and its total length at least the header.
pub(crate) fn ipv4_lengths(ip: &[u8]) -> Option<(usize, usize)> {
    if ip.len() < ipv4::MIN_LEN {
        return None;
    }
    let version_ihl = rd8(ip, 0);
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || ihl < ipv4::MIN_LEN || ihl > ip.len() {
        return None;
    }
    let total = usize::from(rd16(ip, 2));
    if total < ihl {
        return None;
    }
    Some((ihl, total))
}

/// The byte at `at`, 0 past the end.
pub(crate) fn rd8(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

/// The big-endian word at `at`, 0 past the end.
pub(crate) fn rd16(b: &[u8], at: usize) -> u16 {
    b.get(at..)
        .and_then(<[u8]>::first_chunk::<2>)
        .map_or(0, |w| u16::from_be_bytes(*w))
}

/// Writes a big-endian word at `at`; nothing past the end.
pub(crate) fn wr16(b: &mut [u8], at: usize, value: u16) {
    if let Some(w) = b.get_mut(at..).and_then(<[u8]>::first_chunk_mut::<2>) {
        *w = value.to_be_bytes();
    }
}

/// The IPv4 address at `at`, 0.0.0.0 past the end.
pub(crate) fn rd_addr(b: &[u8], at: usize) -> Ipv4Addr {
    b.get(at..)
        .and_then(<[u8]>::first_chunk::<4>)
        .map_or(Ipv4Addr::UNSPECIFIED, |a| Ipv4Addr::from(*a))
}

/// Writes an IPv4 address at `at`; nothing past the end.
pub(crate) fn wr_addr(b: &mut [u8], at: usize, addr: Ipv4Addr) {
    if let Some(a) = b.get_mut(at..).and_then(<[u8]>::first_chunk_mut::<4>) {
        *a = addr.octets();
    }
}
