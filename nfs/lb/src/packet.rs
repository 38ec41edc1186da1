//! The few headers the load balancer reads and rewrites: Ethernet with up to
//! two 802.1Q / 802.1ad tags left in the frame, IPv4, and the ports of TCP and
//! UDP; plus the checksum updates a DNAT needs (RFC 1624).
//!
//! Hand-written rather than etherparse: the packet path reads a handful of
//! fixed offsets and rewrites six bytes in place, and a slicing parser that
//! also walks IPv6 extension headers costs more than the rest of the path.
//! The tests check every frame we touch against etherparse.
//!
//! Every read goes through `get`, so no frame, however short or inconsistent,
//! can make this module panic.

use nf_sdk::checksum::Delta;
use std::net::{Ipv4Addr, SocketAddrV4};

/// EtherType of IPv4.
const ETHERTYPE_IPV4: u16 = 0x0800;
/// Tag protocol identifiers: 802.1Q, 802.1ad, and the pre-standard QinQ one.
const TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];
/// Most VLAN tags a frame may still carry (QinQ); a third is malformed.
pub(crate) const MAX_VLAN_TAGS: usize = 2;
/// Offset of the EtherType (or first TPID) in an Ethernet II header.
const ETHERTYPE_AT: usize = 12;

/// IP protocol number of TCP.
pub(crate) const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub(crate) const IPPROTO_UDP: u8 = 17;

/// What a frame is, as far as the load balancer cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// Too short for a header it announces, inconsistent lengths, a third VLAN
    /// tag, an IPv4 header that is not version 4 or has IHL < 5.
    Malformed,
    /// A well-formed frame that is not IPv4 (ARP, IPv6, LLDP, ...).
    NotIpv4,
    /// An IPv4 packet whose headers are consistent.
    Ipv4(Ipv4Packet),
}

/// Where the fields of one IPv4 packet sit in its frame, and their values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ipv4Packet {
    /// Offset of the IPv4 header.
    ip: usize,
    /// Offset of the transport header (meaningful when `ports` is set).
    l4: usize,
    /// IP protocol number.
    pub proto: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// TCP or UDP source and destination port; `None` for other protocols and
    /// for fragments after the first, which carry no transport header.
    pub ports: Option<(u16, u16)>,
    /// Whether this is a fragment (more fragments follow, or offset > 0).
    pub fragment: bool,
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes(b.try_into().ok()?))
}

fn set_be16(bytes: &mut [u8], at: usize, value: u16) -> Option<()> {
    bytes
        .get_mut(at..at.checked_add(2)?)?
        .copy_from_slice(&value.to_be_bytes());
    Some(())
}

fn ipv4_at(bytes: &[u8], at: usize) -> Option<Ipv4Addr> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

/// Classifies a frame and locates its IPv4 and TCP/UDP headers.
///
/// The IPv4 header checksum is not verified: a DNAT with an incremental
/// update keeps a bad checksum bad (RFC 1624 §3), so the receiving host still
/// drops the packet, and the fast path saves a pass over the header.
pub(crate) fn parse(frame: &[u8]) -> Parsed {
    parse_checked(frame).unwrap_or(Parsed::Malformed)
}

/// [`parse`], with every out-of-range read a `None`.
fn parse_checked(frame: &[u8]) -> Option<Parsed> {
    let mut at = ETHERTYPE_AT;
    let mut ethertype = be16(frame, at)?;
    let mut tags = 0;
    while TPIDS.contains(&ethertype) {
        tags += 1;
        if tags > MAX_VLAN_TAGS {
            return None;
        }
        at += 4;
        ethertype = be16(frame, at)?;
    }
    if ethertype != ETHERTYPE_IPV4 {
        return Some(Parsed::NotIpv4);
    }

    // RFC 791 §3.1.
    let ip = at + 2;
    let header: &[u8; 20] = frame.get(ip..ip + 20)?.try_into().ok()?;
    if header[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(header[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if ihl < 20 || total < ihl || ip + total > frame.len() {
        return None;
    }
    let flags_offset = u16::from_be_bytes([header[6], header[7]]);
    let more_fragments = flags_offset & 0x2000 != 0;
    let fragment_offset = flags_offset & 0x1fff;
    let proto = header[9];
    let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);

    // The IP payload ends at the total length; bytes after it are Ethernet
    // padding.
    let l4 = ip + ihl;
    let segment = frame.get(l4..ip + total)?;
    let ports = if fragment_offset != 0 {
        None
    } else {
        match proto {
            // RFC 9293 §3.1: data offset in 32-bit words, at least 5.
            IPPROTO_TCP => {
                let data_offset = usize::from(*segment.get(12)? >> 4) * 4;
                if segment.len() < 20 || data_offset < 20 || data_offset > segment.len() {
                    return None;
                }
                Some((be16(segment, 0)?, be16(segment, 2)?))
            }
            // RFC 768: the length counts the 8-byte header. A first fragment
            // holds only part of the datagram its length describes.
            IPPROTO_UDP => {
                let length = usize::from(be16(segment, 4)?);
                if !more_fragments && (length < 8 || length > segment.len()) {
                    return None;
                }
                Some((be16(segment, 0)?, be16(segment, 2)?))
            }
            _ => None,
        }
    };

    Some(Parsed::Ipv4(Ipv4Packet {
        ip,
        l4,
        proto,
        src,
        dst,
        ports,
        fragment: more_fragments || fragment_offset != 0,
    }))
}

/// Which end of a connection a rewrite changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Source address and port (replies, back to the VIP).
    Src,
    /// Destination address and port (DNAT, to a backend).
    Dst,
}

/// The one's-complement checksum after some 16-bit words it covers changed
/// from `old` to `new`: RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`.
///
/// Eqn. 3 rather than RFC 1141's `HC' = HC + m - m'`, which can yield 0xFFFF
/// (negative zero) where a full recomputation yields 0x0000 (RFC 1624 §3).
pub(crate) fn checksum_adjust(checksum: u16, old: &[u16], new: &[u16]) -> u16 {
    delta(old, new).apply(checksum)
}

/// The one's-complement change of the words `old` → `new` ([`nf_sdk::checksum`]).
fn delta(old: &[u16], new: &[u16]) -> Delta {
    let mut delta = Delta::default();
    for (&m, &m_new) in old.iter().zip(new) {
        delta.word(m, m_new);
    }
    delta
}

fn words(addr: Ipv4Addr) -> [u16; 2] {
    let [a, b, c, d] = addr.octets();
    [u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])]
}

/// Rewrites one end of a TCP or UDP packet that [`parse`] located (with
/// ports) to `to`, updating the IPv4 header checksum and the TCP or UDP
/// checksum, whose pseudo-header covers the addresses (RFC 9293 §3.1, RFC 768).
///
/// Returns `None`, with the frame untouched, if the packet has no ports.
pub(crate) fn rewrite(
    frame: &mut [u8],
    packet: &Ipv4Packet,
    end: End,
    to: SocketAddrV4,
) -> Option<()> {
    let (old_port, addr_at, port_at) = match (end, packet.ports) {
        (End::Src, Some((sport, _))) => (sport, packet.ip + 12, packet.l4),
        (End::Dst, Some((_, dport))) => (dport, packet.ip + 16, packet.l4 + 2),
        (_, None) => return None,
    };
    let old_addr = ipv4_at(frame, addr_at)?;
    let (old_ip, new_ip) = (words(old_addr), words(*to.ip()));
    let ip_checksum_at = packet.ip + 10;
    let l4_checksum_at = match packet.proto {
        IPPROTO_TCP => packet.l4 + 16,
        IPPROTO_UDP => packet.l4 + 6,
        _ => return None,
    };
    let ip_checksum = be16(frame, ip_checksum_at)?;
    let l4_checksum = be16(frame, l4_checksum_at)?;

    let l4_delta = delta(
        &[old_ip[0], old_ip[1], old_port],
        &[new_ip[0], new_ip[1], to.port()],
    );
    // UDP: zero means the sender computed none, and a computed zero is sent as all
    // ones (RFC 768); `apply_udp` does both.
    let l4_checksum = if packet.proto == IPPROTO_UDP {
        l4_delta.apply_udp(l4_checksum)
    } else {
        l4_delta.apply(l4_checksum)
    };
    set_be16(frame, l4_checksum_at, l4_checksum)?;
    set_be16(
        frame,
        ip_checksum_at,
        checksum_adjust(ip_checksum, &old_ip, &new_ip),
    )?;
    frame
        .get_mut(addr_at..addr_at + 4)?
        .copy_from_slice(&to.ip().octets());
    set_be16(frame, port_at, to.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1624 §4's example: HC = 0xDD2F, m = 0x5555 → m' = 0x3285.
    #[test]
    fn rfc1624_example() {
        assert_eq!(checksum_adjust(0xdd2f, &[0x5555], &[0x3285]), 0x0000);
        // And back: eqn. 3 gives 0x0000's inverse image, never 0xFFFF.
        assert_eq!(checksum_adjust(0x0000, &[0x3285], &[0x5555]), 0xdd2f);
    }

    #[test]
    fn no_change_keeps_the_checksum() {
        for hc in [0x0000, 0x1234, 0xfffe] {
            assert_eq!(checksum_adjust(hc, &[0xabcd, 0], &[0xabcd, 0]), hc);
        }
    }

    #[test]
    fn short_and_odd_frames_never_read_past_the_end() {
        for n in 0..64 {
            let frame = vec![0x08; n];
            let _ = parse(&frame);
        }
        let mut tiny = [0u8; 3];
        let fake = Ipv4Packet {
            ip: 14,
            l4: 34,
            proto: IPPROTO_TCP,
            src: Ipv4Addr::UNSPECIFIED,
            dst: Ipv4Addr::UNSPECIFIED,
            ports: Some((1, 2)),
            fragment: false,
        };
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1);
        assert_eq!(rewrite(&mut tiny, &fake, End::Dst, to), None);
        assert_eq!(tiny, [0; 3]);
    }
}
