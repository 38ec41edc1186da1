use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use etherparse::{
    IpHeaders, IpNumber, Ipv4Header, NetSlice, PacketBuilder, SlicedPacket, TcpHeader,
    TransportSlice, UdpHeader,
};
use nf_sdk::{Batch, MAX_BATCH, Packet, Verdict};
use nf_testkit::{FRAME, MAC_A, MAC_B, arp_request, run_with, tagged, tcp4, udp4, udp6};
use proptest::prelude::*;
use serde_json::Value;

use super::*;

const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 10), 80);

/// Backend `i`: 10.0.1.i:8080.
fn backend_addr(i: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, i), 8080)
}

/// Backends 1..=n, weight 1.
fn backends(n: u8) -> Vec<Backend> {
    (1..=n).map(|i| Backend::new(backend_addr(i), 1)).collect()
}

/// splitmix64: a deterministic source of test flows.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn client(&mut self) -> SocketAddrV4 {
        let r = self.next();
        SocketAddrV4::new(Ipv4Addr::from((r >> 16) as u32), r as u16)
    }
}

/// `n` distinct clients: 100.64.0.0/16, ports from 1024.
fn clients(n: u32) -> Vec<SocketAddrV4> {
    (0..n)
        .map(|i| {
            let [_, _, c, d] = (i / 16).to_be_bytes();
            SocketAddrV4::new(Ipv4Addr::new(100, 64, c, d), 1024 + (i % 16) as u16)
        })
        .collect()
}

/// TCP from `src` to `dst` carrying `payload`, under `vlans` (outermost first).
fn tcp_vlans(vlans: &[u16], src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let (s, d) = (src.ip().octets(), dst.ip().octets());
    tagged(&tcp4(s, d, src.port(), dst.port(), payload), vlans)
}

/// UDP from `src` to `dst` carrying `payload`, under `vlans` (outermost first).
fn udp_vlans(vlans: &[u16], src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let (s, d) = (src.ip().octets(), dst.ip().octets());
    tagged(&udp4(s, d, src.port(), dst.port(), payload), vlans)
}

/// Untagged TCP from `src` to `dst` with `payload_len` bytes of data.
fn tcp(src: SocketAddrV4, dst: SocketAddrV4, payload_len: usize) -> Vec<u8> {
    tcp_vlans(&[], src, dst, &vec![0; payload_len])
}

/// Untagged UDP from `src` to `dst` with `payload_len` bytes of data.
fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload_len: usize) -> Vec<u8> {
    udp_vlans(&[], src, dst, &vec![0; payload_len])
}

/// TCP with IPv4 options (IHL 7).
fn tcp_with_ip_options(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    let mut ip = Ipv4Header::new(0, 64, IpNumber::TCP, src.ip().octets(), dst.ip().octets())
        .expect("ipv4 header");
    // Eight NOPs (RFC 791 option type 1).
    ip.options = [1u8; 8][..].try_into().expect("options");
    let builder = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ip(IpHeaders::Ipv4(ip, Default::default()))
        .tcp(src.port(), dst.port(), 7, 1024);
    let mut frame = Vec::with_capacity(builder.size(12));
    builder.write(&mut frame, &[0x42; 12]).expect("build frame");
    frame
}

/// Runs `frames` through `lb` at time `now` the way the runtime does (see
/// [`nf_testkit::run`]).
fn run_at(lb: &mut Lb, frames: &[Vec<u8>], now: Duration) -> Vec<(Verdict, Vec<u8>)> {
    run_with(frames, |batch| lb.process_at(batch, now))
}

fn run(lb: &mut Lb, frames: &[Vec<u8>]) -> Vec<(Verdict, Vec<u8>)> {
    run_at(lb, frames, Duration::ZERO)
}

/// Source and destination of a TCP or UDP over IPv4 frame, per etherparse.
fn endpoints(frame: &[u8]) -> (SocketAddrV4, SocketAddrV4) {
    let p = SlicedPacket::from_ethernet(frame).expect("etherparse accepts the frame");
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not ipv4");
    };
    let (src, dst) = (ip.header().source_addr(), ip.header().destination_addr());
    let (sport, dport) = match &p.transport {
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        other => panic!("not tcp or udp: {other:?}"),
    };
    (SocketAddrV4::new(src, sport), SocketAddrV4::new(dst, dport))
}

/// Checks the IPv4 header checksum and the TCP/UDP checksum against
/// etherparse's computation from scratch.
fn assert_checksums(frame: &[u8]) {
    let p = SlicedPacket::from_ethernet(frame).expect("etherparse accepts the frame");
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not ipv4");
    };
    let header = ip.header().to_header();
    assert_eq!(
        header.header_checksum,
        header.calc_header_checksum(),
        "ipv4 header checksum"
    );
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = t
                .calc_checksum_ipv4(header.source, header.destination)
                .expect("tcp checksum");
            assert_eq!(t.checksum(), want, "tcp checksum");
        }
        Some(TransportSlice::Udp(u)) => {
            let want = u
                .to_header()
                .calc_checksum_ipv4(&header, u.payload())
                .expect("udp checksum");
            assert_eq!(u.checksum(), want, "udp checksum");
        }
        other => panic!("not tcp or udp: {other:?}"),
    }
}

/// Every frame in exactly one bucket.
fn accounted(t: &Totals) -> u64 {
    t.to_backends + t.replies + t.non_vip + t.malformed + t.fragments
}

fn stats_of(lb: &Lb, addr: SocketAddrV4) -> BackendStats {
    lb.backend_stats()
        .into_iter()
        .find(|b| b.addr == Endpoint(addr))
        .expect("backend")
}

// ---------------------------------------------------------------- config

#[test]
fn minimal_config_takes_the_defaults() {
    let lb =
        Lb::from_config(r#"{"vip": "198.51.100.10:80", "backends": [{"addr": "10.0.1.1:8080"}]}"#)
            .expect("config");
    assert_eq!(lb.vip, Endpoint(VIP));
    assert_eq!(lb.proto, Proto::Tcp);
    assert_eq!(lb.backends(), [Backend::new(backend_addr(1), 1)]);
    assert_eq!(lb.maglev().size(), 65_537);
    assert_eq!(lb.flow_capacity(), 65_536);
    assert_eq!((lb.non_vip, lb.malformed), (Action::Forward, Action::Drop));

    let full = r#"{ "vip": "198.51.100.10:53", "proto": "udp",
        "backends": [{ "addr": "10.0.1.1:5353", "weight": 100 }, { "addr": "10.0.1.2:5353" }],
        "table_size": 20011, "affinity_timeout_s": 86400, "max_flows": 1000000,
        "non_vip": "drop", "malformed": "forward" }"#;
    let lb = Lb::from_config(full).expect("full config");
    assert_eq!(lb.proto, Proto::Udp);
    assert_eq!(lb.maglev().size(), 20_011);
    assert_eq!(lb.flow_capacity(), 1_000_000);
    assert_eq!((lb.non_vip, lb.malformed), (Action::Drop, Action::Forward));
    assert_eq!(lb.backends()[0].weight, 100);
    assert_eq!(lb.backends()[1].weight, 1);
}

#[test]
fn bad_configs_are_rejected_naming_the_field() {
    let one = r#""backends": [{"addr": "10.0.1.1:8080"}]"#;
    let vip = r#""vip": "198.51.100.10:80""#;
    let cases = [
        ("".to_string(), "missing field `vip`"),
        ("{}".to_string(), "missing field `vip`"),
        (format!("{{{vip}}}"), "missing field `backends`"),
        (
            format!(r#"{{"vip": "198.51.100.10", {one}}}"#),
            r#"vip: expected an IPv4 address and port like "10.0.1.1:8080", got "198.51.100.10""#,
        ),
        (
            format!(r#"{{"vip": "[::1]:80", {one}}}"#),
            "vip: expected an IPv4 address and port",
        ),
        (
            format!(r#"{{"vip": "198.51.100.10:0", {one}}}"#),
            r#"vip: port 0 in "198.51.100.10:0" is not usable"#,
        ),
        (
            format!(r#"{{"vip": 80, {one}}}"#),
            "vip: invalid type: integer `80`",
        ),
        (
            format!(r#"{{{vip}, "proto": "sctp", {one}}}"#),
            r#"proto: unknown proto "sctp", expected "tcp" or "udp""#,
        ),
        (
            format!(r#"{{{vip}, "backends": []}}"#),
            "backends must list 1..=1000 backends, got 0",
        ),
        (
            format!(r#"{{{vip}, "backends": [{{"addr": "10.0.1.1:8080", "weight": 0}}]}}"#),
            "backends[0].weight must be in 1..=100, got 0",
        ),
        (
            format!(
                r#"{{{vip}, "backends": [{{"addr": "10.0.1.1:1"}}, {{"addr": "10.0.1.1:8080", "weight": 101}}]}}"#
            ),
            "backends[1].weight must be in 1..=100, got 101",
        ),
        (
            format!(r#"{{{vip}, "backends": [{{"addr": "10.0.1.1:8080", "weight": -1}}]}}"#),
            "backends[0].weight: invalid value: integer `-1`, expected u64",
        ),
        (
            format!(r#"{{{vip}, "backends": [{{"addr": "10.0.1.1:8080", "wieght": 2}}]}}"#),
            "backends[0].wieght: unknown field `wieght`, expected `addr` or `weight`",
        ),
        (
            format!(
                r#"{{{vip}, "backends": [{{"addr": "10.0.1.1:8080"}}, {{"addr": "10.0.1.300:80"}}]}}"#
            ),
            r#"backends[1].addr: expected an IPv4 address and port like "10.0.1.1:8080", got "10.0.1.300:80""#,
        ),
        (
            format!(r#"{{{vip}, "backends": [{{"weight": 2}}]}}"#),
            "backends[0]: missing field `addr`",
        ),
        (
            format!(
                r#"{{{vip}, "backends": [{{"addr": "10.0.1.1:8080"}}, {{"addr": "10.0.1.2:8080"}}, {{"addr": "10.0.1.1:8080"}}]}}"#
            ),
            "backends[2].addr 10.0.1.1:8080 repeats backends[0].addr",
        ),
        (
            format!(r#"{{{vip}, "backends": [{{"addr": "198.51.100.10:80"}}]}}"#),
            "backends[0].addr 198.51.100.10:80 is the vip",
        ),
        (
            format!(r#"{{{vip}, {one}, "table_size": 65536}}"#),
            "table_size must be a prime, got 65536",
        ),
        (
            format!(
                r#"{{{vip}, "backends": [{{"addr": "10.0.1.1:1"}}, {{"addr": "10.0.1.2:1"}}], "table_size": 19}}"#
            ),
            "table_size must be at least 10 per backend (20), got 19",
        ),
        (
            format!(r#"{{{vip}, {one}, "table_size": 16777259}}"#),
            "table_size must be at most 16777216, got 16777259",
        ),
        (
            format!(r#"{{{vip}, {one}, "table_size": "big"}}"#),
            "table_size: invalid type: string \"big\"",
        ),
        (
            format!(r#"{{{vip}, {one}, "affinity_timeout_s": 0}}"#),
            "affinity_timeout_s must be in 1..=86400, got 0",
        ),
        (
            format!(r#"{{{vip}, {one}, "affinity_timeout_s": 1.5}}"#),
            "affinity_timeout_s: invalid type: floating point",
        ),
        (
            format!(r#"{{{vip}, {one}, "max_flows": 0}}"#),
            "max_flows must be in 1..=1000000, got 0",
        ),
        (
            format!(r#"{{{vip}, {one}, "max_flows": 1000001}}"#),
            "max_flows must be in 1..=1000000, got 1000001",
        ),
        (
            format!(r#"{{{vip}, {one}, "non_vip": "reflect"}}"#),
            r#"non_vip: unknown action "reflect", expected "forward" or "drop""#,
        ),
        (
            format!(r#"{{{vip}, {one}, "malformed": true}}"#),
            "malformed: invalid type: boolean `true`, expected a string",
        ),
        (
            format!(r#"{{{vip}, {one}, "vips": 1}}"#),
            "unknown field `vips`",
        ),
        ("{".to_string(), "EOF"),
        ("null".to_string(), "expected a JSON object"),
        ("[1, 2]".to_string(), "expected a JSON object"),
        (format!(r#"{{{vip}, {one}}} {{}}"#), "trailing characters"),
    ];
    for (json, needle) in &cases {
        let err = Lb::from_config(json).expect_err(json).to_string();
        assert!(err.starts_with("invalid lb config: "), "{err}");
        assert!(
            err.contains(needle),
            "{json}\n  got: {err}\n want: {needle}"
        );
    }
    // Over 1000 backends.
    let many: Vec<Backend> = (0..1001u32)
        .map(|i| Backend::new(SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + i), 80), 1))
        .collect();
    let err = Lb::with_backends(VIP, &many).expect_err("1001 backends");
    assert!(
        err.to_string()
            .contains("backends must list 1..=1000 backends, got 1001"),
        "{err}"
    );
}

// ----------------------------------------------------------------- maglev

fn table_addrs(lb: &Lb) -> Vec<Endpoint> {
    lb.maglev()
        .table()
        .iter()
        .map(|&i| lb.backends()[usize::from(i)].addr)
        .collect()
}

#[test]
fn equal_weights_fill_the_table_evenly() {
    let lb = Lb::with_backends(VIP, &backends(10)).expect("lb");
    let entries = lb.maglev().entries();
    assert_eq!(entries.iter().map(|&e| u64::from(e)).sum::<u64>(), 65_537);
    // Backends take one entry per turn, so the counts differ by at most one.
    let (min, max) = (entries.iter().min(), entries.iter().max());
    assert!(
        max.zip(min).is_some_and(|(max, min)| max - min <= 1),
        "{entries:?}"
    );
}

#[test]
fn flows_spread_evenly_over_backends() {
    let mut lb = Lb::with_backends(VIP, &backends(10)).expect("lb");
    let frames: Vec<Vec<u8>> = clients(10_000)
        .into_iter()
        .map(|c| tcp(c, VIP, 0))
        .collect();
    let out = run(&mut lb, &frames);
    let mut per = [0u64; 10];
    for (verdict, frame) in &out {
        assert_eq!(*verdict, Verdict::Forward);
        let (_, dst) = endpoints(frame);
        per[usize::from(dst.ip().octets()[3]) - 1] += 1;
    }
    println!("10k flows over 10 backends: {per:?}");
    // Expected 1000 each; the binomial σ is 30, so ±15% is 5σ.
    for n in per {
        assert!((850..=1150).contains(&n), "{per:?}");
    }
    let t = lb.totals();
    assert_eq!((t.new_flows, t.flows, t.affinity_hits), (10_000, 10_000, 0));
    let reported: Vec<u64> = lb.backend_stats().iter().map(|b| b.new_flows).collect();
    assert_eq!(reported, per);
}

#[test]
fn weights_set_table_shares() {
    let weighted = [
        Backend::new(backend_addr(1), 1),
        Backend::new(backend_addr(2), 2),
        Backend::new(backend_addr(3), 3),
    ];
    let lb = Lb::with_backends(VIP, &weighted).expect("lb");
    let m = lb.maglev().size() as f64;
    let mut rng = Rng(7);
    let mut flows = [0u32; 3];
    const FLOWS: u32 = 60_000;
    for _ in 0..FLOWS {
        let flow = FlowKey {
            client: rng.client(),
            vip: VIP,
            proto: Proto::Tcp,
        };
        flows[usize::from(lb.pick(&flow).0.ip().octets()[3]) - 1] += 1;
    }
    for (i, b) in lb.backend_stats().iter().enumerate() {
        let want = b.weight as f64 / 6.0;
        let table = b.table_entries as f64 / m;
        let flow_share = f64::from(flows[i]) / f64::from(FLOWS);
        println!(
            "weight {}: table share {table:.4}, flow share {flow_share:.4}, ideal {want:.4}",
            b.weight
        );
        assert!((table - want).abs() < 0.02, "table share {table} vs {want}");
        assert!(
            (flow_share - want).abs() < 0.02,
            "flow share {flow_share} vs {want}"
        );
    }
}

#[test]
fn table_does_not_depend_on_backend_order() {
    let mut list = backends(7);
    list[2].weight = 3;
    let a = Lb::with_backends(VIP, &list).expect("lb");
    list.reverse();
    list.swap(0, 3);
    let b = Lb::with_backends(VIP, &list).expect("lb");
    assert_eq!(table_addrs(&a), table_addrs(&b));
}

/// Maglev §3.4 / §5.3: removing a backend moves its own entries and only a
/// few others.
#[test]
fn removing_one_of_ten_backends_moves_about_its_own_flows() {
    const N: u8 = 10;
    let all = backends(N);
    let gone = all[3].addr;
    let rest: Vec<Backend> = all.iter().copied().filter(|b| b.addr != gone).collect();
    let mut lb = Lb::with_backends(VIP, &all).expect("lb");

    let mut rng = Rng(2016);
    let flows: Vec<FlowKey> = (0..100_000)
        .map(|_| FlowKey {
            client: rng.client(),
            vip: VIP,
            proto: Proto::Tcp,
        })
        .collect();
    let table_before = table_addrs(&lb);
    let flows_before: Vec<Endpoint> = flows.iter().map(|f| lb.pick(f)).collect();

    lb.reconfigure(&rest).expect("reconfigure");
    let table_after = table_addrs(&lb);
    let flows_after: Vec<Endpoint> = flows.iter().map(|f| lb.pick(f)).collect();

    // (moved, moved from a backend that stayed, were on the removed one)
    let count = |before: &[Endpoint], after: &[Endpoint]| {
        let mut moved = 0u64;
        let mut collateral = 0u64;
        let mut on_gone = 0u64;
        for (b, a) in before.iter().zip(after) {
            assert_ne!(*a, gone, "the removed backend is not in the new table");
            on_gone += u64::from(*b == gone);
            if b != a {
                moved += 1;
                collateral += u64::from(*b != gone);
            }
        }
        (moved, collateral, on_gone)
    };
    let (t_moved, t_coll, t_gone) = count(&table_before, &table_after);
    let (f_moved, f_coll, f_gone) = count(&flows_before, &flows_after);
    let share = |n: u64, of: usize| n as f64 / of as f64;
    let (m, nf) = (table_before.len(), flows.len());
    println!(
        "remove 1 of {N} backends (M = {m}): table entries moved {:.4} \
         (removed backend held {:.4}, collateral {:.4}); \
         flows moved {:.4} of {nf} (removed backend had {:.4}, collateral {:.4})",
        share(t_moved, m),
        share(t_gone, m),
        share(t_coll, m),
        share(f_moved, nf),
        share(f_gone, nf),
        share(f_coll, nf),
    );
    // Every flow of the removed backend moved, by construction; of the rest
    // only a sliver moved (measured 0.24% of entries, 0.23% of flows).
    assert!(share(t_coll, m) < 0.01, "collateral table entries");
    assert!(share(f_coll, nf) < 0.01, "collateral flows");
    let bound = 2.0 / f64::from(N);
    assert!(share(t_moved, m) < bound, "table entries moved");
    assert!(share(f_moved, nf) < bound, "flows moved");
}

// --------------------------------------------------------------- forwarding

#[test]
fn vip_packets_go_to_a_backend_and_replies_come_back_from_the_vip() {
    let mut lb = Lb::with_backends(VIP, &backends(4)).expect("lb");
    let client = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), 40_000);
    let request = tcp(client, VIP, 100);
    let out = run(&mut lb, std::slice::from_ref(&request));
    let (verdict, rewritten) = &out[0];
    assert_eq!(*verdict, Verdict::Forward);
    let (src, dst) = endpoints(rewritten);
    assert_eq!(src, client);
    let flow = FlowKey {
        client,
        vip: VIP,
        proto: Proto::Tcp,
    };
    assert_eq!(Endpoint(dst), lb.pick(&flow));
    assert_checksums(rewritten);
    // Only destination address, port and the two checksums changed.
    let changed: Vec<usize> = (0..request.len())
        .filter(|&i| request[i] != rewritten[i])
        .collect();
    let allowed = [24, 25, 30, 31, 32, 33, 36, 37, 50, 51];
    assert!(changed.iter().all(|i| allowed.contains(i)), "{changed:?}");

    let reply = tcp(dst, client, 300);
    let out = run(&mut lb, &[reply]);
    let (verdict, back) = &out[0];
    assert_eq!(*verdict, Verdict::Forward);
    assert_eq!(endpoints(back), (VIP, client));
    assert_checksums(back);

    let b = stats_of(&lb, dst);
    assert_eq!((b.packets, b.bytes), (1, request.len() as u64));
    assert_eq!((b.reply_packets, b.reply_bytes), (1, out[0].1.len() as u64));
    let t = lb.totals();
    assert_eq!((t.to_backends, t.replies, t.non_vip), (1, 1, 0));
}

#[test]
fn udp_is_balanced_when_configured() {
    let json = r#"{"vip": "198.51.100.10:53", "proto": "udp",
        "backends": [{"addr": "10.0.1.1:5353"}, {"addr": "10.0.1.2:5353"}]}"#;
    let mut lb = Lb::from_config(json).expect("config");
    let vip = SocketAddrV4::new(*VIP.ip(), 53);
    let client = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 5000);
    let frames = vec![udp(client, vip, 30), tcp(client, vip, 30)];
    let out = run(&mut lb, &frames);
    let (_, dst) = endpoints(&out[0].1);
    assert_eq!(dst.port(), 5353);
    assert_checksums(&out[0].1);
    // TCP to the UDP VIP is someone else's traffic.
    assert_eq!(out[1], (Verdict::Forward, frames[1].clone()));
    let t = lb.totals();
    assert_eq!((t.to_backends, t.non_vip), (1, 1));
}

#[test]
fn checksums_stay_valid_through_vlans_ip_options_and_udp() {
    let mut lb = Lb::with_backends(VIP, &backends(3)).expect("lb");
    let client = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 200), 65_535);
    let frames = vec![
        tcp(client, VIP, 0),
        tcp(client, VIP, 1),
        tcp_vlans(&[10], client, VIP, b"GET / HTTP/1.1\r\n\r\n"),
        tcp_vlans(&[100, 200], client, VIP, &[0xff; 999]),
        tcp_with_ip_options(client, VIP),
    ];
    for (verdict, frame) in run(&mut lb, &frames) {
        assert_eq!(verdict, Verdict::Forward);
        assert_checksums(&frame);
        assert_ne!(endpoints(&frame).1, VIP);
    }

    let mut lb = Lb::from_config(
        r#"{"vip": "198.51.100.10:80", "proto": "udp", "backends": [{"addr": "10.0.1.1:8080"}]}"#,
    )
    .expect("config");
    let mut no_checksum = udp(client, VIP, 20);
    no_checksum[14 + 20 + 6..14 + 20 + 8].fill(0);
    let frames = vec![
        udp(client, VIP, 0),
        udp_vlans(&[1, 2], client, VIP, &[1, 2, 3]),
        no_checksum,
    ];
    let out = run(&mut lb, &frames);
    for (verdict, frame) in &out[..2] {
        assert_eq!(*verdict, Verdict::Forward);
        assert_checksums(frame);
        assert_eq!(endpoints(frame).1, backend_addr(1));
    }
    // A UDP checksum of zero means "none" (RFC 768) and stays zero.
    assert_eq!(out[2].1[40..42], [0, 0]);
    assert_eq!(endpoints(&out[2].1).1, backend_addr(1));
}

/// A UDP payload word that makes the checksum of `src → dst` come out as
/// `want` per etherparse.
fn udp_payload_for(src: SocketAddrV4, dst: SocketAddrV4, want: u16) -> [u8; 2] {
    (0..=u16::MAX)
        .map(u16::to_be_bytes)
        .find(|p| {
            let h = UdpHeader {
                source_port: src.port(),
                destination_port: dst.port(),
                length: 10,
                checksum: 0,
            };
            h.calc_checksum_ipv4_raw(src.ip().octets(), dst.ip().octets(), p)
                .ok()
                == Some(want)
        })
        .expect("some payload gives that checksum")
}

/// The RFC 1624 corner cases: a UDP sum of zero is sent as 0xFFFF (RFC 768),
/// a TCP checksum of 0x0000 is not turned into 0xFFFF (RFC 1624 §3).
#[test]
fn checksum_corner_cases_match_a_full_recomputation() {
    let client = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 1234);
    let backend = backend_addr(1);

    let mut lb = Lb::from_config(
        r#"{"vip": "198.51.100.10:80", "proto": "udp", "backends": [{"addr": "10.0.1.1:8080"}]}"#,
    )
    .expect("config");
    // etherparse reports a computed zero as 0xFFFF.
    let payload = udp_payload_for(client, backend, 0xffff);
    let out = run(&mut lb, &[udp_vlans(&[], client, VIP, &payload)]);
    assert_eq!(out[0].1[40..42], [0xff, 0xff]);
    assert_checksums(&out[0].1);

    let mut lb = Lb::with_backends(VIP, &[Backend::new(backend, 1)]).expect("lb");
    let payload = (0..=u16::MAX)
        .map(u16::to_be_bytes)
        .find(|p| {
            let h = TcpHeader::new(client.port(), backend.port(), 1000, 65535);
            h.calc_checksum_ipv4_raw(client.ip().octets(), backend.ip().octets(), p)
                .ok()
                == Some(0)
        })
        .expect("some payload gives checksum 0");
    let out = run(&mut lb, &[tcp_vlans(&[], client, VIP, &payload)]);
    assert_eq!(out[0].1[50..52], [0, 0]);
    assert_checksums(&out[0].1);
}

#[test]
fn other_traffic_follows_non_vip() {
    let client = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), 40_000);
    let frames = vec![
        arp_request([10, 0, 0, 1], VIP.ip().octets()),
        udp6([1; 16], [2; 16], 1, 80, &[0; 4]),
        // Another port of the VIP's address.
        tcp(client, SocketAddrV4::new(*VIP.ip(), 443), 10),
        // Another host.
        tcp(
            client,
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 11), 80),
            10,
        ),
        // UDP to the TCP VIP.
        udp(client, VIP, 10),
        // From a backend's address but another port: not a reply.
        tcp(SocketAddrV4::new(*backend_addr(1).ip(), 22), client, 10),
    ];
    for (action, verdict) in [("forward", Verdict::Forward), ("drop", Verdict::Drop)] {
        let json = format!(
            r#"{{"vip": "198.51.100.10:80", "backends": [{{"addr": "10.0.1.1:8080"}}], "non_vip": "{action}"}}"#
        );
        let mut lb = Lb::from_config(&json).expect("config");
        for ((v, after), before) in run(&mut lb, &frames).iter().zip(&frames) {
            assert_eq!(*v, verdict);
            assert_eq!(after, before, "left unchanged");
        }
        let t = lb.totals();
        assert_eq!((t.non_vip, t.packets), (6, 6));
        assert_eq!(accounted(&t), t.packets);
    }
}

#[test]
fn fragments_to_the_vip_are_dropped() {
    let mut lb = Lb::with_backends(VIP, &backends(2)).expect("lb");
    let client = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), 40_000);
    let whole = tcp(client, VIP, 40);
    let mut first = whole.clone();
    first[20..22].copy_from_slice(&0x2000u16.to_be_bytes()); // MF
    let mut later = whole.clone();
    later[20..22].copy_from_slice(&0x0003u16.to_be_bytes()); // offset 24 bytes
    let mut from_backend = tcp(backend_addr(1), client, 40);
    from_backend[20..22].copy_from_slice(&0x0003u16.to_be_bytes());
    let mut elsewhere = tcp(client, SocketAddrV4::new(Ipv4Addr::new(9, 9, 9, 9), 80), 40);
    elsewhere[20..22].copy_from_slice(&0x0003u16.to_be_bytes());
    let out = run(&mut lb, &[first, later, from_backend, elsewhere]);
    let verdicts: Vec<Verdict> = out.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        verdicts,
        [
            Verdict::Drop,
            Verdict::Drop,
            Verdict::Drop,
            Verdict::Forward
        ]
    );
    let t = lb.totals();
    assert_eq!((t.fragments, t.non_vip, t.to_backends), (3, 1, 0));
}

// ----------------------------------------------------------------- affinity

#[test]
fn flows_keep_their_backend_across_reconfiguration() {
    let mut lb = Lb::with_backends(VIP, &backends(5)).expect("lb");
    let clients = clients(2000);
    let frames: Vec<Vec<u8>> = clients.iter().map(|&c| tcp(c, VIP, 0)).collect();
    let dst = |out: Vec<(Verdict, Vec<u8>)>| -> Vec<SocketAddrV4> {
        out.iter().map(|(_, f)| endpoints(f).1).collect()
    };
    let first = dst(run_at(&mut lb, &frames, Duration::from_secs(0)));

    // Five more backends: Maglev now gives about half these flows elsewhere,
    // but the flow table keeps each where it was.
    lb.reconfigure(&backends(10)).expect("grow");
    let flow = |c: SocketAddrV4| FlowKey {
        client: c,
        vip: VIP,
        proto: Proto::Tcp,
    };
    let would_move = clients
        .iter()
        .zip(&first)
        .filter(|&(&c, &d)| lb.pick(&flow(c)) != Endpoint(d))
        .count();
    assert!(
        would_move > 500,
        "the new table moves many flows: {would_move}"
    );
    let second = dst(run_at(&mut lb, &frames, Duration::from_secs(30)));
    assert_eq!(first, second, "affinity");
    let t = lb.totals();
    assert_eq!((t.new_flows, t.affinity_hits, t.flows), (2000, 2000, 2000));

    // Drop backend 1: only its flows move, to where the new table says.
    let without_1: Vec<Backend> = backends(10).into_iter().skip(1).collect();
    lb.reconfigure(&without_1).expect("shrink");
    let third = dst(run_at(&mut lb, &frames, Duration::from_secs(60)));
    for ((c, before), after) in clients.iter().zip(&first).zip(&third) {
        if *before == backend_addr(1) {
            assert_eq!(Endpoint(*after), lb.pick(&flow(*c)));
        } else {
            assert_eq!(after, before);
        }
    }
    let on_1 = first.iter().filter(|&&d| d == backend_addr(1)).count() as u64;
    assert!(on_1 > 0);
    assert_eq!(lb.totals().new_flows, 2000 + on_1);

    // Idle past the timeout (60 s after the last packet at 60 s), every flow
    // follows the table.
    let fourth = dst(run_at(&mut lb, &frames, Duration::from_secs(120)));
    for (c, d) in clients.iter().zip(&fourth) {
        assert_eq!(Endpoint(*d), lb.pick(&flow(*c)));
    }
    assert_eq!(lb.totals().new_flows, 4000 + on_1);
}

#[test]
fn counters_survive_reconfiguration_of_kept_backends() {
    let mut lb = Lb::with_backends(VIP, &backends(3)).expect("lb");
    let frames: Vec<Vec<u8>> = clients(300).into_iter().map(|c| tcp(c, VIP, 0)).collect();
    run(&mut lb, &frames);
    let before = stats_of(&lb, backend_addr(2));
    assert!(before.packets > 0);
    let mut list = backends(4);
    list.remove(0);
    list[0].weight = 5;
    lb.reconfigure(&list).expect("reconfigure");
    let after = stats_of(&lb, backend_addr(2));
    assert_eq!(
        (after.packets, after.new_flows),
        (before.packets, before.new_flows)
    );
    assert_eq!(after.weight, 5);
    assert_eq!(stats_of(&lb, backend_addr(4)).packets, 0);
    // A bad list changes nothing.
    assert!(lb.reconfigure(&[]).is_err());
    assert_eq!(lb.backends(), list);
}

#[test]
fn a_full_flow_table_still_balances() {
    let json = r#"{"vip": "198.51.100.10:80", "backends": [{"addr": "10.0.1.1:8080"}, {"addr": "10.0.1.2:8080"}], "max_flows": 4}"#;
    let mut lb = Lb::from_config(json).expect("config");
    let frames: Vec<Vec<u8>> = clients(10).into_iter().map(|c| tcp(c, VIP, 0)).collect();
    for (verdict, frame) in run(&mut lb, &frames) {
        assert_eq!(verdict, Verdict::Forward);
        assert_ne!(endpoints(&frame).1, VIP);
    }
    let t = lb.totals();
    assert_eq!((t.flows, t.new_flows, t.flow_table_full), (4, 4, 6));
    assert_eq!(lb.flow_capacity(), 4);
}

/// A config for [`VIP`] over backends `(i, weight)` (see [`backend_addr`]),
/// with `extra` fields appended (`, "key": value`).
fn config_json(backends: &[(u8, u64)], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|&(i, w)| format!(r#"{{"addr": "{}", "weight": {w}}}"#, backend_addr(i)))
        .collect();
    format!(
        r#"{{"vip": "{VIP}", "backends": [{}]{extra}}}"#,
        list.join(", ")
    )
}

fn destinations(out: &[(Verdict, Vec<u8>)]) -> Vec<SocketAddrV4> {
    out.iter().map(|(_, f)| endpoints(f).1).collect()
}

#[test]
fn json_reconfigure_changes_backends_and_live_flows_keep_theirs() {
    let mut lb = Lb::from_config(&config_json(&[(1, 1), (2, 1), (3, 1)], "")).expect("lb");
    let clients = clients(600);
    let frames: Vec<Vec<u8>> = clients.iter().map(|&c| tcp(c, VIP, 0)).collect();
    let first = destinations(&run_at(&mut lb, &frames, Duration::ZERO));
    let other = udp(clients[0], backend_addr(9), 0);
    assert_eq!(
        run_at(&mut lb, std::slice::from_ref(&other), Duration::ZERO)[0].0,
        Verdict::Forward
    );

    // Backend 1 goes, 4 comes with weight 3, 2 gets weight 2, a smaller
    // table, and other traffic is now dropped.
    let json = config_json(
        &[(2, 2), (3, 1), (4, 3)],
        r#", "table_size": 251, "non_vip": "drop""#,
    );
    NetworkFunction::reconfigure(&mut lb, &json).expect("applies in place");
    assert_eq!(lb.maglev().size(), 251);
    assert_eq!(stats_of(&lb, backend_addr(2)).weight, 2);
    let second = destinations(&run_at(&mut lb, &frames, Duration::from_secs(10)));
    let flow = |c: SocketAddrV4| FlowKey {
        client: c,
        vip: VIP,
        proto: Proto::Tcp,
    };
    let mut moved = 0;
    for ((c, before), after) in clients.iter().zip(&first).zip(&second) {
        if *before == backend_addr(1) {
            assert_eq!(
                Endpoint(*after),
                lb.pick(&flow(*c)),
                "moves per the new table"
            );
            moved += 1;
        } else {
            assert_eq!(after, before, "keeps its backend");
        }
    }
    assert!(moved > 0);
    assert!(second.contains(&backend_addr(4)));
    assert_eq!(
        run_at(&mut lb, &[other], Duration::from_secs(10))[0].0,
        Verdict::Drop
    );
    let t = lb.totals();
    assert_eq!(t.packets, 1202, "totals carry over");
    assert_eq!((t.new_flows, t.affinity_hits), (600 + moved, 600 - moved));
    assert_eq!(accounted(&t), t.packets);
}

#[test]
fn json_reconfigure_changes_the_affinity_timeout_of_live_flows() {
    let mut lb = Lb::from_config(&config_json(&[(1, 1), (2, 1)], "")).expect("lb");
    let frames: Vec<Vec<u8>> = clients(10).into_iter().map(|c| tcp(c, VIP, 0)).collect();
    run_at(&mut lb, &frames, Duration::ZERO);
    let json = config_json(&[(1, 1), (2, 1)], r#", "affinity_timeout_s": 10"#);
    NetworkFunction::reconfigure(&mut lb, &json).expect("applies in place");
    run_at(&mut lb, &frames, Duration::from_secs(20));
    let t = lb.totals();
    assert_eq!((t.new_flows, t.affinity_hits, t.flows), (20, 0, 10));
}

#[test]
fn json_reconfigure_refuses_what_it_cannot_change_and_changes_nothing() {
    let base = [(1, 1), (2, 1), (3, 1)];
    let mut lb = Lb::from_config(&config_json(&base, "")).expect("lb");
    let frames: Vec<Vec<u8>> = clients(100).into_iter().map(|c| tcp(c, VIP, 0)).collect();
    let first = destinations(&run(&mut lb, &frames));
    let report = lb.report();

    let other_vip = config_json(&base, "").replace(":80\"", ":81\"");
    let refusals = [
        (
            other_vip,
            "lb vip cannot change in place: flows and their replies belong to \
             198.51.100.10:80, the new config asks for 198.51.100.10:81",
        ),
        (
            config_json(&base, r#", "proto": "udp""#),
            "lb proto cannot change in place: flows and their replies are tcp, \
             the new config asks for udp",
        ),
        (
            config_json(&base, r#", "max_flows": 1024"#),
            "lb max_flows cannot change in place: the flow table holds 65536, \
             the new config asks for 1024",
        ),
    ];
    for (json, message) in refusals {
        let err = NetworkFunction::reconfigure(&mut lb, &json).expect_err(&json);
        assert_eq!(err, message);
    }
    for json in [
        String::new(),
        "{".into(),
        config_json(&[(4, 1)], r#", "table_size": 12"#),
        config_json(&[(4, 0)], ""),
        config_json(&[(4, 1)], r#", "ttl": 1"#),
    ] {
        let err = NetworkFunction::reconfigure(&mut lb, &json).expect_err(&json);
        assert!(err.starts_with("invalid lb config: "), "{err}");
    }
    assert_eq!(lb.report(), report);
    assert_eq!(
        lb.backends(),
        Lb::from_config(&config_json(&base, ""))
            .expect("lb")
            .backends()
    );
    assert_eq!(destinations(&run(&mut lb, &frames)), first);
    assert_eq!(lb.totals().affinity_hits, 100);
}

// ---------------------------------------------------------------- malformed

#[test]
fn malformed_frames_are_counted_and_follow_the_policy() {
    let client = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), 40_000);
    let good = tcp(client, VIP, 16);
    let good_udp = udp(client, VIP, 16);
    let mut frames: Vec<Vec<u8>> = Vec::new();
    // Runts and every truncation of a TCP frame to the VIP.
    frames.extend((0..good.len() - 16).map(|n| good[..n].to_vec()));
    let cuts = frames.len();
    let mut f = good.clone();
    f[14] = 0x44; // IHL 4
    frames.push(f);
    let mut f = good.clone();
    f[14] = 0x4f; // IHL 15: past the packet
    frames.push(f);
    let mut f = good.clone();
    f[14] = 0x65; // version 6 behind EtherType IPv4
    frames.push(f);
    let mut f = good.clone();
    f[16..18].copy_from_slice(&1500u16.to_be_bytes()); // total length past the frame
    frames.push(f);
    let mut f = good.clone();
    f[16..18].copy_from_slice(&19u16.to_be_bytes()); // total length below the header
    frames.push(f);
    let mut f = good.clone();
    f[14 + 20 + 12] = 0x40; // TCP data offset 4
    frames.push(f);
    let mut f = good.clone();
    f[14 + 20 + 12] = 0xf0; // TCP data offset 15: past the segment
    frames.push(f);
    let mut f = good_udp.clone();
    f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&7u16.to_be_bytes()); // UDP length 7
    frames.push(f);
    let mut f = good_udp;
    f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&500u16.to_be_bytes()); // past the datagram
    frames.push(f);
    // Three VLAN tags.
    let mut f = tcp_vlans(&[1, 2], client, VIP, &[0; 4]);
    f.splice(12..12, [0x81, 0x00, 0x00, 0x03]);
    frames.push(f);
    // Two tags, then nothing.
    frames.push(tcp_vlans(&[1, 2], client, VIP, &[])[..20].to_vec());
    let malformed = frames.len() as u64;

    for (action, verdict) in [("drop", Verdict::Drop), ("forward", Verdict::Forward)] {
        let json = format!(
            r#"{{"vip": "198.51.100.10:80", "backends": [{{"addr": "10.0.1.1:8080"}}], "malformed": "{action}"}}"#
        );
        let mut lb = Lb::from_config(&json).expect("config");
        for (i, ((v, after), before)) in run(&mut lb, &frames).iter().zip(&frames).enumerate() {
            assert_eq!(*v, verdict, "frame {i}");
            assert_eq!(after, before, "frame {i} left unchanged");
        }
        let t = lb.totals();
        assert_eq!(t.malformed, malformed, "{cuts} cuts and the rest");
        assert_eq!((t.to_backends, t.flows), (0, 0));
        assert_eq!(accounted(&t), t.packets);
    }
}

#[test]
fn report_is_the_documented_json() {
    let mut lb = Lb::with_backends(VIP, &backends(2)).expect("lb");
    let client = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), 40_000);
    let frames = vec![
        tcp(client, VIP, 10),
        tcp(client, VIP, 10),
        arp_request([10, 0, 0, 1], VIP.ip().octets()),
        vec![0; 5],
    ];
    let out = run(&mut lb, &frames);
    let to = endpoints(&out[0].1).1;
    let report: Value = serde_json::from_str(&lb.report().expect("report")).expect("json");
    assert_eq!(report["vip"], "198.51.100.10:80");
    assert_eq!(report["proto"], "tcp");
    assert_eq!(report["table_size"], 65_537);
    for (key, want) in [
        ("packets", 4),
        ("flows", 1),
        ("new_flows", 1),
        ("affinity_hits", 1),
        ("to_backends", 2),
        ("replies", 0),
        ("non_vip", 1),
        ("malformed", 1),
        ("fragments", 0),
        ("flow_table_full", 0),
    ] {
        assert_eq!(report[key], want, "{key}");
    }
    let backends = report["backends"].as_array().expect("backends");
    assert_eq!(backends.len(), 2);
    let entries: u64 = backends
        .iter()
        .filter_map(|b| b["table_entries"].as_u64())
        .sum();
    assert_eq!(entries, 65_537);
    let b = backends
        .iter()
        .find(|b| b["addr"] == to.to_string())
        .expect("the chosen backend");
    let len = frames[0].len() as u64;
    assert_eq!(
        *b,
        serde_json::json!({
            "addr": to.to_string(), "weight": 1, "table_entries": b["table_entries"],
            "flows": 1, "new_flows": 1, "affinity_hits": 1,
            "packets": 2, "bytes": 2 * len, "reply_packets": 0, "reply_bytes": 0,
        })
    );
}

#[test]
fn process_reads_the_clock() {
    let mut lb = Lb::with_backends(VIP, &backends(2)).expect("lb");
    let client = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), 40_000);
    let out = nf_testkit::run(&mut lb, &[tcp(client, VIP, 0)]);
    assert_eq!(
        out.first().map(|(verdict, _)| *verdict),
        Some(Verdict::Forward)
    );
    assert_eq!(lb.totals().new_flows, 1);
}

// ---------------------------------------------------------------- proptests

fn valid_frames() -> impl Strategy<Value = Vec<u8>> {
    let client = (any::<[u8; 4]>(), any::<u16>())
        .prop_map(|(ip, port)| SocketAddrV4::new(Ipv4Addr::from(ip), port));
    prop_oneof![
        (client.clone(), 0..200usize).prop_map(|(c, n)| tcp(c, VIP, n)),
        (client.clone(), 0..200usize).prop_map(|(c, n)| udp(c, VIP, n)),
        (client.clone(), 1..4u8, 0..200usize).prop_map(|(c, b, n)| tcp(backend_addr(b), c, n)),
        (client.clone(), 1..4095u16, 1..4095u16).prop_map(|(c, v, w)| tcp_vlans(
            &[v, w],
            c,
            VIP,
            &[1]
        )),
        client.prop_map(|c| tcp_with_ip_options(c, VIP)),
        Just(arp_request([10, 0, 0, 1], VIP.ip().octets())),
        Just(udp6([1; 16], [2; 16], 1, 80, &[0; 4])),
    ]
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

fn small_lb(malformed: &str) -> Lb {
    let json = format!(
        r#"{{"vip": "198.51.100.10:80", "table_size": 31,
            "backends": [{{"addr": "10.0.1.1:8080"}}, {{"addr": "10.0.1.2:8080", "weight": 3}},
                         {{"addr": "10.0.1.3:8080"}}],
            "max_flows": 16, "malformed": "{malformed}"}}"#
    );
    Lb::from_config(&json).expect("config")
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_are_accounted(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1600), 1..80),
        forward in any::<bool>(),
    ) {
        let mut lb = small_lb(if forward { "forward" } else { "drop" });
        let out = run(&mut lb, &frames);
        prop_assert_eq!(out.len(), frames.len());
        let t = lb.totals();
        prop_assert_eq!(t.packets, frames.len() as u64);
        prop_assert_eq!(accounted(&t), t.packets);
        prop_assert!(lb.report().is_some());
    }

    #[test]
    fn mangled_frames_never_panic_and_are_accounted(
        frames in proptest::collection::vec(mangled_frames(), 1..80),
        secs in 0..1000u64,
    ) {
        let mut lb = small_lb("forward");
        run_at(&mut lb, &frames, Duration::from_secs(secs));
        let out = run_at(&mut lb, &frames, Duration::from_secs(secs + 1));
        for ((verdict, after), before) in out.iter().zip(&frames) {
            // Only forwarded packets are ever rewritten.
            if after != before {
                prop_assert_eq!(*verdict, Verdict::Forward);
            }
        }
        let t = lb.totals();
        prop_assert_eq!(accounted(&t), t.packets);
        prop_assert!(t.flows <= 16);
        prop_assert_eq!(lb.flow_capacity(), 16);
    }

    #[test]
    fn rewrites_keep_checksums_valid(
        ip in any::<[u8; 4]>(),
        port in any::<u16>(),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        vlans in proptest::collection::vec(1..4095u16, 0..3),
        is_udp in any::<bool>(),
    ) {
        let client = SocketAddrV4::new(Ipv4Addr::from(ip), port);
        let backend_ips = [Ipv4Addr::new(10, 0, 1, 1), Ipv4Addr::new(172, 16, 99, 250)];
        prop_assume!(*client.ip() != *VIP.ip() && !backend_ips.contains(client.ip()));
        let proto = if is_udp { "udp" } else { "tcp" };
        let json = format!(
            r#"{{"vip": "198.51.100.10:80", "proto": "{proto}",
                "backends": [{{"addr": "10.0.1.1:8080"}}, {{"addr": "172.16.99.250:65535"}}]}}"#
        );
        let mut lb = Lb::from_config(&json).expect("config");
        let build = if is_udp { udp_vlans } else { tcp_vlans };
        let request = build(&vlans, client, VIP, &payload);
        let out = run(&mut lb, std::slice::from_ref(&request));
        let (verdict, there) = &out[0];
        prop_assert_eq!(*verdict, Verdict::Forward);
        assert_checksums(there);
        let (src, backend) = endpoints(there);
        prop_assert_eq!(src, client);
        prop_assert_ne!(backend, VIP);
        prop_assert_eq!(there.len(), request.len());

        let reply = build(&vlans, backend, client, &payload);
        let out = run(&mut lb, &[reply]);
        let (verdict, back) = &out[0];
        prop_assert_eq!(*verdict, Verdict::Forward);
        assert_checksums(back);
        prop_assert_eq!(endpoints(back), (VIP, client));
    }
}

// -------------------------------------------------------------- benchmark

/// CPU time of this thread so far (Linux schedstat, first field, in ns), so
/// the benchmark means something on a machine shared with other builds,
/// where wall time counts the time other processes hold the CPU.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// 64-byte TCP frames to the VIP from 4096 clients (so, after the first
/// round, flow-table hits), 10 backends, batches of 64 through
/// `NetworkFunction::process` (one clock read per batch). Each round first
/// restores the frames, which the previous round rewrote; that copy is
/// measured alone and subtracted.
#[test]
#[ignore = "benchmark: cargo test -p nf-lb --release -- --ignored --nocapture"]
fn bench_ns_per_packet() {
    const FLOWS: usize = 4096;
    const ROUNDS: usize = 200_000;
    let mut lb = Lb::with_backends(VIP, &backends(10)).expect("lb");
    let templates: Vec<Vec<u8>> = clients(FLOWS as u32)
        .into_iter()
        .map(|c| tcp(c, VIP, 10))
        .collect();
    assert_eq!(templates[0].len(), 64);
    let mut umem = vec![[0u8; FRAME]; MAX_BATCH];

    let mut round = |lb: Option<&mut Lb>, r: usize| {
        for (j, buf) in umem.iter_mut().enumerate() {
            buf[..64].copy_from_slice(&templates[(r * MAX_BATCH + j) % FLOWS]);
        }
        let packets: ArrayVec<Packet<'_>, MAX_BATCH> =
            umem.iter_mut().map(|b| Packet::new(b, 64, 0)).collect();
        let mut batch = Batch::from_packets(packets);
        if let Some(lb) = lb {
            lb.process(&mut batch);
        }
        black_box(&mut batch);
    };
    for r in 0..FLOWS / MAX_BATCH {
        round(Some(&mut lb), r);
    }
    let mut measure = |lb: Option<&mut Lb>| {
        let (wall, cpu) = (Instant::now(), thread_cpu_time());
        let mut lb = lb;
        for r in 0..ROUNDS {
            round(lb.as_deref_mut(), r);
        }
        let cpu = thread_cpu_time().zip(cpu).map(|(end, start)| end - start);
        (wall.elapsed(), cpu)
    };
    let (baseline, baseline_cpu) = measure(None);
    let (total, total_cpu) = measure(Some(&mut lb));
    let packets = (ROUNDS * MAX_BATCH) as f64;
    let ns = |d: Duration| d.as_nanos() as f64 / packets;
    let t = lb.totals();
    assert_eq!(
        t.to_backends as usize,
        (ROUNDS + FLOWS / MAX_BATCH) * MAX_BATCH
    );
    assert_eq!(t.new_flows as usize, FLOWS);
    println!(
        "lb, wall time: {:.1} ns/packet (64-byte TCP to the VIP, {FLOWS} flows, batches of \
         {MAX_BATCH}); {:.1} ns/packet with the frame restore, of which restore {:.1}",
        ns(total) - ns(baseline),
        ns(total),
        ns(baseline),
    );
    if let Some((total, baseline)) = total_cpu.zip(baseline_cpu) {
        println!(
            "lb, thread CPU time: {:.1} ns/packet; {:.1} with the frame restore, of which restore {:.1}",
            ns(total) - ns(baseline),
            ns(total),
            ns(baseline),
        );
    }
}
