//! From frame bytes to the fields the firewall decides on.
//!
//! etherparse validates the frame down to the transport header (lengths,
//! IHL, total length, TCP data offset, IPv6 extension headers); what it
//! accepts is then read from the slices it returns, bounds-checked, so no
//! input panics. The firewall adds three checks of its own:
//!
//! - more than [`MAX_VLAN_TAGS`] VLAN tags in the frame is malformed
//!   (etherparse stops at three link extensions and would call the rest
//!   "not IP");
//! - fragments: etherparse does not parse the transport header of any
//!   fragment, so the first fragment's ports are read here, and a first
//!   fragment too short to hold them is malformed (the "tiny fragment"
//!   attack, RFC 1858 §3), as is a TCP fragment at offset 8 bytes, which
//!   could overwrite the first one's header (RFC 1858 §4). Later fragments
//!   carry no ports;
//! - ICMP echo request and reply are told apart from other ICMP types, for
//!   connection tracking.

use etherparse::{Ipv6ExtensionSlice, NetSlice, SlicedPacket};

use crate::index::Fields;

/// Most VLAN tags allowed in a frame (802.1ad QinQ: service and customer).
pub(crate) const MAX_VLAN_TAGS: usize = 2;

/// The TPIDs of a VLAN tag: 802.1Q, 802.1ad, and the pre-standard QinQ one.
const VLAN_TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// What a frame is, to the firewall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// An IPv4 or IPv6 packet.
    Ip(IpPacket),
    /// A well-formed frame of another EtherType (ARP, LLDP, ...).
    NonIp,
    /// A frame that cannot be parsed.
    Malformed,
}

/// What an IP packet carries above IP, as connection tracking needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// TCP, with its flags byte (RFC 9293 §3.1).
    Tcp { flags: u8 },
    /// UDP.
    Udp,
    /// ICMP or ICMPv6 echo.
    Echo { request: bool, id: u16 },
    /// Anything else, or a fragment without the transport header.
    Other,
}

/// TCP FIN flag.
pub(crate) const TCP_FIN: u8 = 0x01;
/// TCP RST flag.
pub(crate) const TCP_RST: u8 = 0x04;

/// A parsed IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpPacket {
    pub fields: Fields,
    pub transport: Transport,
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    match bytes.get(at..at + 2)? {
        &[hi, lo] => Some(u16::from_be_bytes([hi, lo])),
        _ => None,
    }
}

/// Parses `frame`, whose outer VLAN tag the NIC may have stripped into `tci`
/// (0 if none).
///
/// The packet's VLAN is the stripped tag's id if non-zero, else the id of the
/// outermost tag in the frame with a non-zero id (id 0 is a priority tag,
/// IEEE 802.1Q §9.6). Only tags in the frame count towards
/// [`MAX_VLAN_TAGS`]: they are what must be parsed.
pub(crate) fn parse(frame: &[u8], tci: u16) -> Parsed {
    let mut vlan = tci & 0x0fff;
    let mut at = 12;
    let mut tags = 0;
    loop {
        let Some(ether_type) = be16(frame, at) else {
            return Parsed::Malformed;
        };
        if !VLAN_TPIDS.contains(&ether_type) {
            break;
        }
        tags += 1;
        if tags > MAX_VLAN_TAGS {
            return Parsed::Malformed;
        }
        let Some(tag) = be16(frame, at + 2) else {
            return Parsed::Malformed;
        };
        if vlan == 0 {
            vlan = tag & 0x0fff;
        }
        at += 4;
    }
    let Ok(packet) = SlicedPacket::from_ethernet(frame) else {
        return Parsed::Malformed;
    };
    let vlan = (vlan != 0).then_some(vlan);
    match &packet.net {
        Some(NetSlice::Ipv4(ip)) => {
            let header = ip.header();
            let payload = ip.payload();
            ip_packet(
                false,
                u32::from_be_bytes(header.source()).into(),
                u32::from_be_bytes(header.destination()).into(),
                payload.ip_number.0,
                payload.payload,
                payload
                    .fragmented
                    .then(|| header.fragments_offset().value()),
                vlan,
            )
        }
        Some(NetSlice::Ipv6(ip)) => {
            let header = ip.header();
            let payload = ip.payload();
            let offset = payload.fragmented.then(|| {
                ip.extensions()
                    .clone()
                    .into_iter()
                    .find_map(|ext| match ext {
                        Ipv6ExtensionSlice::Fragment(f) => Some(f.fragment_offset().value()),
                        _ => None,
                    })
                    .unwrap_or(0)
            });
            ip_packet(
                true,
                u128::from_be_bytes(header.source()),
                u128::from_be_bytes(header.destination()),
                payload.ip_number.0,
                payload.payload,
                offset,
                vlan,
            )
        }
        _ => Parsed::NonIp,
    }
}

/// The packet whose transport bytes start at `l4`; `fragment` is the
/// fragment offset in 8-byte units if the packet is a fragment.
fn ip_packet(
    v6: bool,
    src: u128,
    dst: u128,
    proto: u8,
    l4: &[u8],
    fragment: Option<u16>,
    vlan: Option<u16>,
) -> Parsed {
    let mut fields = Fields {
        v6,
        src,
        dst,
        proto,
        ports: None,
        vlan,
    };
    let ip = |fields, transport| Parsed::Ip(IpPacket { fields, transport });
    if let Some(offset) = fragment.filter(|&o| o != 0) {
        if proto == 6 && offset == 1 {
            return Parsed::Malformed;
        }
        return ip(fields, Transport::Other);
    }
    // Unfragmented (etherparse checked the header) or a first fragment (only
    // the length is checked, which is all that is read).
    let (need, echo) = match (proto, v6) {
        (6, _) => (20, None),
        (17, _) => (8, None),
        (1, false) => (8, Some((8, 0))),
        (58, true) => (8, Some((128, 129))),
        _ => return ip(fields, Transport::Other),
    };
    if l4.len() < need {
        return Parsed::Malformed;
    }
    let transport = match echo {
        Some((request, reply)) => match (l4.first(), be16(l4, 4)) {
            (Some(&t), Some(id)) if t == request || t == reply => Transport::Echo {
                request: t == request,
                id,
            },
            _ => Transport::Other,
        },
        None => {
            let (Some(sport), Some(dport)) = (be16(l4, 0), be16(l4, 2)) else {
                return Parsed::Malformed;
            };
            fields.ports = Some((sport, dport));
            if proto == 6 {
                Transport::Tcp {
                    flags: l4.get(13).copied().unwrap_or(0),
                }
            } else {
                Transport::Udp
            }
        }
    };
    ip(fields, transport)
}
