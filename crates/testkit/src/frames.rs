//! Test frames: Ethernet from [`MAC_A`] to [`MAC_B`], IP TTL 64, headers and
//! checksums written by etherparse's `PacketBuilder`.

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header, IpNumber, PacketBuilder,
    PacketBuilderStep, TcpHeader,
};

/// The source MAC of every test frame (locally administered).
pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];

/// The destination MAC of every unicast test frame (locally administered).
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

/// The builder step at which TCP flags and numbers are set, for
/// [`tcp4_with`] and [`tcp6_with`] (e.g. `|b| b.syn()`).
pub type TcpStep = PacketBuilderStep<TcpHeader>;

const TTL: u8 = 64;
/// TCP sequence number and window of every test segment.
const SEQ: u32 = 1000;
const WINDOW: u16 = 65535;

/// A TCP/IPv4 frame without flags carrying `payload`.
pub fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    tcp4_with(src, dst, sport, dport, payload, |b| b)
}

/// A TCP/IPv4 frame carrying `payload`, its flags (and acknowledgment number)
/// set by `flags`.
pub fn tcp4_with(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: &[u8],
    flags: impl FnOnce(TcpStep) -> TcpStep,
) -> Vec<u8> {
    let builder = flags(
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(src, dst, TTL)
            .tcp(sport, dport, SEQ, WINDOW),
    );
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).expect("build frame");
    frame
}

/// A TCP/IPv6 frame without flags carrying `payload`.
pub fn tcp6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    tcp6_with(src, dst, sport, dport, payload, |b| b)
}

/// A TCP/IPv6 frame carrying `payload`, its flags (and acknowledgment number)
/// set by `flags`.
pub fn tcp6_with(
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    payload: &[u8],
    flags: impl FnOnce(TcpStep) -> TcpStep,
) -> Vec<u8> {
    let builder = flags(
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(src, dst, TTL)
            .tcp(sport, dport, SEQ, WINDOW),
    );
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).expect("build frame");
    frame
}

/// A UDP/IPv4 frame carrying `payload`.
pub fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, TTL)
        .udp(sport, dport);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).expect("build frame");
    frame
}

/// A UDP/IPv6 frame carrying `payload`.
pub fn udp6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(src, dst, TTL)
        .udp(sport, dport);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).expect("build frame");
    frame
}

/// An ICMPv4 echo request (or reply if `!request`) with identifier `id`,
/// sequence number 1 and 8 zero bytes of data.
pub fn echo4(src: [u8; 4], dst: [u8; 4], id: u16, request: bool) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, TTL);
    let builder = if request {
        ip.icmpv4_echo_request(id, 1)
    } else {
        ip.icmpv4_echo_reply(id, 1)
    };
    let mut frame = Vec::with_capacity(builder.size(8));
    builder.write(&mut frame, &[0; 8]).expect("build frame");
    frame
}

/// An ICMPv6 echo request (or reply if `!request`) with identifier `id`,
/// sequence number 1 and 8 zero bytes of data.
pub fn echo6(src: [u8; 16], dst: [u8; 16], id: u16, request: bool) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(src, dst, TTL);
    let builder = if request {
        ip.icmpv6_echo_request(id, 1)
    } else {
        ip.icmpv6_echo_reply(id, 1)
    };
    let mut frame = Vec::with_capacity(builder.size(8));
    builder.write(&mut frame, &[0; 8]).expect("build frame");
    frame
}

/// An IPv4 packet of protocol number `proto` carrying `payload` as is (no
/// transport header is built).
pub fn ip4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, TTL);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut frame, IpNumber(proto), payload)
        .expect("build frame");
    frame
}

/// A broadcast ARP request from [`MAC_A`] at `sender` asking for `target`.
pub fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &MAC_A,
        &sender,
        &[0; 6],
        &target,
    )
    .expect("arp");
    let builder = PacketBuilder::ethernet2(MAC_A, [0xff; 6]).arp(arp);
    let mut frame = Vec::with_capacity(builder.size());
    builder.write(&mut frame).expect("build frame");
    frame
}

/// An LLDP frame (EtherType 0x88cc, to the nearest-bridge group address of
/// IEEE 802.1AB) with an opaque 46-byte body.
pub fn lldp() -> Vec<u8> {
    let header = Ethernet2Header {
        source: MAC_A,
        destination: [0x01, 0x80, 0xc2, 0, 0, 0x0e],
        ether_type: EtherType(0x88cc),
    };
    let mut frame = header.to_bytes().to_vec();
    frame.extend_from_slice(&[0; 46]);
    frame
}

/// `frame` with VLAN tags (VIDs, priority 0) inserted after the MACs,
/// outermost first: one tag is 802.1Q (TPID 0x8100); with more, the outer is
/// an 802.1ad S-tag (0x88a8) and the rest 802.1Q. For one or two tags these
/// are the bytes etherparse's `single_vlan` and `double_vlan` write.
pub fn tagged(frame: &[u8], vlans: &[u16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 4 * vlans.len());
    out.extend_from_slice(&frame[..12]);
    for (i, vid) in vlans.iter().enumerate() {
        let tpid: u16 = if i == 0 && vlans.len() > 1 {
            0x88a8
        } else {
            0x8100
        };
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&vid.to_be_bytes());
    }
    out.extend_from_slice(&frame[12..]);
    out
}

#[cfg(test)]
mod tests {
    use etherparse::PacketBuilder;

    use super::*;

    /// `tagged` writes what etherparse's VLAN builders write, so a test may
    /// tag any frame it builds here.
    #[test]
    fn tagged_matches_etherparse() {
        let plain = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, &[7; 10]);
        let eth = || PacketBuilder::ethernet2(MAC_A, MAC_B);
        let mut single = Vec::new();
        eth()
            .single_vlan(100.try_into().expect("vid"))
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut single, &[7; 10])
            .expect("build");
        let mut double = Vec::new();
        eth()
            .double_vlan(100.try_into().expect("vid"), 200.try_into().expect("vid"))
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut double, &[7; 10])
            .expect("build");
        assert_eq!(tagged(&plain, &[100]), single);
        assert_eq!(tagged(&plain, &[100, 200]), double);
        assert_eq!(tagged(&plain, &[]), plain);
    }
}
