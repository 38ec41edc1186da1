use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use etherparse::{
    Icmpv4Header, Icmpv4Type, Ipv4Header, NetHeaders, PacketBuilder, PacketHeaders,
    TransportHeader, UdpHeader,
    icmpv4::{DestUnreachableHeader, TimeExceededCode},
};
use nf_sdk::{Batch, MAX_BATCH, NetworkFunction, Packet, Verdict};
use nf_testkit::{MAC_A, MAC_B, arp_request, tagged, tcp4_with, udp4, udp6};
use proptest::prelude::*;
use serde_json::Value;

use super::*;

const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const HOST2: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const REMOTE2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);
const POOL1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const POOL2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

fn sa(addr: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(addr, port)
}

fn nat(json: &str) -> Nat {
    Nat::from_config(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

/// What to build. For echo, the identifier is the port of the endpoint
/// the NAT maps: the source's for a request, the destination's for a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Udp,
    EchoRequest,
    EchoReply,
}

impl Kind {
    fn proto(self) -> Proto {
        match self {
            Kind::Tcp => Proto::Tcp,
            Kind::Udp => Proto::Udp,
            Kind::EchoRequest | Kind::EchoReply => Proto::Icmp,
        }
    }

    /// The kind of the answer to this.
    fn reply(self) -> Kind {
        match self {
            Kind::EchoRequest => Kind::EchoReply,
            Kind::EchoReply => Kind::EchoRequest,
            k => k,
        }
    }
}

/// An Ethernet frame carrying `kind` from `src` to `dst`, built (checksums
/// included) by etherparse.
fn build(kind: Kind, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let (s, d) = (src.ip().octets(), dst.ip().octets());
    let (sport, dport) = (src.port(), dst.port());
    match kind {
        Kind::Tcp => tcp4_with(s, d, sport, dport, payload, |b| b.ack(77)),
        Kind::Udp => udp4(s, d, sport, dport, payload),
        Kind::EchoRequest | Kind::EchoReply => {
            let ip = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(s, d, 64);
            let mut frame = Vec::new();
            if kind == Kind::EchoRequest {
                ip.icmpv4_echo_request(sport, 9).write(&mut frame, payload)
            } else {
                ip.icmpv4_echo_reply(dport, 9).write(&mut frame, payload)
            }
            .expect("build frame");
            frame
        }
    }
}

/// A UDP frame with checksum 0 ("none", RFC 768).
fn udp_no_checksum(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut frame = build(Kind::Udp, src, dst, payload);
    frame[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    frame
}

/// An ICMP error from `from` to `to` quoting `quoted` (an IPv4 packet).
fn icmp_error(from: Ipv4Addr, to: Ipv4Addr, icmp: Icmpv4Type, quoted: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(from.octets(), to.octets(), 64)
        .icmpv4(icmp)
        .write(&mut frame, quoted)
        .expect("build frame");
    frame
}

/// Runs one frame through `nf` at `now`; its verdict and bytes after.
fn run(nf: &mut Nat, frame: &[u8], now: Instant) -> (Verdict, Vec<u8>) {
    let mut buf = frame.to_vec();
    let verdict = nf.process_frame(&mut buf, now);
    (verdict, buf)
}

/// Runs a frame that must be translated; returns it after, checksums checked.
fn pass(nf: &mut Nat, frame: &[u8], now: Instant) -> Vec<u8> {
    let (verdict, after) = run(nf, frame, now);
    assert_eq!(verdict, Verdict::Forward, "{:?}", nf.stats());
    verify_checksums(&after);
    after
}

/// Runs a frame that must be dropped, unchanged.
fn dropped(nf: &mut Nat, frame: &[u8], now: Instant) {
    let (verdict, after) = run(nf, frame, now);
    assert_eq!(verdict, Verdict::Drop, "{:?}", nf.stats());
    assert_eq!(after, frame);
}

/// The parsed headers of an IPv4 frame.
fn headers(frame: &[u8]) -> (Ipv4Header, Option<TransportHeader>, Vec<u8>) {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("parse frame");
    let Some(NetHeaders::Ipv4(ip, _)) = h.net else {
        panic!("not IPv4: {:?}", h.net);
    };
    (ip, h.transport, h.payload.slice().to_vec())
}

/// Checks every checksum of an IPv4 frame against etherparse's own
/// computation: IPv4 header, TCP/UDP (pseudo-header included; UDP 0 means
/// none), ICMP, and for an ICMP error the quoted IPv4 header and, when the
/// quote holds the whole datagram, its UDP or ICMP checksum.
fn verify_checksums(frame: &[u8]) {
    let errors = checksum_errors(frame);
    assert!(errors.is_empty(), "{errors:?} in {frame:02x?}");
}

/// The checksums of `frame` that do not hold, or why it does not parse.
fn checksum_errors(frame: &[u8]) -> Vec<&'static str> {
    let Ok(h) = PacketHeaders::from_ethernet_slice(frame) else {
        return vec!["frame does not parse"];
    };
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        return vec!["not IPv4"];
    };
    let payload = h.payload.slice();
    let mut errors = Vec::new();
    if ip.header_checksum != ip.calc_header_checksum() {
        errors.push("IPv4 header");
    }
    match &h.transport {
        Some(TransportHeader::Tcp(tcp)) => {
            if tcp.calc_checksum_ipv4(ip, payload).ok() != Some(tcp.checksum) {
                errors.push("TCP");
            }
        }
        Some(TransportHeader::Udp(udp)) => {
            if udp.checksum != 0 && udp.calc_checksum_ipv4(ip, payload).ok() != Some(udp.checksum) {
                errors.push("UDP");
            }
        }
        Some(TransportHeader::Icmpv4(icmp)) => {
            if icmp.checksum != icmp.icmp_type.calc_checksum(payload) {
                errors.push("ICMP");
            }
            if matches!(
                icmp.icmp_type,
                Icmpv4Type::DestinationUnreachable(_)
                    | Icmpv4Type::TimeExceeded(_)
                    | Icmpv4Type::ParameterProblem(_)
            ) {
                errors.extend(quoted_checksum_errors(payload));
            }
        }
        _ => errors.push("no TCP, UDP or ICMP header"),
    }
    errors
}

fn quoted_checksum_errors(quoted: &[u8]) -> Vec<&'static str> {
    let Ok((inner, rest)) = Ipv4Header::from_slice(quoted) else {
        return vec!["quoted IPv4 header does not parse"];
    };
    let mut errors = Vec::new();
    if inner.header_checksum != inner.calc_header_checksum() {
        errors.push("quoted IPv4 header");
    }
    let whole = usize::from(inner.total_len) == quoted.len();
    match inner.protocol {
        etherparse::IpNumber::UDP if whole => match UdpHeader::from_slice(rest) {
            Ok((udp, data)) => {
                if udp.checksum != 0
                    && udp.calc_checksum_ipv4(&inner, data).ok() != Some(udp.checksum)
                {
                    errors.push("quoted UDP");
                }
            }
            Err(_) => errors.push("quoted UDP header does not parse"),
        },
        etherparse::IpNumber::ICMP if whole => match Icmpv4Header::from_slice(rest) {
            Ok((icmp, data)) => {
                if icmp.checksum != icmp.icmp_type.calc_checksum(data) {
                    errors.push("quoted ICMP");
                }
            }
            Err(_) => errors.push("quoted ICMP header does not parse"),
        },
        _ => {}
    }
    errors
}

/// The source and destination endpoints of a frame (echo: the identifier
/// as the port of both).
fn endpoints(frame: &[u8]) -> (SocketAddrV4, SocketAddrV4) {
    let (ip, transport, _) = headers(frame);
    let (sport, dport) = match transport.expect("transport") {
        TransportHeader::Tcp(t) => (t.source_port, t.destination_port),
        TransportHeader::Udp(u) => (u.source_port, u.destination_port),
        TransportHeader::Icmpv4(i) => match i.icmp_type {
            Icmpv4Type::EchoRequest(e) | Icmpv4Type::EchoReply(e) => (e.id, e.id),
            other => panic!("not echo: {other:?}"),
        },
        other => panic!("unexpected transport {other:?}"),
    };
    (
        sa(ip.source.into(), sport),
        sa(ip.destination.into(), dport),
    )
}

/// The IPv4 packet of a frame without VLAN tags.
fn ip_part(frame: &[u8]) -> &[u8] {
    &frame[14..]
}

/// Each frame lands in exactly one counter.
fn assert_accounted(s: &NatStats) {
    let sum = s.translated_out
        + s.translated_in
        + s.dnat_in
        + s.dnat_out
        + s.no_mapping_in
        + s.no_mapping_out
        + s.pool_exhausted
        + s.table_full
        + s.non_ip
        + s.malformed
        + s.fragments
        + s.foreign
        + s.unsupported;
    assert_eq!(sum, s.packets, "{s:?}");
}

/// Sends `kind` from `inside` to `remote` and its answer back; checks both
/// translations byte for byte against etherparse-built frames and returns
/// the outside endpoint used.
fn round_trip(
    nf: &mut Nat,
    kind: Kind,
    inside: SocketAddrV4,
    remote: SocketAddrV4,
    now: Instant,
) -> SocketAddrV4 {
    let payload = b"round trip payload";
    let out = pass(nf, &build(kind, inside, remote, payload), now);
    let (outside, to) = endpoints(&out);
    let outside = match kind {
        // An echo's "destination port" is its identifier too.
        Kind::EchoRequest => outside,
        _ => {
            assert_eq!(to, remote);
            outside
        }
    };
    assert_eq!(out, build(kind, outside, remote, payload), "outbound");

    let reply = build(kind.reply(), remote, outside, payload);
    let back = pass(nf, &reply, now);
    assert_eq!(
        back,
        build(kind.reply(), remote, inside, payload),
        "inbound"
    );
    outside
}

#[test]
fn snat_tcp_out_and_back() {
    let mut nf = nat("");
    let now = Instant::now();
    let outside = round_trip(&mut nf, Kind::Tcp, sa(HOST, 40000), sa(REMOTE, 80), now);
    assert_eq!(*outside.ip(), POOL1);
    assert!(outside.port() >= 1024);
    assert_eq!(
        nf.mapping(Endpoint::new(Proto::Tcp, HOST, 40000)),
        Some(Endpoint::new(Proto::Tcp, POOL1, outside.port()))
    );
    let s = nf.stats();
    assert_eq!((s.translated_out, s.translated_in, s.mappings), (1, 1, 1));
    assert_accounted(&s);
}

#[test]
fn snat_udp_out_and_back() {
    let mut nf = nat("");
    let now = Instant::now();
    let outside = round_trip(&mut nf, Kind::Udp, sa(HOST, 5353), sa(REMOTE, 53), now);
    assert_eq!(*outside.ip(), POOL1);
    let s = nf.stats();
    assert_eq!((s.translated_out, s.translated_in, s.mappings), (1, 1, 1));
}

#[test]
fn snat_icmp_echo_out_and_back() {
    let mut nf = nat("");
    let now = Instant::now();
    let outside = round_trip(
        &mut nf,
        Kind::EchoRequest,
        sa(HOST, 0x1234),
        sa(REMOTE, 0),
        now,
    );
    assert_eq!(*outside.ip(), POOL1);
    assert_ne!(outside.port(), 0x1234, "identifier comes from the pool");
    // A second ping with the same identifier reuses the mapping.
    let again = round_trip(
        &mut nf,
        Kind::EchoRequest,
        sa(HOST, 0x1234),
        sa(REMOTE2, 0),
        now,
    );
    assert_eq!(again, outside);
    let s = nf.stats();
    assert_eq!((s.translated_out, s.translated_in, s.mappings), (2, 2, 1));
    // An echo request from outside is not a reply to anything.
    dropped(
        &mut nf,
        &build(Kind::EchoRequest, sa(REMOTE, 7), sa(POOL1, 0), b""),
        now,
    );
    assert_eq!(nf.stats().no_mapping_in, 1);
}

#[test]
fn dnat_forward_and_reply() {
    let mut nf = nat(r#"{"pool": ["203.0.113.1", "203.0.113.2"],
            "forwards": [
              {"proto": "tcp", "outside_port": 8080, "inside": "10.0.0.5:80"},
              {"proto": "udp", "outside_port": 53, "inside": "10.0.0.5:5353", "outside_addr": "203.0.113.2"}
            ]}"#);
    let now = Instant::now();
    let payload = b"GET / HTTP/1.1\r\n\r\n";

    let inbound = build(Kind::Tcp, sa(REMOTE, 50000), sa(POOL1, 8080), payload);
    let delivered = pass(&mut nf, &inbound, now);
    assert_eq!(
        delivered,
        build(Kind::Tcp, sa(REMOTE, 50000), sa(SERVER, 80), payload)
    );
    let reply = build(Kind::Tcp, sa(SERVER, 80), sa(REMOTE, 50000), payload);
    let sent = pass(&mut nf, &reply, now);
    assert_eq!(
        sent,
        build(Kind::Tcp, sa(POOL1, 8080), sa(REMOTE, 50000), payload)
    );

    // The UDP forward lives on the second address only.
    let query = build(Kind::Udp, sa(REMOTE2, 3333), sa(POOL2, 53), b"q");
    let delivered = pass(&mut nf, &query, now);
    assert_eq!(
        delivered,
        build(Kind::Udp, sa(REMOTE2, 3333), sa(SERVER, 5353), b"q")
    );
    let answer = pass(
        &mut nf,
        &build(Kind::Udp, sa(SERVER, 5353), sa(REMOTE2, 3333), b"a"),
        now,
    );
    assert_eq!(
        answer,
        build(Kind::Udp, sa(POOL2, 53), sa(REMOTE2, 3333), b"a")
    );
    dropped(
        &mut nf,
        &build(Kind::Udp, sa(REMOTE2, 3333), sa(POOL1, 53), b"q"),
        now,
    );
    // Forwards are per protocol.
    dropped(
        &mut nf,
        &build(Kind::Udp, sa(REMOTE, 1), sa(POOL1, 8080), b""),
        now,
    );

    let s = nf.stats();
    assert_eq!((s.dnat_in, s.dnat_out, s.no_mapping_in), (2, 2, 2));
    assert_eq!((s.translated_out, s.translated_in), (0, 0));
    assert_eq!(s.mappings, 0, "forwards are not dynamic mappings");

    // Forwards never expire.
    let later = now + Duration::from_secs(10 * 86_400);
    pass(&mut nf, &inbound, later);
    assert_eq!(nf.stats().dnat_in, 3);
}

#[test]
fn forwarded_ports_are_never_allocated() {
    // Two ports, one taken by the forward: every dynamic mapping gets the other.
    let mut nf = nat(r#"{"port_range": "2000-2001",
            "forwards": [{"proto": "udp", "outside_port": 2000, "inside": "10.0.0.5:53"}]}"#);
    let now = Instant::now();
    assert_eq!(nf.free_ports(POOL1, Proto::Udp), 1);
    assert_eq!(nf.free_ports(POOL1, Proto::Tcp), 2);
    let out = pass(
        &mut nf,
        &build(Kind::Udp, sa(HOST, 1), sa(REMOTE, 53), b""),
        now,
    );
    assert_eq!(endpoints(&out).0, sa(POOL1, 2001));
    dropped(
        &mut nf,
        &build(Kind::Udp, sa(HOST, 2), sa(REMOTE, 53), b""),
        now,
    );
    assert_eq!(nf.stats().pool_exhausted, 1);
}

#[test]
fn mapping_is_reused_for_the_flow_and_independent_of_the_remote() {
    let mut nf = nat("");
    let now = Instant::now();
    let first = round_trip(&mut nf, Kind::Udp, sa(HOST, 6000), sa(REMOTE, 53), now);
    let second = round_trip(&mut nf, Kind::Udp, sa(HOST, 6000), sa(REMOTE, 53), now);
    // Endpoint-independent mapping (RFC 4787 REQ-1): same outside endpoint
    // for another remote end.
    let third = round_trip(&mut nf, Kind::Udp, sa(HOST, 6000), sa(REMOTE2, 123), now);
    assert_eq!((first, first), (second, third));
    // Another source port, or another host, gets another port.
    let other_port = round_trip(&mut nf, Kind::Udp, sa(HOST, 6001), sa(REMOTE, 53), now);
    let other_host = round_trip(&mut nf, Kind::Udp, sa(HOST2, 6000), sa(REMOTE, 53), now);
    assert_ne!(other_port, first);
    assert_ne!(other_host, first);
    assert_ne!(other_host, other_port);
    // TCP has its own ports and mappings.
    round_trip(&mut nf, Kind::Tcp, sa(HOST, 6000), sa(REMOTE, 53), now);
    // The inbound side is endpoint-independent too: any remote may answer.
    let from_elsewhere = build(Kind::Udp, sa(REMOTE2, 9), first, b"x");
    let back = pass(&mut nf, &from_elsewhere, now);
    assert_eq!(endpoints(&back).1, sa(HOST, 6000));
    assert_eq!(nf.stats().mappings, 4);
}

#[test]
fn pool_addresses_are_paired_per_host() {
    let mut nf = nat(r#"{"pool": "203.0.113.0/30"}"#);
    let now = Instant::now();
    let mut used = std::collections::BTreeSet::new();
    for host in 1..=40u8 {
        let inside = Ipv4Addr::new(10, 9, 0, host);
        let a = round_trip(&mut nf, Kind::Udp, sa(inside, 1000), sa(REMOTE, 53), now);
        let b = round_trip(&mut nf, Kind::Tcp, sa(inside, 1001), sa(REMOTE, 80), now);
        // "Paired" pooling (RFC 4787 REQ-2): one outside address per host.
        assert_eq!(a.ip(), b.ip());
        assert!(
            Ipv4Prefix::new(Ipv4Addr::new(203, 0, 113, 0), 30)
                .expect("prefix")
                .contains(*a.ip())
        );
        used.insert(*a.ip());
    }
    assert!(
        used.len() > 1,
        "40 hosts all hashed to one address: {used:?}"
    );
}

#[test]
fn idle_mappings_expire_and_the_next_flow_gets_a_new_port() {
    let mut nf = nat(r#"{"timeouts": {"udp_s": 30, "tcp_s": 100, "icmp_s": 5}}"#);
    let t0 = Instant::now();
    let udp = round_trip(&mut nf, Kind::Udp, sa(HOST, 7000), sa(REMOTE, 53), t0);
    let tcp = round_trip(&mut nf, Kind::Tcp, sa(HOST, 7000), sa(REMOTE, 80), t0);
    let echo = round_trip(&mut nf, Kind::EchoRequest, sa(HOST, 7), sa(REMOTE, 0), t0);
    assert_eq!(nf.stats().mappings, 3);

    // The reply refreshes: 29 s after it the UDP mapping is still there.
    let t29 = t0 + Duration::from_secs(29);
    assert_eq!(nf.expire(t29), t29);
    let s = nf.stats();
    assert_eq!((s.mappings, s.expired), (2, 1), "ICMP went after 5 s");
    dropped(
        &mut nf,
        &build(Kind::EchoReply, sa(REMOTE, 0), echo, b""),
        t29,
    );
    let same = round_trip(&mut nf, Kind::Udp, sa(HOST, 7000), sa(REMOTE, 53), t29);
    assert_eq!(same, udp);

    // 30 s of silence: gone, and inbound to it is dropped.
    let t59 = t29 + Duration::from_secs(30);
    dropped(
        &mut nf,
        &build(Kind::Udp, sa(REMOTE, 53), udp, b"late"),
        t59,
    );
    let s = nf.stats();
    assert_eq!((s.mappings, s.expired), (1, 2));
    assert_eq!(nf.mapping(Endpoint::new(Proto::Udp, HOST, 7000)), None);
    // A new flow from the same endpoint: a fresh port (the freed one went
    // to the back of the ring).
    let fresh = round_trip(&mut nf, Kind::Udp, sa(HOST, 7000), sa(REMOTE, 53), t59);
    assert_ne!(fresh, udp);

    // TCP, untouched since t0, goes at 100 s (the fresh UDP one at 89 s).
    nf.expire(t0 + Duration::from_secs(99));
    assert!(nf.mapping(Endpoint::new(Proto::Tcp, HOST, 7000)).is_some());
    nf.expire(t0 + Duration::from_secs(100));
    assert!(nf.mapping(Endpoint::new(Proto::Tcp, HOST, 7000)).is_none());
    dropped(
        &mut nf,
        &build(Kind::Tcp, sa(REMOTE, 80), tcp, b""),
        t0 + Duration::from_secs(100),
    );
    let s = nf.stats();
    assert_eq!((s.mappings, s.expired), (0, 4));
    // A `now` from the past is taken as the latest one seen: the new
    // mapping is stamped at 100 s and lives until 130 s.
    round_trip(&mut nf, Kind::Udp, sa(HOST, 7001), sa(REMOTE, 53), t0);
    nf.expire(t0 + Duration::from_secs(129));
    assert_eq!(nf.stats().mappings, 1);
    nf.expire(t0 + Duration::from_secs(130));
    assert_eq!(nf.stats().mappings, 0);
}

#[test]
fn pool_exhaustion_drops_and_counts_until_a_port_frees() {
    let mut nf = nat(r#"{"port_range": "1024-1027", "timeouts": {"udp_s": 10}}"#);
    let t0 = Instant::now();
    let mut ports = Vec::new();
    for sport in 0..4 {
        ports.push(
            round_trip(
                &mut nf,
                Kind::Udp,
                sa(HOST, 5000 + sport),
                sa(REMOTE, 53),
                t0,
            )
            .port(),
        );
    }
    ports.sort_unstable();
    assert_eq!(ports, [1024, 1025, 1026, 1027]);
    let fifth = build(Kind::Udp, sa(HOST, 5004), sa(REMOTE, 53), b"");
    dropped(&mut nf, &fifth, t0);
    dropped(&mut nf, &fifth, t0);
    // Existing mappings keep working; other protocols have their own pools.
    round_trip(
        &mut nf,
        Kind::Udp,
        sa(HOST, 5000),
        sa(REMOTE, 53),
        t0 + Duration::from_secs(5),
    );
    round_trip(&mut nf, Kind::Tcp, sa(HOST, 5004), sa(REMOTE, 80), t0);
    let s = nf.stats();
    assert_eq!((s.pool_exhausted, s.mappings), (2, 5));
    let report: Value = serde_json::from_str(&nf.report().expect("report")).expect("json");
    assert_eq!(report["pool_exhausted"], 2);
    // Three idle UDP mappings expire at 10 s; the fifth flow then gets a port.
    let t10 = t0 + Duration::from_secs(10);
    round_trip(&mut nf, Kind::Udp, sa(HOST, 5004), sa(REMOTE, 53), t10);
    // Only the three UDP mappings idle since t0 expired (TCP's is 300 s).
    assert_eq!(nf.stats().expired, 3);
}

#[test]
fn table_full_drops_and_counts() {
    let mut nf = nat(r#"{"max_mappings": 2}"#);
    let now = Instant::now();
    round_trip(&mut nf, Kind::Udp, sa(HOST, 1), sa(REMOTE, 53), now);
    round_trip(&mut nf, Kind::EchoRequest, sa(HOST, 2), sa(REMOTE, 0), now);
    dropped(
        &mut nf,
        &build(Kind::Tcp, sa(HOST, 3), sa(REMOTE, 80), b""),
        now,
    );
    round_trip(&mut nf, Kind::Udp, sa(HOST, 1), sa(REMOTE, 53), now);
    let s = nf.stats();
    assert_eq!((s.table_full, s.mappings, s.pool_exhausted), (1, 2, 0));
}

#[test]
fn udp_zero_checksum_stays_zero_both_ways() {
    let mut nf = nat("");
    let now = Instant::now();
    let out = pass(
        &mut nf,
        &udp_no_checksum(sa(HOST, 4000), sa(REMOTE, 4000), b"nochk"),
        now,
    );
    let (outside, _) = endpoints(&out);
    assert_eq!(out, udp_no_checksum(outside, sa(REMOTE, 4000), b"nochk"));
    let back = pass(
        &mut nf,
        &udp_no_checksum(sa(REMOTE, 4000), outside, b"nochk"),
        now,
    );
    assert_eq!(
        back,
        udp_no_checksum(sa(REMOTE, 4000), sa(HOST, 4000), b"nochk")
    );
}

#[test]
fn udp_checksum_that_updates_to_zero_is_sent_as_all_ones() {
    // Over all destination ports, one makes the translated UDP checksum
    // compute to 0, which RFC 768 sends as 0xFFFF. etherparse does the same,
    // so the frame must equal etherparse's, byte for byte.
    let mut nf = nat("");
    let now = Instant::now();
    let mut hits = 0;
    for dport in 1..=u16::MAX {
        let mut frame = build(Kind::Udp, sa(HOST, 5555), sa(REMOTE, dport), b"");
        assert_eq!(nf.process_frame(&mut frame, now), Verdict::Forward);
        if frame[14 + 20 + 6..14 + 20 + 8] == [0xff, 0xff] {
            let outside = endpoints(&frame).0;
            assert_eq!(frame, build(Kind::Udp, outside, sa(REMOTE, dport), b""));
            hits += 1;
        }
    }
    assert_eq!(hits, 1);
}

#[test]
fn vlan_tagged_frames_are_translated() {
    let mut nf = nat("");
    let now = Instant::now();
    for vlans in [&[42u16][..], &[100, 200]] {
        let frame = tagged(
            &build(Kind::Tcp, sa(HOST, 1234), sa(REMOTE, 443), b"tagged"),
            vlans,
        );
        let out = pass(&mut nf, &frame, now);
        let (outside, _) = endpoints(&out);
        assert_eq!(
            out,
            tagged(
                &build(Kind::Tcp, outside, sa(REMOTE, 443), b"tagged"),
                vlans
            )
        );
        let reply = tagged(&build(Kind::Tcp, sa(REMOTE, 443), outside, b"r"), vlans);
        let back = pass(&mut nf, &reply, now);
        assert_eq!(
            back,
            tagged(
                &build(Kind::Tcp, sa(REMOTE, 443), sa(HOST, 1234), b"r"),
                vlans
            )
        );
    }
    // A third tag is more than we parse through.
    let three = tagged(
        &build(Kind::Tcp, sa(HOST, 1234), sa(REMOTE, 443), b""),
        &[1, 2, 3],
    );
    dropped(&mut nf, &three, now);
    assert_eq!(nf.stats().malformed, 1);
}

#[test]
fn inbound_icmp_error_is_translated_with_its_quote() {
    let mut nf = nat("");
    let now = Instant::now();
    let original = build(Kind::Udp, sa(HOST, 3000), sa(REMOTE, 33434), b"probe");
    let sent = pass(&mut nf, &original, now);
    let outside = endpoints(&sent).0;

    // A router answers what it saw (the translated packet), whole.
    let error = icmp_error(
        REMOTE2,
        *outside.ip(),
        Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit),
        ip_part(&sent),
    );
    let delivered = pass(&mut nf, &error, now);
    let expected = icmp_error(
        REMOTE2,
        HOST,
        Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit),
        ip_part(&original),
    );
    assert_eq!(delivered, expected);

    // Quoting only the IPv4 header and 8 bytes, as RFC 792 routers do.
    let mtu = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: 1280,
    });
    let short = icmp_error(REMOTE2, *outside.ip(), mtu.clone(), &ip_part(&sent)[..28]);
    let delivered = pass(&mut nf, &short, now);
    assert_eq!(
        delivered,
        icmp_error(REMOTE2, HOST, mtu, &ip_part(&original)[..28])
    );

    // A TCP quote that stops before the TCP checksum.
    let tcp = build(Kind::Tcp, sa(HOST, 3001), sa(REMOTE, 80), b"");
    let tcp_sent = pass(&mut nf, &tcp, now);
    let port = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port);
    let error = icmp_error(
        REMOTE,
        *outside.ip(),
        port.clone(),
        &ip_part(&tcp_sent)[..28],
    );
    let delivered = pass(&mut nf, &error, now);
    assert_eq!(
        delivered,
        icmp_error(REMOTE, HOST, port.clone(), &ip_part(&tcp)[..28])
    );

    // And about an echo request.
    let ping = build(Kind::EchoRequest, sa(HOST, 77), sa(REMOTE, 0), b"ping");
    let ping_sent = pass(&mut nf, &ping, now);
    let error = icmp_error(REMOTE2, *outside.ip(), port.clone(), ip_part(&ping_sent));
    let delivered = pass(&mut nf, &error, now);
    assert_eq!(
        delivered,
        icmp_error(REMOTE2, HOST, port.clone(), ip_part(&ping))
    );

    let s = nf.stats();
    assert_eq!(s.translated_in, 4);

    // An error about nothing we sent, or to another pool address than the
    // quote's source, is dropped.
    let stray = build(Kind::Udp, sa(POOL1, 9), sa(REMOTE, 9), b"");
    dropped(
        &mut nf,
        &icmp_error(REMOTE, POOL1, port.clone(), ip_part(&stray)),
        now,
    );
    assert_eq!(nf.stats().no_mapping_in, 1);
    // A bad ICMP checksum makes it malformed (RFC 5508 REQ-3).
    let mut corrupt = icmp_error(REMOTE2, *outside.ip(), port, ip_part(&sent));
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x40;
    dropped(&mut nf, &corrupt, now);
    assert_eq!(nf.stats().malformed, 1);
    // A quote too short for the ports.
    let cut = icmp_error(
        REMOTE2,
        *outside.ip(),
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Host),
        &ip_part(&sent)[..24],
    );
    dropped(&mut nf, &cut, now);
    assert_eq!(nf.stats().malformed, 2);
    assert_accounted(&nf.stats());
}

#[test]
fn outbound_icmp_error_about_a_forwarded_flow_is_translated() {
    let mut nf =
        nat(r#"{"forwards": [{"proto": "udp", "outside_port": 53, "inside": "10.0.0.5:53"}]}"#);
    let now = Instant::now();
    let query = build(Kind::Udp, sa(REMOTE, 4444), sa(POOL1, 53), b"q");
    let delivered = pass(&mut nf, &query, now);
    // The server has nothing on port 53 after all.
    let port = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port);
    let error = icmp_error(SERVER, REMOTE, port.clone(), ip_part(&delivered));
    let sent = pass(&mut nf, &error, now);
    assert_eq!(
        sent,
        icmp_error(POOL1, REMOTE, port.clone(), ip_part(&query))
    );
    assert_eq!(nf.stats().dnat_out, 1);
    // About a packet no mapping delivered: would leak an inside address.
    let unknown = build(Kind::Udp, sa(REMOTE, 4444), sa(SERVER, 54), b"q");
    dropped(
        &mut nf,
        &icmp_error(SERVER, REMOTE, port, ip_part(&unknown)),
        now,
    );
    assert_eq!(nf.stats().no_mapping_out, 1);
}

#[test]
fn inbound_without_mapping_and_foreign_packets_are_dropped() {
    let mut nf = nat("");
    let now = Instant::now();
    dropped(
        &mut nf,
        &build(Kind::Tcp, sa(REMOTE, 1), sa(POOL1, 2000), b""),
        now,
    );
    dropped(
        &mut nf,
        &build(Kind::EchoReply, sa(REMOTE, 0), sa(POOL1, 2000), b""),
        now,
    );
    // To neither inside source nor pool destination.
    dropped(
        &mut nf,
        &build(Kind::Udp, sa(REMOTE, 1), sa(REMOTE2, 2), b""),
        now,
    );
    let s = nf.stats();
    assert_eq!((s.no_mapping_in, s.foreign), (2, 1));
}

#[test]
fn other_protocols_from_inside_are_unsupported() {
    let mut nf = nat("");
    let now = Instant::now();
    let mut gre = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(HOST.octets(), REMOTE.octets(), 64)
        .write(&mut gre, etherparse::IpNumber::GRE, &[0; 8])
        .expect("build frame");
    dropped(&mut nf, &gre, now);
    // An echo reply from inside answers nothing the NAT translated in.
    dropped(
        &mut nf,
        &build(Kind::EchoReply, sa(HOST, 0), sa(REMOTE, 5), b""),
        now,
    );
    // Neither from inside nor to the pool.
    dropped(
        &mut nf,
        &build(Kind::EchoReply, sa(REMOTE, 0), sa(HOST, 5), b""),
        now,
    );
    let s = nf.stats();
    assert_eq!((s.unsupported, s.foreign), (2, 1));
}

#[test]
fn non_ip_is_forwarded_or_dropped_as_configured() {
    let now = Instant::now();
    let frames = [
        arp_request([10, 0, 0, 1], [10, 0, 0, 2]),
        udp6([0x20; 16], [0x30; 16], 1, 2, &[1, 2, 3]),
        tagged(&arp_request([10, 0, 0, 1], [10, 0, 0, 2]), &[5]),
    ];
    let mut nf = nat("");
    for frame in &frames {
        assert_eq!(run(&mut nf, frame, now), (Verdict::Forward, frame.clone()));
    }
    let mut strict = nat(r#"{"non_ip": "drop"}"#);
    for frame in &frames {
        dropped(&mut strict, frame, now);
    }
    assert_eq!((nf.stats().non_ip, strict.stats().non_ip), (3, 3));
}

/// Ways to break a valid UDP, TCP or ICMP frame (no tags: IPv4 at 14).
fn malformed_frames() -> Vec<(&'static str, Vec<u8>)> {
    let udp = build(Kind::Udp, sa(HOST, 1), sa(REMOTE, 2), b"abcdefgh");
    let tcp = build(Kind::Tcp, sa(HOST, 1), sa(REMOTE, 2), b"abcdefgh");
    let icmp = build(Kind::EchoRequest, sa(HOST, 1), sa(REMOTE, 0), b"");
    let edit = |frame: &[u8], at: usize, value: u8| {
        let mut f = frame.to_vec();
        f[at] = value;
        f
    };
    let set_total = |frame: &[u8], total: u16| {
        let mut f = frame.to_vec();
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f
    };
    vec![
        ("empty", vec![]),
        ("runt", udp[..13].to_vec()),
        ("no IPv4 header", udp[..14].to_vec()),
        ("truncated IPv4 header", udp[..30].to_vec()),
        ("IHL 4", edit(&udp, 14, 0x44)),
        ("IHL beyond frame", edit(&udp[..40], 14, 0x4f)),
        ("version 6 in an IPv4 EtherType", edit(&udp, 14, 0x65)),
        ("total length beyond frame", set_total(&udp, 200)),
        ("total length under IHL", set_total(&udp, 19)),
        ("UDP header cut by total length", set_total(&udp, 26)),
        ("UDP length over payload", edit(&udp, 14 + 20 + 5, 200)),
        ("UDP length under 8", {
            let mut f = udp.clone();
            f[38..40].copy_from_slice(&[0, 7]);
            f
        }),
        ("TCP header truncated", tcp[..14 + 20 + 19].to_vec()),
        ("TCP data offset 4", edit(&tcp, 14 + 20 + 12, 0x40)),
        (
            "TCP data offset beyond payload",
            edit(&tcp, 14 + 20 + 12, 0xf0),
        ),
        ("ICMP header truncated", set_total(&icmp[..14 + 27], 27)),
        ("tag without EtherType", tagged(&udp, &[1])[..17].to_vec()),
    ]
}

#[test]
fn malformed_frames_are_dropped_or_forwarded_as_configured() {
    let now = Instant::now();
    let cases = malformed_frames();
    let mut nf = nat("");
    for (what, frame) in &cases {
        let (verdict, after) = run(&mut nf, frame, now);
        assert_eq!(verdict, Verdict::Drop, "{what}");
        assert_eq!(&after, frame, "{what}");
    }
    let s = nf.stats();
    assert_eq!(s.malformed, cases.len() as u64, "{s:?}");
    assert_eq!(s.mappings, 0);
    let mut lax = nat(r#"{"malformed": "forward"}"#);
    for (what, frame) in &cases {
        assert_eq!(
            run(&mut lax, frame, now),
            (Verdict::Forward, frame.clone()),
            "{what}"
        );
    }
    assert_accounted(&lax.stats());
}

#[test]
fn fragments_are_dropped_and_counted() {
    let mut nf = nat("");
    let now = Instant::now();
    let udp = build(Kind::Udp, sa(HOST, 1), sa(REMOTE, 2), b"abcdefgh");
    let with_flags = |flags: u16| {
        let mut f = udp.clone();
        f[20..22].copy_from_slice(&flags.to_be_bytes());
        f
    };
    dropped(&mut nf, &with_flags(0x2000), now); // first: more fragments
    dropped(&mut nf, &with_flags(0x0003), now); // last: offset 24
    dropped(&mut nf, &with_flags(0x2010), now); // middle
    // Don't-fragment alone is no fragment.
    let df = pass(&mut nf, &with_flags(0x4000), now);
    assert_eq!(endpoints(&df).0.ip(), &POOL1);
    let s = nf.stats();
    assert_eq!((s.fragments, s.malformed, s.translated_out), (3, 0, 1));
}

#[test]
fn ethernet_padding_and_ip_options_are_carried() {
    let mut nf = nat("");
    let now = Instant::now();
    // A short UDP frame padded to the 60-byte minimum.
    let mut frame = build(Kind::Udp, sa(HOST, 9), sa(REMOTE, 9), b"x");
    let unpadded = frame.len();
    frame.resize(60, 0);
    let out = pass(&mut nf, &frame, now);
    assert_eq!(&out[unpadded..], &[0; 60 - 43][..]);
    // IPv4 options (a 4-byte NOP/EOL word): IHL 6, still translated.
    let mut ip = Ipv4Header::new(
        0,
        64,
        etherparse::IpNumber::UDP,
        HOST.octets(),
        REMOTE.octets(),
    )
    .expect("header");
    ip.options = [1u8, 1, 1, 0][..].try_into().expect("options");
    let mut with_options = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .udp(10, 20)
        .write(&mut with_options, b"opts")
        .expect("build frame");
    assert_eq!(with_options[14], 0x46);
    let out = pass(&mut nf, &with_options, now);
    assert_eq!(*endpoints(&out).0.ip(), POOL1);
    assert_eq!(out[14 + 20..14 + 24], [1, 1, 1, 0]);
}

#[test]
fn batches_go_through_the_network_function() {
    let mut nf = nat("");
    let mut frames: Vec<Vec<u8>> = (0..100)
        .map(|i| build(Kind::Udp, sa(HOST, 10_000 + i), sa(REMOTE, 53), b"batch"))
        .collect();
    frames.push(arp_request([10, 0, 0, 1], [10, 0, 0, 2]));
    frames.push(vec![0; 5]);
    let out = nf_testkit::run(&mut nf, &frames);
    for (verdict, after) in &out[..100] {
        assert_eq!(*verdict, Verdict::Forward);
        verify_checksums(after);
        assert_eq!(*endpoints(after).0.ip(), POOL1);
    }
    assert_eq!(
        out[100],
        (Verdict::Forward, arp_request([10, 0, 0, 1], [10, 0, 0, 2]))
    );
    assert_eq!(out[101].0, Verdict::Drop);
    let s = nf.stats();
    assert_eq!((s.packets, s.translated_out, s.mappings), (102, 100, 100));
    assert_eq!((s.non_ip, s.malformed), (1, 1));
}

// ------------------------------------------------------------- reconfigure

#[test]
fn reconfigure_changes_timeouts_and_policies_and_keeps_mappings() {
    let mut nf = nat(r#"{"timeouts": {"udp_s": 30}}"#);
    let t0 = Instant::now();
    let at = |s| t0 + Duration::from_secs(s);
    let outside = round_trip(&mut nf, Kind::Udp, sa(HOST, 7000), sa(REMOTE, 53), t0);
    let reply = build(Kind::Udp, sa(REMOTE, 53), outside, b"late");
    assert_eq!(
        run(&mut nf, &arp_request([10, 0, 0, 1], [10, 0, 0, 2]), t0).0,
        Verdict::Forward
    );

    NetworkFunction::reconfigure(&mut nf, r#"{"timeouts": {"udp_s": 300}, "non_ip": "drop"}"#)
        .expect("timeouts and policies apply in place");
    // Idle 60 s: past the old 30 s, within the new 300 s.
    pass(&mut nf, &reply, at(60));
    dropped(&mut nf, &arp_request([10, 0, 0, 1], [10, 0, 0, 2]), at(60));
    let same = round_trip(&mut nf, Kind::Udp, sa(HOST, 7000), sa(REMOTE, 53), at(60));
    assert_eq!(same, outside, "the mapping stayed");

    // A shorter timeout applies to the mapping's idleness so far.
    NetworkFunction::reconfigure(&mut nf, r#"{"timeouts": {"udp_s": 5}}"#).expect("shorter");
    dropped(&mut nf, &reply, at(66));
    let s = nf.stats();
    assert_eq!(
        (s.packets, s.mappings, s.expired),
        (8, 0, 1),
        "counters carry over"
    );
    assert_eq!((s.non_ip, s.no_mapping_in), (2, 1));
    assert_accounted(&s);

    NetworkFunction::reconfigure(&mut nf, "").expect("empty means defaults");
    assert_eq!(
        run(&mut nf, &arp_request([10, 0, 0, 1], [10, 0, 0, 2]), at(66)).0,
        Verdict::Forward
    );
}

#[test]
fn refused_reconfigure_keeps_mappings_and_counters() {
    let base = r#"{"pool": ["203.0.113.1", "203.0.113.2"],
        "forwards": [
          {"proto": "tcp", "outside_port": 8080, "inside": "10.0.0.5:80"},
          {"proto": "udp", "outside_port": 53, "inside": "10.0.0.5:5353", "outside_addr": "203.0.113.2"}
        ]}"#;
    let mut nf = nat(base);
    let t0 = Instant::now();
    let outside = round_trip(&mut nf, Kind::Tcp, sa(HOST, 40000), sa(REMOTE, 80), t0);
    let (stats, report) = (nf.stats(), nf.report());

    let tcp_fwd = r#"{"proto": "tcp", "outside_port": 8080, "inside": "10.0.0.5:80"}"#;
    let udp_fwd = r#"{"proto": "udp", "outside_port": 53, "inside": "10.0.0.5:5353", "outside_addr": "203.0.113.2"}"#;
    let with = |extra: &str, forwards: &str| {
        format!(r#"{{"pool": ["203.0.113.1", "203.0.113.2"], "forwards": [{forwards}]{extra}}}"#)
    };
    let both = format!("{tcp_fwd}, {udp_fwd}");
    let refusals = [
        (with(r#", "inside": "10.0.0.0/16""#, &both), "inside"),
        ("".to_owned(), "pool"),
        (
            format!(r#"{{"pool": "203.0.113.0/30", "forwards": [{both}]}}"#),
            "pool",
        ),
        (with(r#", "port_range": "2000-3000""#, &both), "port_range"),
        (with("", tcp_fwd), "forwards"),
        (
            with(
                "",
                &format!(
                    r#"{both}, {{"proto": "tcp", "outside_port": 2222, "inside": "10.0.0.6:22"}}"#
                ),
            ),
            "forwards",
        ),
        (with(r#", "max_mappings": 100"#, &both), "max_mappings"),
    ];
    for (json, field) in refusals {
        let err = NetworkFunction::reconfigure(&mut nf, &json).expect_err(&json);
        assert!(
            err.starts_with(&format!("nat {field} cannot change in place: ")),
            "{json}: {err}"
        );
    }
    for json in [
        with(r#", "timeouts": {"udp_s": 0}"#, &both),
        with(r#", "non_ip": "maybe""#, &both),
        "{".to_owned(),
        "[]".to_owned(),
    ] {
        let err = NetworkFunction::reconfigure(&mut nf, &json).expect_err(&json);
        assert!(err.starts_with("invalid nat config: "), "{json}: {err}");
    }
    assert_eq!((nf.stats(), nf.report()), (stats, report));
    let reply = build(Kind::Tcp, sa(REMOTE, 80), outside, b"still");
    assert_eq!(
        pass(&mut nf, &reply, t0),
        build(Kind::Tcp, sa(REMOTE, 80), sa(HOST, 40000), b"still")
    );

    // The same forwards in another order are no change.
    let reordered = with(r#", "non_ip": "drop""#, &format!("{udp_fwd}, {tcp_fwd}"));
    NetworkFunction::reconfigure(&mut nf, &reordered).expect("same forwards");
    dropped(&mut nf, &arp_request([10, 0, 0, 1], [10, 0, 0, 2]), t0);
    let inbound = build(Kind::Tcp, sa(REMOTE, 50000), sa(POOL1, 8080), b"hi");
    pass(&mut nf, &inbound, t0);
    assert_eq!(nf.stats().dnat_in, 1);
}

#[test]
fn report_has_every_counter() {
    let mut nf = nat("");
    let now = Instant::now();
    round_trip(&mut nf, Kind::Udp, sa(HOST, 1), sa(REMOTE, 2), now);
    let report: Value = serde_json::from_str(&nf.report().expect("report")).expect("json");
    for key in [
        "packets",
        "translated_out",
        "translated_in",
        "dnat_in",
        "dnat_out",
        "no_mapping_in",
        "no_mapping_out",
        "pool_exhausted",
        "table_full",
        "mappings",
        "expired",
        "non_ip",
        "malformed",
        "fragments",
        "foreign",
        "unsupported",
    ] {
        assert!(report[key].is_u64(), "{key} in {report}");
    }
    assert_eq!(report["mappings"], 1);
    assert_eq!(report["translated_out"], 1);
    assert_eq!(report.as_object().expect("object").len(), 16);
}

#[test]
fn tables_never_grow() {
    let mut nf =
        nat(r#"{"max_mappings": 64, "port_range": "1024-1100", "timeouts": {"udp_s": 1}}"#);
    let capacities = nf.table.capacities();
    let ring = nf.free_ports(POOL1, Proto::Udp);
    let t0 = Instant::now();
    // Churn: many more flows than slots, expiring in between, so the
    // indexes see plenty of removals (tombstones) and reinsertions.
    for round in 0..50u64 {
        let now = t0 + Duration::from_secs(round * 2);
        for i in 0..80u16 {
            let frame = build(
                Kind::Udp,
                sa(HOST, (round as u16) * 100 + i),
                sa(REMOTE, 53),
                b"",
            );
            let _ = run(&mut nf, &frame, now);
        }
        assert!(nf.stats().mappings <= 64);
    }
    assert_eq!(nf.table.capacities(), capacities);
    nf.expire(t0 + Duration::from_secs(1000));
    assert_eq!(
        nf.free_ports(POOL1, Proto::Udp),
        ring,
        "every port came back"
    );
    let s = nf.stats();
    assert!(s.table_full > 0 && s.expired > 0, "{s:?}");
    assert_eq!(s.mappings, 0);
}

#[test]
fn config_defaults() {
    for json in ["", " \n\t", "{}"] {
        let config = NatConfig::from_json(json).expect(json);
        assert_eq!(config, NatConfig::default(), "{json:?}");
    }
    let c = NatConfig::default();
    assert_eq!(c.inside.to_string(), "10.0.0.0/8");
    assert_eq!(c.pool, Pool::Addresses(vec![POOL1]));
    assert_eq!(c.port_range.to_string(), "1024-65535");
    assert_eq!(
        c.timeouts,
        Timeouts {
            tcp_s: 300,
            udp_s: 30,
            icmp_s: 10
        }
    );
    assert_eq!(
        (c.max_mappings, c.non_ip, c.malformed),
        (65_536, Policy::Forward, Policy::Drop)
    );
    let nf = nat("");
    assert_eq!(nf.free_ports(POOL1, Proto::Tcp), 64_512);
}

#[test]
fn full_config_parses_and_round_trips() {
    let json = r#"{
        "inside": "10.0.0.0/8",
        "pool": "203.0.113.0/30",
        "port_range": "2000-2999",
        "forwards": [
            {"proto": "tcp", "outside_port": 8080, "inside": "10.0.0.5:80"},
            {"proto": "udp", "outside_port": 2500, "inside": "10.0.0.6:53", "outside_addr": "203.0.113.3"}
        ],
        "timeouts": {"tcp_s": 7200, "udp_s": 120, "icmp_s": 30},
        "max_mappings": 1000,
        "non_ip": "drop",
        "malformed": "forward"
    }"#;
    let config = NatConfig::from_json(json).expect("config");
    assert_eq!(
        config.forwards[1].outside_addr,
        Some(Ipv4Addr::new(203, 0, 113, 3))
    );
    let again =
        NatConfig::from_json(&serde_json::to_string(&config).expect("json")).expect("again");
    assert_eq!(again, config);
    let nf = Nat::new(&config).expect("nat");
    for last in 0..4 {
        let addr = Ipv4Addr::new(203, 0, 113, last);
        let expected_udp = if last == 3 { 999 } else { 1000 };
        assert_eq!(nf.free_ports(addr, Proto::Udp), expected_udp, "{addr}");
    }
    // A forward without outside_addr sits on the first pool address (the
    // prefix's lowest); 8080 is outside the range, so no port is taken.
    assert_eq!(
        nf.free_ports(Ipv4Addr::new(203, 0, 113, 0), Proto::Tcp),
        1000
    );
}

#[test]
fn bad_configs_are_rejected_naming_the_field() {
    let cases = [
        (
            r#"{"inside": "10.0.0.0/33"}"#,
            "inside: expected an IPv4 prefix",
        ),
        (
            r#"{"inside": "10.0.0.1/8"}"#,
            "inside: 10.0.0.1/8 has host bits set (the network is 10.0.0.0/8)",
        ),
        (
            r#"{"inside": "ten"}"#,
            "inside: expected an IPv4 prefix like",
        ),
        (r#"{"inside": 10}"#, "inside: invalid type: integer `10`"),
        (r#"{"pool": []}"#, "pool has no addresses"),
        (
            r#"{"pool": ["203.0.113.1", "nope"]}"#,
            "pool[1]: invalid IPv4 address syntax",
        ),
        (
            r#"{"pool": 5}"#,
            "pool: invalid type: integer `5`, expected a list of IPv4 addresses or an IPv4 prefix",
        ),
        (
            r#"{"pool": "198.51.100.0/24"}"#,
            "pool has 256 addresses, at most 64",
        ),
        (r#"{"pool": "0.0.0.0/0"}"#, "pool has 4294967296 addresses"),
        (
            r#"{"pool": ["203.0.113.1", "203.0.113.1"]}"#,
            "pool lists 203.0.113.1 twice",
        ),
        (
            r#"{"pool": ["10.1.1.1"]}"#,
            "pool address 10.1.1.1 lies in inside 10.0.0.0/8",
        ),
        (
            r#"{"port_range": "1024"}"#,
            "port_range: expected a port range like \"1024-65535\"",
        ),
        (
            r#"{"port_range": "0-100"}"#,
            "port_range: port 0 is not allowed",
        ),
        (
            r#"{"port_range": "2000-1000"}"#,
            "port_range: 2000-1000 is empty",
        ),
        (
            r#"{"port_range": "1-70000"}"#,
            "port_range: expected a port range",
        ),
        (
            r#"{"timeouts": {"udp_s": 0}}"#,
            "timeouts.udp_s must be in 1..=86400, got 0",
        ),
        (
            r#"{"timeouts": {"tcp_s": 86401}}"#,
            "timeouts.tcp_s must be in 1..=86400, got 86401",
        ),
        (
            r#"{"timeouts": {"icmp": 5}}"#,
            "timeouts.icmp: unknown field `icmp`, expected one of `tcp_s`, `udp_s`, `icmp_s`",
        ),
        (
            r#"{"max_mappings": 0}"#,
            "max_mappings must be in 1..=1000000, got 0",
        ),
        (
            r#"{"max_mappings": -1}"#,
            "max_mappings: invalid value: integer `-1`",
        ),
        (
            r#"{"non_ip": "pass"}"#,
            "non_ip: unknown variant `pass`, expected `forward` or `drop`",
        ),
        (
            r#"{"malformed": true}"#,
            "malformed: invalid type: boolean `true`",
        ),
        (
            r#"{"forwards": [{"proto": "icmp", "outside_port": 1, "inside": "10.0.0.5:80"}]}"#,
            "forwards[0].proto: unknown variant `icmp`, expected `tcp` or `udp`",
        ),
        (
            r#"{"forwards": [{"proto": "tcp", "outside_port": 70000, "inside": "10.0.0.5:80"}]}"#,
            "forwards[0].outside_port: invalid value: integer `70000`",
        ),
        (
            r#"{"forwards": [{"proto": "tcp", "outside_port": 80, "inside": "10.0.0.5"}]}"#,
            "forwards[0].inside: invalid IPv4 socket address syntax",
        ),
        (
            r#"{"forwards": [{"proto": "tcp", "inside": "10.0.0.5:80"}]}"#,
            "forwards[0]: missing field `outside_port`",
        ),
        (
            r#"{"forwards": [{"proto": "tcp", "outside_port": 80, "inside": "10.0.0.5:80", "port": 1}]}"#,
            "forwards[0].port: unknown field `port`",
        ),
        (
            r#"{"forwards": [{"proto": "tcp", "outside_port": 0, "inside": "10.0.0.5:80"}]}"#,
            "forwards[0].outside_port: port 0 is not allowed",
        ),
        (
            r#"{"forwards": [{"proto": "tcp", "outside_port": 80, "inside": "10.0.0.5:0"}]}"#,
            "forwards[0].inside: port 0 is not allowed",
        ),
        (
            r#"{"forwards": [{"proto": "tcp", "outside_port": 80, "inside": "192.168.1.5:80"}]}"#,
            "forwards[0].inside: 192.168.1.5 does not lie in inside 10.0.0.0/8",
        ),
        (
            r#"{"forwards": [{"proto": "tcp", "outside_port": 80, "inside": "10.0.0.5:80", "outside_addr": "203.0.113.9"}]}"#,
            "forwards[0].outside_addr: 203.0.113.9 is not a pool address",
        ),
        (
            r#"{"forwards": [{"proto": "tcp", "outside_port": 80, "inside": "10.0.0.5:80"},
                          {"proto": "tcp", "outside_port": 80, "inside": "10.0.0.6:80"}]}"#,
            "forwards[1]: tcp 203.0.113.1:80 is already forwarded by forwards[0]",
        ),
        (
            r#"{"forwards": [{"proto": "udp", "outside_port": 80, "inside": "10.0.0.5:80"},
                          {"proto": "udp", "outside_port": 81, "inside": "10.0.0.5:80"}]}"#,
            "forwards[1].inside: udp 10.0.0.5:80 is already the target of forwards[0]",
        ),
        (r#"{"flows": 10}"#, "flows: unknown field `flows`"),
        ("{", "EOF"),
        ("null", "expected a JSON object"),
        ("[]", "expected a JSON object"),
        (r#"{} {}"#, "trailing characters"),
    ];
    for (json, needle) in cases {
        let err = Nat::from_config(json).expect_err(json).to_string();
        assert!(err.starts_with("invalid nat config: "), "{err}");
        assert!(
            err.contains(needle),
            "{json}\n  got: {err}\n want: {needle}"
        );
    }
    // The same forward port on both protocols, or on two addresses, is fine.
    nat(r#"{"pool": ["203.0.113.1", "203.0.113.2"], "forwards": [
        {"proto": "tcp", "outside_port": 80, "inside": "10.0.0.5:80"},
        {"proto": "udp", "outside_port": 80, "inside": "10.0.0.5:80"},
        {"proto": "tcp", "outside_port": 80, "inside": "10.0.0.6:80", "outside_addr": "203.0.113.2"}]}"#);
}

// ---- property tests ----

fn kinds() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Tcp), Just(Kind::Udp), Just(Kind::EchoRequest)]
}

fn inside_addr() -> impl Strategy<Value = Ipv4Addr> {
    any::<[u8; 3]>().prop_map(|[a, b, c]| Ipv4Addr::new(10, a, b, c))
}

/// Any unicast-looking outside address (not in 10/8 nor the pool).
fn remote_addr() -> impl Strategy<Value = Ipv4Addr> {
    (11u8..=223, any::<[u8; 3]>())
        .prop_map(|(a, [b, c, d])| Ipv4Addr::new(a, b, c, d))
        .prop_filter("not the pool", |a| a.octets()[..3] != [203, 0, 113])
}

fn valid_frames() -> impl Strategy<Value = Vec<u8>> {
    (
        kinds(),
        inside_addr(),
        any::<u16>(),
        remote_addr(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..200),
        prop_oneof![Just(vec![]), Just(vec![7u16]), Just(vec![1u16, 2])],
        any::<bool>(),
    )
        .prop_map(|(kind, src, sport, dst, dport, payload, vlans, inbound)| {
            let (s, d) = if inbound {
                (sa(dst, dport), sa(POOL1, sport))
            } else {
                (sa(src, sport), sa(dst, dport))
            };
            let kind = if inbound { kind.reply() } else { kind };
            tagged(&build(kind, s, d, &payload), &vlans)
        })
}

/// A valid frame with some bytes overwritten and its length cut or padded.
fn mangled_frames() -> impl Strategy<Value = Vec<u8>> {
    (
        valid_frames(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        any::<prop::sample::Index>(),
        0..3u8,
    )
        .prop_map(|(mut frame, edits, cut, how)| {
            for (at, byte) in edits {
                let i = at.index(frame.len());
                frame[i] = byte;
            }
            match how {
                0 => frame.truncate(cut.index(frame.len() + 1)),
                1 => frame.resize(frame.len() + cut.index(64), 0),
                _ => {}
            }
            frame
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_are_accounted(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), 1..80)
    ) {
        let mut nf = nat(r#"{"max_mappings": 16, "port_range": "1024-1040"}"#);
        let out = nf_testkit::run(&mut nf, &frames);
        prop_assert_eq!(out.len(), frames.len());
        let s = nf.stats();
        prop_assert_eq!(s.packets, frames.len() as u64);
        assert_accounted(&s);
        prop_assert!(nf.report().is_some());
    }

    #[test]
    fn mangled_frames_never_panic_and_translations_verify(
        frames in proptest::collection::vec(mangled_frames(), 1..80)
    ) {
        let mut nf = nat(r#"{"max_mappings": 16, "port_range": "1024-1040",
            "forwards": [{"proto": "udp", "outside_port": 53, "inside": "10.0.0.5:53"}]}"#);
        let now = Instant::now();
        for frame in &frames {
            let (verdict, after) = run(&mut nf, frame, now);
            if verdict == Verdict::Drop {
                prop_assert_eq!(&after, frame, "a dropped frame is left alone");
                continue;
            }
            // Translated: if every checksum held before (the mangling may
            // have broken one, which an incremental update rightly keeps
            // broken), every checksum holds after.
            if after != *frame && checksum_errors(frame).is_empty() {
                prop_assert_eq!(checksum_errors(&after), Vec::<&str>::new());
            }
        }
        let s = nf.stats();
        prop_assert!(s.mappings <= 16);
        assert_accounted(&s);
    }

    /// Random valid packets out through SNAT and their answers back: the
    /// translation out equals the frame etherparse builds for the outside
    /// endpoint, and the answer comes back as the frame etherparse builds
    /// for the original inside endpoint, checksums and all.
    #[test]
    fn snat_round_trip_restores_addresses_and_checksums(
        flows in proptest::collection::vec(
            (kinds(), inside_addr(), any::<u16>(), remote_addr(), 1..u16::MAX,
             proptest::collection::vec(any::<u8>(), 0..300), any::<bool>()),
            1..40),
        vlans in prop_oneof![Just(vec![]), Just(vec![300u16]), Just(vec![10u16, 20])],
    ) {
        let mut nf = nat(r#"{"pool": "203.0.113.0/29", "port_range": "1024-2047", "max_mappings": 1024}"#);
        let now = Instant::now();
        for (kind, src, sport, dst, dport, payload, zero_udp_checksum) in flows {
            let inside = sa(src, sport);
            let remote = sa(dst, if kind == Kind::EchoRequest { 0 } else { dport });
            let zero = zero_udp_checksum && kind == Kind::Udp;
            let make = |k: Kind, s: SocketAddrV4, d: SocketAddrV4| {
                let f = if zero { udp_no_checksum(s, d, &payload) } else { build(k, s, d, &payload) };
                tagged(&f, &vlans)
            };
            let (verdict, out) = run(&mut nf, &make(kind, inside, remote), now);
            prop_assert_eq!(verdict, Verdict::Forward);
            verify_checksums(&out);
            let (outside, _) = endpoints(&out);
            prop_assert_eq!(&outside.ip().octets()[..3], &[203u8, 0, 113][..]);
            prop_assert_eq!(&out, &make(kind, outside, remote));
            prop_assert_eq!(
                nf.mapping(Endpoint::new(kind.proto(), src, sport)),
                Some(Endpoint::new(kind.proto(), *outside.ip(), outside.port()))
            );

            let (verdict, back) = run(&mut nf, &make(kind.reply(), remote, outside), now);
            prop_assert_eq!(verdict, Verdict::Forward);
            verify_checksums(&back);
            prop_assert_eq!(&back, &make(kind.reply(), remote, inside));
        }
        assert_accounted(&nf.stats());
    }
}

/// SNAT throughput on 64-byte UDP frames, one batch of 64 at a time over
/// 4096 established flows. Run with
/// `cargo test -p nf-nat --release -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_snat_udp_64_byte_frames() {
    const FLOWS: usize = 4096;
    const ROUNDS: usize = 20_000;
    let mut nf = nat("");
    let now = Instant::now();
    // 42 bytes of headers and 22 of payload: 64 bytes.
    let templates: Vec<Vec<u8>> = (0..FLOWS)
        .map(|i| {
            let host = Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8);
            build(Kind::Udp, sa(host, 40_000), sa(REMOTE, 53), &[0x5a; 22])
        })
        .collect();
    assert_eq!(templates[0].len(), 64);
    let mut bufs = vec![[0u8; 64]; MAX_BATCH];

    // Warm up: create every mapping.
    for t in &templates {
        let mut f = t.clone();
        assert_eq!(nf.process_frame(&mut f, now), Verdict::Forward);
    }

    let mut run_rounds = |translate: bool, nf: &mut Nat| {
        let start = Instant::now();
        let mut next = 0;
        for _ in 0..ROUNDS {
            for buf in bufs.iter_mut() {
                buf.copy_from_slice(&templates[next % FLOWS]);
                next += 1;
            }
            if translate {
                let packets: arrayvec::ArrayVec<Packet<'_>, MAX_BATCH> =
                    bufs.iter_mut().map(|b| Packet::new(b, 64, 0)).collect();
                let mut batch = Batch::from_packets(packets);
                nf.process_at(&mut batch, now);
                std::hint::black_box(&batch);
            }
            std::hint::black_box(&bufs);
        }
        start.elapsed().as_nanos() as f64 / (ROUNDS * MAX_BATCH) as f64
    };
    let copy_only = run_rounds(false, &mut nf);
    let total = run_rounds(true, &mut nf);
    let s = nf.stats();
    assert_eq!(s.translated_out as usize, FLOWS + ROUNDS * MAX_BATCH);
    println!(
        "SNAT 64-byte UDP, {FLOWS} flows: {total:.1} ns/packet \
         ({:.1} ns/packet after the {copy_only:.1} ns frame refill)",
        total - copy_only
    );
}
