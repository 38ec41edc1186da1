use etherparse::err::packet::SliceError;
use etherparse::{LinkExtSlice, NetSlice, SlicedPacket, TransportSlice};
use nf_sdk::{Batch, MAX_BATCH, NetworkFunction, Packet, Verdict};
use nf_testkit::{FRAME, arp_request, echo4, echo6, lldp, run, run_with, tagged, tcp4, udp4, udp6};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// Header bytes of an untagged UDP/IPv4 frame: Ethernet 14, IPv4 20, UDP 8.
const UDP4_HEADERS: usize = 42;

/// The destination of the suite's UDP/IPv6 frames: 2001:db8::2.
const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// Runs `frames` through `nf` at `now` the way the runtime does (see
/// [`nf_testkit::run`]). Returns the verdicts.
fn run_at(nf: &mut Ratelimit, frames: &[Vec<u8>], now: Nanos) -> Vec<Verdict> {
    let out = run_with(frames, |batch| nf.process_at(batch, now));
    out.into_iter().map(|(verdict, _)| verdict).collect()
}

fn passes(verdicts: &[Verdict]) -> usize {
    verdicts.iter().filter(|v| **v == Verdict::Forward).count()
}

fn limiter(json: &str) -> Ratelimit {
    Ratelimit::from_config(json).expect(json)
}

/// An untagged UDP/IPv4 frame of exactly `len` bytes (at least 42).
fn udp4_len(len: usize) -> Vec<u8> {
    let frame = udp4(
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        1000,
        2000,
        &vec![0; len - UDP4_HEADERS],
    );
    assert_eq!(frame.len(), len);
    frame
}

/// A QinQ frame with a third tag pushed in front (TPID 0x88a8, VID 7).
fn triple_tagged_udp4() -> Vec<u8> {
    let mut frame = tagged(&udp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, &[0; 10]), &[5, 6]);
    frame.splice(12..12, [0x88, 0xa8, 0x00, 0x07]);
    frame
}

/// A UDP/IPv6 frame with an 8-byte hop-by-hop options header (one PadN)
/// between the IPv6 and UDP headers.
fn udp6_hop_by_hop(src: [u8; 16], sport: u16) -> Vec<u8> {
    let mut frame = udp6(src, DST6, sport, 53, &[0; 20]);
    let payload_len = u16::from_be_bytes([frame[18], frame[19]]) + 8;
    frame[18..20].copy_from_slice(&payload_len.to_be_bytes());
    frame[20] = 0; // next header: hop-by-hop
    frame.splice(54..54, [17, 0, 1, 4, 0, 0, 0, 0]);
    frame
}

/// A UDP/IPv4 frame turned into a fragment: `more` sets MF, `offset` is in
/// 8-byte units. The header checksum goes stale, which no one checks.
fn fragment4(src: [u8; 4], sport: u16, more: bool, offset: u16) -> Vec<u8> {
    let mut frame = udp4(src, [10, 0, 0, 2], sport, 53, &[0; 24]);
    let flags = if more { 0x2000 } else { 0 } | (offset & 0x1fff);
    frame[20..22].copy_from_slice(&flags.to_be_bytes());
    frame
}

/// Sends `count` copies of `frame` at `start + i × gap` and returns how many
/// passed.
fn send_spaced(nf: &mut Ratelimit, frame: &[u8], start: Nanos, gap: Nanos, count: u64) -> u64 {
    (0..count)
        .filter(|i| nf.police(frame, Nanos(start.0 + i * gap.0)) == Verdict::Forward)
        .count() as u64
}

/// Every packet is passed or dropped for exactly one reason.
fn accounted(nf: &Ratelimit) -> u64 {
    let c = nf.counters();
    c.passed_packets
        + c.dropped.aggregate
        + c.dropped.per_flow
        + c.dropped.malformed
        + c.dropped.non_ip
}

#[test]
fn pps_one_second_at_twice_the_rate_passes_rate_plus_burst() {
    // 10 000 pps, default burst 10 ms = 100 packets; 20 000 packets evenly
    // over one second.
    let mut nf = limiter(r#"{"rate": {"pps": 10000}}"#);
    assert_eq!(nf.config().burst, Some(100));
    let frame = udp4_len(64);
    let passed = send_spaced(&mut nf, &frame, Nanos(0), Nanos::from_micros(50), 20_000);
    assert!((10_099..=10_101).contains(&passed), "{passed}");
    let c = nf.counters();
    assert_eq!(c.passed_packets, passed);
    assert_eq!(c.passed_bytes, passed * 64);
    assert_eq!(c.dropped.aggregate, 20_000 - passed);
    assert_eq!(accounted(&nf), 20_000);
}

#[test]
fn bps_one_second_at_twice_the_rate_passes_rate_plus_burst() {
    // 8 Mbit/s = 1 MB/s of 1000-byte frames (1000 frames/s); default burst
    // 10 ms = 10 000 bytes; 2000 frames evenly over one second.
    let mut nf = limiter(r#"{"rate": {"bps": 8000000}}"#);
    assert_eq!(nf.config().burst, Some(10_000));
    let frame = udp4_len(1000);
    let passed = send_spaced(&mut nf, &frame, Nanos(0), Nanos::from_micros(500), 2000);
    let expected = (1_000_000 + 10_000) / 1000;
    assert!(passed.abs_diff(expected) <= 1, "{passed}");
    assert_eq!(nf.counters().passed_bytes, passed * 1000);
    // Frame length matters in bps mode: at the same bit rate, 100-byte
    // frames pass ten times as many.
    let mut nf = limiter(r#"{"rate": {"bps": 8000000}}"#);
    let small = udp4_len(100);
    let passed = send_spaced(&mut nf, &small, Nanos(0), Nanos::from_micros(50), 20_000);
    let expected = (1_000_000 + 10_000) / 100;
    assert!(passed.abs_diff(expected) <= 1, "{passed}");
}

#[test]
fn burst_then_refill() {
    let mut nf = limiter(r#"{"rate": {"pps": 1000}, "burst": 10}"#);
    let frames = vec![udp4_len(60); 20];
    // A full bucket lets the burst through at once, then nothing.
    assert_eq!(passes(&run_at(&mut nf, &frames, Nanos::from_secs(1))), 10);
    // 5 ms later, 5 tokens have come back.
    let t = Nanos::from_secs(1).0;
    assert_eq!(passes(&run_at(&mut nf, &frames, Nanos(t + 5_000_000))), 5);
    // 1 µs is a thousandth of a token: nothing.
    assert_eq!(
        passes(&run_at(&mut nf, &frames[..1], Nanos(t + 5_001_000))),
        0
    );
    // A long pause refills to the burst, never beyond.
    assert_eq!(passes(&run_at(&mut nf, &frames, Nanos::from_secs(100))), 10);
    let c = nf.counters();
    assert_eq!(c.passed_packets, 25);
    assert_eq!(c.dropped.aggregate, 36);
}

#[test]
fn clock_going_back_neither_refills_nor_panics() {
    let mut nf = limiter(r#"{"rate": {"pps": 1000}, "burst": 2}"#);
    let f = udp4_len(60);
    assert_eq!(
        send_spaced(&mut nf, &f, Nanos::from_secs(5), Nanos(0), 3),
        2
    );
    assert_eq!(send_spaced(&mut nf, &f, Nanos(0), Nanos(0), 3), 0);
    assert_eq!(send_spaced(&mut nf, &f, Nanos(u64::MAX), Nanos(0), 3), 2);
}

#[test]
fn per_flow_limits_a_heavy_flow_while_a_light_one_passes() {
    let mut nf = limiter(
        r#"{
        "rate": {"pps": 100000},
        "per_flow": {"rate": {"pps": 1000}, "burst": 10}
    }"#,
    );
    let heavy = udp4([10, 0, 0, 1], [10, 0, 0, 9], 4000, 80, &[0; 100]);
    // Same addresses, another port: another 5-tuple.
    let light = udp4([10, 0, 0, 1], [10, 0, 0, 9], 4001, 80, &[0; 100]);
    let (mut heavy_passed, mut light_passed) = (0, 0);
    // One second: the heavy flow at 10 000 pps, the light one at 100 pps.
    for i in 0..10_000u64 {
        let now = Nanos(i * 100_000);
        heavy_passed += u64::from(nf.police(&heavy, now) == Verdict::Forward);
        if i % 100 == 50 {
            light_passed += u64::from(nf.police(&light, now) == Verdict::Forward);
        }
    }
    assert_eq!(light_passed, 100);
    assert!(heavy_passed.abs_diff(1010) <= 1, "{heavy_passed}");
    let c = nf.counters();
    assert_eq!(c.dropped.per_flow, 10_000 - heavy_passed);
    assert_eq!(c.dropped.aggregate, 0);
    assert_eq!(nf.flows(), 2);
}

#[test]
fn packets_take_from_all_buckets_or_none() {
    // Aggregate 3 packets, each flow 2: the per-flow drop of flow A must not
    // cost the aggregate a token, so flow B still gets one.
    let mut nf = limiter(
        r#"{
        "rate": {"pps": 1}, "burst": 3,
        "per_flow": {"rate": {"pps": 1}, "burst": 2}
    }"#,
    );
    let a = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 1, &[]);
    let b = udp4([10, 0, 0, 3], [10, 0, 0, 2], 1, 1, &[]);
    let now = Nanos(0);
    let verdicts: Vec<Verdict> = [&a, &a, &a, &a, &b, &b]
        .iter()
        .map(|f| nf.police(f, now))
        .collect();
    use Verdict::{Drop, Forward};
    assert_eq!(verdicts, [Forward, Forward, Drop, Drop, Forward, Drop]);
    let d = nf.counters().dropped;
    // B's second packet finds its own bucket full but the aggregate empty.
    assert_eq!((d.per_flow, d.aggregate), (2, 1));
}

#[test]
fn src_prefix_groups_the_hosts_of_a_slash_24() {
    let mut nf = limiter(
        r#"{
        "rate": {"pps": 1000000},
        "per_flow": {"key": "src_prefix", "rate": {"pps": 100}, "burst": 10}
    }"#,
    );
    assert_eq!(
        nf.config()
            .per_flow
            .map(|p| (p.prefix_len, p.prefix_len_v6)),
        Some((Some(24), Some(64)))
    );
    // 50 hosts of 10.0.0.0/24, one packet each, to different ports: one bucket.
    let subnet: Vec<Vec<u8>> = (1..=50u8)
        .map(|h| tcp4([10, 0, 0, h], [192, 0, 2, 1], 1000 + u16::from(h), 80, &[]))
        .collect();
    assert_eq!(passes(&run_at(&mut nf, &subnet, Nanos(0))), 10);
    // Another /24 has its own bucket.
    let other = vec![udp4([10, 0, 1, 1], [192, 0, 2, 1], 1, 2, &[]); 12];
    assert_eq!(passes(&run_at(&mut nf, &other, Nanos(0))), 10);
    // IPv6 hosts of one /64 share one too.
    let mut v6 = Vec::new();
    for host in 1..=12u8 {
        let mut src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        src[15] = host;
        src[9] = host; // inside the host part too
        v6.push(udp6(src, DST6, 7, 53, &[0; 20]));
    }
    assert_eq!(passes(&run_at(&mut nf, &v6, Nanos(0))), 10);
    assert_eq!(nf.flows(), 3);
    assert_eq!(nf.counters().dropped.per_flow, 40 + 2 + 2);
}

#[test]
fn fragments_of_a_datagram_share_a_flow() {
    let mut nf = limiter(
        r#"{
        "rate": {"pps": 1000000},
        "per_flow": {"rate": {"pps": 1}, "burst": 1}
    }"#,
    );
    let first = fragment4([10, 0, 0, 1], 7, true, 0);
    // A later fragment has no UDP header: its first bytes are payload.
    let later = fragment4([10, 0, 0, 1], 9999, false, 4);
    assert_eq!(nf.police(&first, Nanos(0)), Verdict::Forward);
    assert_eq!(nf.police(&later, Nanos(0)), Verdict::Drop);
    assert_eq!(nf.counters().dropped.per_flow, 1);
    // The unfragmented datagrams of that UDP flow are a flow of their own.
    let whole = udp4([10, 0, 0, 1], [10, 0, 0, 2], 7, 53, &[0; 24]);
    assert_eq!(nf.police(&whole, Nanos(0)), Verdict::Forward);
    assert_eq!(nf.flows(), 2);
}

#[test]
fn extension_headers_icmp_and_non_ip_are_classified() {
    use parse::Class;
    let ip = |f: &[u8]| match parse::classify(f) {
        Class::Ip(fields) => Some((fields.proto, fields.sport, fields.dport, fields.v6)),
        _ => None,
    };
    assert_eq!(ip(&udp6_hop_by_hop([1; 16], 5)), Some((17, 5, 53, true)));
    assert_eq!(
        ip(&echo4([10, 0, 0, 1], [10, 0, 0, 2], 1, true)),
        Some((1, 0, 0, false))
    );
    assert_eq!(
        ip(&echo6([1; 16], [2; 16], 1, true)),
        Some((58, 0, 0, true))
    );
    assert_eq!(ip(&fragment4([1; 4], 5, true, 0)), Some((17, 0, 0, false)));
    assert_eq!(
        parse::classify(&arp_request([10, 0, 0, 1], [10, 0, 0, 2])),
        Class::NonIp
    );
    assert_eq!(parse::classify(&lldp()), Class::NonIp);
    // Truncated ARP and ICMP are malformed, as etherparse has them.
    let arp = arp_request([10, 0, 0, 1], [10, 0, 0, 2]);
    assert_eq!(parse::classify(&arp[..arp.len() - 1]), Class::Malformed);
    // An ICMP header of 7 bytes in a consistent IPv4 packet of 27.
    let mut icmp = echo4([10, 0, 0, 1], [10, 0, 0, 2], 1, true);
    icmp.truncate(14 + 20 + 7);
    icmp[16..18].copy_from_slice(&27u16.to_be_bytes());
    assert_eq!(parse::classify(&icmp), Class::Malformed, "ICMP header cut");
}

#[test]
fn src_prefix_length_is_configurable() {
    let mut nf = limiter(
        r#"{
        "rate": {"pps": 1000000},
        "per_flow": {"key": "src_prefix", "prefix_len": 32, "prefix_len_v6": 128,
                     "rate": {"pps": 1}, "burst": 1}
    }"#,
    );
    let hosts: Vec<Vec<u8>> = (1..=5u8)
        .map(|h| udp4([10, 0, 0, h], [10, 0, 1, 1], 1, 2, &[]))
        .collect();
    assert_eq!(passes(&run_at(&mut nf, &hosts, Nanos(0))), 5);
    assert_eq!(passes(&run_at(&mut nf, &hosts, Nanos(0))), 0);
    assert_eq!(nf.flows(), 5);
}

#[test]
fn full_table_polices_new_flows_by_the_aggregate_only() {
    let mut nf = limiter(
        r#"{
        "rate": {"pps": 1000}, "burst": 100,
        "per_flow": {"rate": {"pps": 1}, "burst": 1, "max_flows": 2}
    }"#,
    );
    let flow = |port: u16| udp4([10, 0, 0, 1], [10, 0, 0, 2], port, 9, &[]);
    let now = Nanos(0);
    assert_eq!(nf.police(&flow(1), now), Verdict::Forward);
    assert_eq!(nf.police(&flow(2), now), Verdict::Forward);
    assert_eq!(nf.flows(), 2);
    // Tracked flows are held to their bucket of 1.
    assert_eq!(nf.police(&flow(1), now), Verdict::Drop);
    // An untracked flow is not: five packets pass on the aggregate alone.
    for _ in 0..5 {
        assert_eq!(nf.police(&flow(3), now), Verdict::Forward);
    }
    let c = nf.counters();
    assert_eq!(c.flow_table_full, 5);
    assert_eq!(c.dropped.per_flow, 1);
    assert_eq!(c.passed_packets, 7);
    assert_eq!(nf.flows(), 2);
    // Non-IP and malformed frames never enter the table nor count as full.
    nf.police(&arp_request([10, 0, 0, 1], [10, 0, 0, 2]), now);
    nf.police(&[0u8; 3], now);
    assert_eq!(nf.counters().flow_table_full, 5);
}

#[test]
fn table_never_grows_past_its_preallocation() {
    let mut nf = limiter(
        r#"{"rate": {"pps": 1000000000},
                       "per_flow": {"rate": {"pps": 10}, "max_flows": 1000}}"#,
    );
    let capacity = nf
        .per_flow
        .as_ref()
        .map(|pf| pf.table.entry_capacity())
        .expect("per flow");
    assert_eq!(capacity, 1000);
    let frame = udp4([10, 0, 0, 1], [10, 0, 0, 2], 0, 0, &[]);
    // 3000 distinct flows, by rewriting the ports in place (UDP header at
    // 14 + 20; the policer does not check UDP checksums).
    let frames: Vec<Vec<u8>> = (0..3000u32)
        .map(|i| {
            let mut f = frame.clone();
            f[34..38].copy_from_slice(&i.to_be_bytes());
            f
        })
        .collect();
    for round in 0..3 {
        run_at(&mut nf, &frames, Nanos::from_millis(round));
    }
    assert_eq!(nf.flows(), 1000);
    assert_eq!(nf.counters().flow_table_full, 3 * 2000);
    let pf = nf.per_flow.as_ref().expect("per flow");
    assert_eq!(pf.table.entry_capacity(), capacity);
    pf.table.check();
}

#[test]
fn idle_flows_expire_and_free_their_slot() {
    let mut nf = limiter(
        r#"{
        "rate": {"pps": 1000},
        "per_flow": {"rate": {"pps": 1}, "burst": 1, "max_flows": 2, "idle_timeout_s": 1}
    }"#,
    );
    let flow = |port: u16| udp4([10, 0, 0, 1], [10, 0, 0, 2], port, 9, &[]);
    nf.police(&flow(1), Nanos(0));
    nf.police(&flow(2), Nanos::from_millis(300));
    assert_eq!(
        nf.police(&flow(3), Nanos::from_millis(500)),
        Verdict::Forward
    );
    assert_eq!(nf.counters().flow_table_full, 1);
    // At 1.1 s flow 1 has been idle over a second: flow 3 takes its place.
    assert_eq!(
        nf.police(&flow(3), Nanos::from_millis(1100)),
        Verdict::Forward
    );
    assert_eq!(nf.counters().flow_table_full, 1);
    assert_eq!(nf.counters().flows_expired, 1);
    assert_eq!(nf.flows(), 2);
    // Now flow 3 has a bucket of 1, spent.
    assert_eq!(nf.police(&flow(3), Nanos::from_millis(1100)), Verdict::Drop);
    // The per-batch sweep forgets flows nobody asks about, even in an empty
    // batch.
    let mut none: [Packet<'_>; 0] = [];
    nf.process_at(&mut Batch::new(&mut none), Nanos::from_secs(10));
    assert_eq!(nf.flows(), 0);
    assert_eq!(nf.counters().flows_expired, 3);
}

#[test]
fn an_idle_flow_found_before_the_sweep_starts_over() {
    // A burst larger than idle time × rate: a flow back after its idle
    // timeout gets a full bucket, as a new flow would.
    let mut nf = limiter(
        r#"{
        "rate": {"pps": 1000000},
        "per_flow": {"rate": {"pps": 1}, "burst": 5, "idle_timeout_s": 1}
    }"#,
    );
    let f = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 9, &[]);
    assert_eq!(send_spaced(&mut nf, &f, Nanos(0), Nanos(0), 6), 5);
    assert_eq!(
        send_spaced(&mut nf, &f, Nanos::from_secs(2), Nanos(0), 6),
        5
    );
    assert_eq!(nf.counters().flows_expired, 1);
}

#[test]
fn reconfigure_changes_the_rate_on_the_fly() {
    let mut nf = limiter(r#"{"rate": {"pps": 1000}, "burst": 10}"#);
    let f = udp4_len(60);
    // One second at 2000 pps: 1000 + 10.
    let first = send_spaced(&mut nf, &f, Nanos(0), Nanos::from_micros(500), 2000);
    assert!(first.abs_diff(1010) <= 1, "{first}");
    nf.reconfigure_at(
        r#"{"rate": {"pps": 5000}, "burst": 10}"#,
        Nanos::from_secs(1),
    )
    .expect("reconfigure");
    assert_eq!(nf.config().rate, Rate::Pps(5000));
    // The next second at 10 000 pps: the bucket carried over nearly empty,
    // so about 5000 (+ at most the burst).
    let second = send_spaced(
        &mut nf,
        &f,
        Nanos::from_secs(1),
        Nanos::from_micros(100),
        10_000,
    );
    assert!((4999..=5011).contains(&second), "{second}");
    // Counters survive the change.
    assert_eq!(nf.counters().passed_packets, first + second);
    // A bad config changes nothing.
    let err = nf
        .reconfigure_at(r#"{"rate": {"pps": 0}}"#, Nanos::from_secs(2))
        .expect_err("rate 0");
    assert!(err.to_string().contains("rate.pps"), "{err}");
    assert_eq!(nf.config().rate, Rate::Pps(5000));
}

#[test]
fn reconfigure_keeps_bucket_state_where_the_key_still_applies() {
    let json = |pps: u64, burst: u64, key: &str| {
        format!(
            r#"{{"rate": {{"pps": 1000000}},
                 "per_flow": {{"key": "{key}", "rate": {{"pps": {pps}}}, "burst": {burst}}}}}"#
        )
    };
    let mut nf = limiter(&json(1, 4, "5tuple"));
    let f = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 9, &[]);
    assert_eq!(send_spaced(&mut nf, &f, Nanos(0), Nanos(0), 3), 3);
    // Same key, burst 2: the flow keeps its 1 token, clipped to 2: 1.
    nf.reconfigure_at(&json(1, 2, "5tuple"), Nanos(0))
        .expect("same key");
    assert_eq!(nf.flows(), 1);
    assert_eq!(send_spaced(&mut nf, &f, Nanos(0), Nanos(0), 3), 1);
    // A new max_flows rebuilds the table but keeps the flow (still empty).
    let bigger = r#"{"rate": {"pps": 1000000},
        "per_flow": {"rate": {"pps": 1}, "burst": 2, "max_flows": 10}}"#;
    nf.reconfigure_at(bigger, Nanos(0)).expect("max_flows");
    assert_eq!(nf.flows(), 1);
    assert_eq!(send_spaced(&mut nf, &f, Nanos(0), Nanos(0), 3), 0);
    // Another key: the flows go, new ones start full.
    nf.reconfigure_at(&json(1, 2, "src_prefix"), Nanos(0))
        .expect("other key");
    assert_eq!(nf.flows(), 0);
    assert_eq!(send_spaced(&mut nf, &f, Nanos(0), Nanos(0), 3), 2);
    // per_flow off, then on again: an empty table.
    nf.reconfigure_at(r#"{"rate": {"pps": 1000000}}"#, Nanos(0))
        .expect("off");
    assert_eq!(nf.flows(), 0);
    assert_eq!(send_spaced(&mut nf, &f, Nanos(0), Nanos(0), 3), 3);
    nf.reconfigure_at(&json(1, 2, "src_prefix"), Nanos(0))
        .expect("on");
    assert_eq!(send_spaced(&mut nf, &f, Nanos(0), Nanos(0), 3), 2);
    // The aggregate changing unit starts full in the new unit.
    nf.reconfigure_at(r#"{"rate": {"bps": 8000}, "burst": 2048}"#, Nanos(0))
        .expect("bps");
    assert_eq!(
        send_spaced(&mut nf, &udp4_len(1024), Nanos(0), Nanos(0), 3),
        2
    );
    // And the real-clock entry point works too.
    nf.reconfigure("").expect("defaults");
    assert_eq!(nf.config().rate, DEFAULT_RATE);
}

/// Runs `frames` through the [`NetworkFunction`] impl, on the real clock.
fn run_now(nf: &mut Ratelimit, frames: &[Vec<u8>]) -> Vec<Verdict> {
    run(nf, frames)
        .into_iter()
        .map(|(verdict, _)| verdict)
        .collect()
}

#[test]
fn network_function_reconfigure_applies_the_new_rate() {
    let mut nf = limiter(r#"{"rate": {"pps": 1000000}, "burst": 1000}"#);
    let frames = vec![udp4_len(60); 10];
    assert_eq!(passes(&run_now(&mut nf, &frames)), 10);

    NetworkFunction::reconfigure(&mut nf, r#"{"rate": {"pps": 1}, "burst": 2}"#)
        .expect("valid config");
    assert_eq!(nf.config().rate, Rate::Pps(1));
    // The full bucket carried over, clipped to the new burst of 2; at 1 pps
    // it refills a token only if this test stalls for a second.
    let passed = passes(&run_now(&mut nf, &frames));
    assert!((2..=3).contains(&passed), "{passed}");
    assert_eq!(
        nf.counters().passed_packets,
        10 + passed as u64,
        "counters survive the change"
    );
}

#[test]
fn network_function_reconfigure_with_a_bad_config_changes_nothing() {
    let mut nf = limiter(r#"{"rate": {"pps": 1}, "burst": 2}"#);
    let frames = vec![udp4_len(60); 3];
    assert_eq!(passes(&run_now(&mut nf, &frames)), 2);
    let (config, counters) = (nf.config(), nf.counters());
    for json in [
        r#"{"rate": {"pps": 0}}"#,
        r#"{"rate": {"pps": 5}, "x": 1}"#,
        "{",
    ] {
        let err = NetworkFunction::reconfigure(&mut nf, json).expect_err(json);
        assert!(err.starts_with("invalid ratelimit config: "), "{err}");
    }
    assert_eq!((nf.config(), nf.counters()), (config, counters));
    // Still the old, empty bucket.
    assert!(passes(&run_now(&mut nf, &frames)) <= 1);
}

#[test]
fn malformed_frames_are_dropped_and_counted() {
    let good = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, &[0; 16]);
    let good_udp = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, &[0; 16]);
    let mut bad: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("runt", vec![0xff; 13]),
        ("ethernet only, IPv4 type", good[..14].to_vec()),
        ("truncated IPv4 header", good[..14 + 19].to_vec()),
        ("truncated TCP header", good[..14 + 20 + 19].to_vec()),
        ("truncated UDP header", good_udp[..14 + 20 + 7].to_vec()),
        (
            "truncated IPv6 header",
            udp6([1; 16], DST6, 1, 53, &[0; 20])[..14 + 39].to_vec(),
        ),
        ("three VLAN tags", triple_tagged_udp4()),
        (
            "truncated VLAN tag",
            tagged(&udp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, &[0; 10]), &[5])[..16].to_vec(),
        ),
    ];
    let mut edit = |what: &'static str, at: usize, bytes: &[u8], base: &[u8]| {
        let mut f = base.to_vec();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        bad.push((what, f));
    };
    edit("IHL 2 (< 5)", 14, &[0x42], &good);
    edit("IHL 15, past the packet", 14, &[0x4f], &good);
    edit("IP version 6 in an IPv4 frame", 14, &[0x65], &good);
    edit(
        "total length past the frame",
        16,
        &1500u16.to_be_bytes(),
        &good,
    );
    edit(
        "total length below the header",
        16,
        &10u16.to_be_bytes(),
        &good,
    );
    edit("TCP data offset 15", 14 + 20 + 12, &[0xf0], &good);
    edit("TCP data offset 1", 14 + 20 + 12, &[0x10], &good);
    edit(
        "UDP length past the datagram",
        14 + 24,
        &900u16.to_be_bytes(),
        &good_udp,
    );
    edit(
        "UDP length below its header",
        14 + 24,
        &4u16.to_be_bytes(),
        &good_udp,
    );
    edit(
        "IPv6 payload length past the frame",
        14 + 4,
        &1000u16.to_be_bytes(),
        &udp6([1; 16], DST6, 1, 53, &[0; 20]),
    );

    let mut nf = limiter(r#"{"rate": {"pps": 1000000}, "per_flow": {"rate": {"pps": 1000}}}"#);
    for (what, frame) in &bad {
        assert_eq!(nf.police(frame, Nanos(0)), Verdict::Drop, "{what}");
    }
    let n = bad.len() as u64;
    let c = nf.counters();
    assert_eq!(c.dropped.malformed, n);
    assert_eq!(accounted(&nf), n);
    assert_eq!(nf.flows(), 0);

    // Two tags are fine, and so is Ethernet padding after the IP packet.
    let mut padded = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, &[]);
    padded.resize(60, 0);
    for frame in [
        tagged(&udp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, &[0; 10]), &[5, 6]),
        tagged(&udp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, &[0; 10]), &[9]),
        padded,
    ] {
        assert_eq!(nf.police(&frame, Nanos(0)), Verdict::Forward);
    }

    // With malformed: forward, they pass, but only as the aggregate allows.
    let mut nf = limiter(r#"{"rate": {"pps": 1}, "burst": 3, "malformed": "forward"}"#);
    let frames: Vec<Vec<u8>> = bad.iter().map(|(_, f)| f.clone()).collect();
    assert_eq!(passes(&run_at(&mut nf, &frames, Nanos(0))), 3);
    let c = nf.counters();
    assert_eq!((c.dropped.malformed, c.dropped.aggregate), (0, n - 3));
}

#[test]
fn non_ip_policies() {
    let frames = vec![
        arp_request([10, 0, 0, 1], [10, 0, 0, 2]),
        lldp(),
        arp_request([10, 0, 0, 1], [10, 0, 0, 2]),
        lldp(),
    ];
    let ip = udp4_len(60);
    let base = r#""rate": {"pps": 1}, "burst": 2"#;

    let mut police = limiter(&format!("{{{base}}}"));
    assert_eq!(passes(&run_at(&mut police, &frames, Nanos(0))), 2);
    assert_eq!(police.police(&ip, Nanos(0)), Verdict::Drop);
    assert_eq!(police.counters().dropped.aggregate, 3);

    let mut forward = limiter(&format!(r#"{{{base}, "non_ip": "forward"}}"#));
    assert_eq!(passes(&run_at(&mut forward, &frames, Nanos(0))), 4);
    // They took no tokens.
    assert_eq!(send_spaced(&mut forward, &ip, Nanos(0), Nanos(0), 3), 2);

    let mut drop = limiter(&format!(r#"{{{base}, "non_ip": "drop"}}"#));
    assert_eq!(passes(&run_at(&mut drop, &frames, Nanos(0))), 0);
    assert_eq!(drop.counters().dropped.non_ip, 4);
    assert_eq!(send_spaced(&mut drop, &ip, Nanos(0), Nanos(0), 3), 2);
}

#[test]
fn network_function_uses_the_clock() {
    let mut nf = Ratelimit::default_for_tests();
    let frames = vec![udp4_len(60); 50];
    let out = run(&mut nf, &frames);
    // Default: 10 000 pps, burst 100; 50 packets fit.
    assert!(out.iter().all(|(verdict, _)| *verdict == Verdict::Forward));
    assert_eq!(nf.counters().passed_packets, 50);
}

impl Ratelimit {
    fn default_for_tests() -> Self {
        Self::from_config("").expect("defaults")
    }
}

#[test]
fn report_is_the_documented_json() {
    let mut nf = limiter(
        r#"{"rate": {"pps": 1}, "burst": 2,
        "per_flow": {"key": "src_prefix", "rate": {"bps": 100000}}, "non_ip": "drop"}"#,
    );
    let frames = vec![
        udp4_len(100),
        udp4_len(100),
        udp4_len(100),
        arp_request([10, 0, 0, 1], [10, 0, 0, 2]),
        vec![0; 5],
    ];
    run_at(&mut nf, &frames, Nanos(0));
    let report: Value = serde_json::from_str(&nf.report().expect("report")).expect("json");
    assert_eq!(
        report,
        json!({
            "config": {
                "rate": {"pps": 1}, "burst": 2,
                "per_flow": {
                    "key": "src_prefix", "prefix_len": 24, "prefix_len_v6": 64,
                    "rate": {"bps": 100000}, "burst": 2048,
                    "max_flows": 65536, "idle_timeout_s": 60
                },
                "non_ip": "drop", "malformed": "drop"
            },
            "flows": 1,
            "passed_packets": 2,
            "passed_bytes": 200,
            "dropped": {"aggregate": 1, "per_flow": 0, "malformed": 1, "non_ip": 1},
            "flow_table_full": 0,
            "flows_expired": 0
        })
    );
    // The reported config reads back as the same config.
    let again = Ratelimit::from_config(&report["config"].to_string()).expect("round trip");
    assert_eq!(again.config(), nf.config());
}

#[test]
fn config_defaults() {
    for json in ["", " \n\t", "{}"] {
        let nf = Ratelimit::from_config(json).expect(json);
        let c = nf.config();
        assert_eq!(c.rate, Rate::Pps(10_000), "{json:?}");
        assert_eq!(c.burst, Some(100));
        assert_eq!(c.per_flow, None);
        assert_eq!(c.non_ip, NonIpPolicy::Police);
        assert_eq!(c.malformed, MalformedPolicy::Drop);
    }
    let nf = limiter(r#"{"rate": {"pps": 50}, "per_flow": {"rate": {"bps": 80000}}}"#);
    let c = nf.config();
    assert_eq!(c.burst, Some(1), "10 ms of 50 pps rounds up to one packet");
    let pf = c.per_flow.expect("per flow");
    assert_eq!(pf.key, FlowKeyKind::FiveTuple);
    assert_eq!((pf.prefix_len, pf.prefix_len_v6), (None, None));
    assert_eq!(pf.burst, Some(MIN_BURST_BYTES), "one frame at least");
    assert_eq!((pf.max_flows, pf.idle_timeout_s), (65_536, 60));
    assert_eq!(Rate::Bps(1_000_000_000).default_burst(), 1_250_000);
    assert_eq!(Rate::Bps(MAX_BPS).default_burst(), 1_250_000_000);
    // The edges are accepted.
    for json in [
        r#"{"rate": {"pps": 1000000000}, "burst": 1000000000}"#,
        r#"{"rate": {"bps": 1000000000000}, "burst": 2000000000}"#,
        r#"{"rate": {"bps": 1}, "burst": 2048}"#,
        r#"{"per_flow": {"key": "src_prefix", "prefix_len": 0, "prefix_len_v6": 128,
            "rate": {"pps": 1}, "max_flows": 1, "idle_timeout_s": 86400}}"#,
        r#"{"per_flow": {"rate": {"pps": 1}, "max_flows": 1000000, "idle_timeout_s": 1}}"#,
    ] {
        Ratelimit::from_config(json).expect(json);
    }
}

#[test]
fn bad_configs_are_rejected_readably() {
    let cases = [
        (
            r#"{"rate": {"pps": 0}}"#,
            "rate.pps must be in 1..=1000000000, got 0",
        ),
        (
            r#"{"rate": {"bps": 1000000000001}}"#,
            "rate.bps must be in 1..=1000000000000, got 1000000000001",
        ),
        (
            r#"{"burst": 0}"#,
            "burst must be in 1..=1000000000 packets, got 0",
        ),
        (
            r#"{"rate": {"bps": 1000000}, "burst": 1500}"#,
            "burst must be in 2048..=2000000000 bytes, got 1500",
        ),
        (
            r#"{"per_flow": {"rate": {"pps": 0}}}"#,
            "per_flow.rate.pps must be in 1..=1000000000, got 0",
        ),
        (
            r#"{"per_flow": {"rate": {"bps": 0}}}"#,
            "per_flow.rate.bps must be in 1..=1000000000000, got 0",
        ),
        (
            r#"{"per_flow": {"rate": {"pps": 5}, "burst": 0}}"#,
            "per_flow.burst must be in 1..=1000000000 packets, got 0",
        ),
        (
            r#"{"per_flow": {"key": "src_prefix", "prefix_len": 33, "rate": {"pps": 5}}}"#,
            "per_flow.prefix_len must be in 0..=32, got 33",
        ),
        (
            r#"{"per_flow": {"key": "src_prefix", "prefix_len_v6": 129, "rate": {"pps": 5}}}"#,
            "per_flow.prefix_len_v6 must be in 0..=128, got 129",
        ),
        (
            r#"{"per_flow": {"prefix_len": 24, "rate": {"pps": 5}}}"#,
            "per_flow.prefix_len applies only to per_flow.key \"src_prefix\"",
        ),
        (
            r#"{"per_flow": {"rate": {"pps": 5}, "max_flows": 0}}"#,
            "per_flow.max_flows must be in 1..=1000000, got 0",
        ),
        (
            r#"{"per_flow": {"rate": {"pps": 5}, "max_flows": 1000001}}"#,
            "per_flow.max_flows must be in 1..=1000000, got 1000001",
        ),
        (
            r#"{"per_flow": {"rate": {"pps": 5}, "idle_timeout_s": 0}}"#,
            "per_flow.idle_timeout_s must be in 1..=86400, got 0",
        ),
        (r#"{"per_flow": {}}"#, "missing field `rate`"),
        (
            r#"{"per_flow": {"key": "dst", "rate": {"pps": 5}}}"#,
            "unknown per_flow.key \"dst\", expected \"5tuple\" or \"src_prefix\"",
        ),
        (
            r#"{"per_flow": {"rate": {"pps": 5}, "prefix_len": 300}}"#,
            "expected u8",
        ),
        (
            r#"{"rate": {"pps": 5, "bps": 5}}"#,
            "either pps or bps, not both",
        ),
        (r#"{"rate": {}}"#, "a rate needs pps or bps"),
        (
            r#"{"rate": {"kbps": 5}}"#,
            "unknown field `kbps`, expected `pps` or `bps`",
        ),
        (r#"{"rate": 10000}"#, "expected a rate, {\"pps\""),
        (r#"{"rate": {"pps": -1}}"#, "invalid value: integer `-1`"),
        (r#"{"rate": {"pps": 1.5}}"#, "invalid type: floating point"),
        (
            r#"{"non_ip": "pass"}"#,
            "unknown non_ip \"pass\", expected \"police\", \"forward\" or \"drop\"",
        ),
        (r#"{"non_ip": 1}"#, "expected a string"),
        (
            r#"{"malformed": "police"}"#,
            "unknown malformed \"police\", expected \"drop\" or \"forward\"",
        ),
        (r#"{"rates": {"pps": 5}}"#, "unknown field `rates`"),
        (
            r#"{"per_flow": {"rate": {"pps": 5}, "ttl": 5}}"#,
            "unknown field `ttl`",
        ),
        ("{", "EOF"),
        ("null", "expected a JSON object"),
        ("[]", "expected a JSON object"),
        (r#"{} {}"#, "trailing characters"),
    ];
    for (json, needle) in cases {
        let err = Ratelimit::from_config(json).expect_err(json).to_string();
        assert!(err.starts_with("invalid ratelimit config: "), "{err}");
        assert!(err.contains(needle), "{json}: {err}");
        let mut nf = Ratelimit::default_for_tests();
        let err = nf.reconfigure(json).expect_err(json).to_string();
        assert!(err.contains(needle), "{json}: {err}");
        assert_eq!(nf.config(), Ratelimit::default_for_tests().config());
    }
}

/// A frame from the shapes the policer parses, random in its addresses,
/// ports and size.
fn valid_frames() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>(), 0..300usize).prop_map(|(s, p, n)| udp4(
            s,
            [10, 0, 0, 2],
            p,
            80,
            &vec![0; n]
        )),
        (any::<[u8; 4]>(), any::<u16>(), 0..300usize).prop_map(|(s, p, n)| tcp4(
            s,
            [1, 2, 3, 4],
            p,
            443,
            &vec![0; n]
        )),
        (1..4095u16, any::<[u8; 4]>())
            .prop_map(|(v, s)| tagged(&udp4(s, [10, 0, 0, 2], 1, 2, &[0; 10]), &[v])),
        (1..4095u16, 1..4095u16).prop_map(|(o, i)| tagged(
            &udp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, &[0; 10]),
            &[o, i]
        )),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(s, p)| udp6(s, DST6, p, 53, &[0; 20])),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(s, p)| udp6_hop_by_hop(s, p)),
        any::<[u8; 4]>().prop_map(|s| echo4(s, [10, 0, 0, 2], 1, true)),
        any::<[u8; 16]>().prop_map(|s| echo6(s, [2; 16], 1, true)),
        (any::<[u8; 4]>(), any::<bool>(), 0..300u16)
            .prop_map(|(s, more, off)| fragment4(s, 7, more, off)),
        Just(arp_request([10, 0, 0, 1], [10, 0, 0, 2])),
        Just(lldp()),
    ]
}

/// A valid frame with some bytes overwritten and its length cut.
fn mangled_frames() -> impl Strategy<Value = Vec<u8>> {
    (
        valid_frames(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(mut frame, edits, cut, cut_it)| {
            for (at, byte) in edits {
                let i = at.index(frame.len());
                frame[i] = byte;
            }
            if cut_it {
                frame.truncate(cut.index(frame.len() + 1));
            }
            frame
        })
}

/// Whether the frame's link layer reaches a MACsec header, which the
/// policer treats as not IP while etherparse looks inside.
fn involves_macsec(frame: &[u8]) -> bool {
    let mut at = 12;
    while let Some(t) = frame.get(at..at + 2) {
        match u16::from_be_bytes([t[0], t[1]]) {
            0x88e5 => return true,
            0x8100 | 0x88a8 | 0x9100 => at += 4,
            _ => return false,
        }
    }
    false
}

/// The classification `SlicedPacket::from_ethernet` implies, with the
/// policer's one extra rule (more than two VLAN tags is malformed).
fn oracle(frame: &[u8]) -> parse::Class {
    use parse::{Class, IpFields};
    let packet = match SlicedPacket::from_ethernet(frame) {
        Ok(packet) => packet,
        Err(SliceError::Macsec(_)) => unreachable!("MACsec frames are skipped"),
        Err(_) => return Class::Malformed,
    };
    let tags = packet
        .link_exts
        .iter()
        .filter(|e| matches!(e, LinkExtSlice::Vlan(_)))
        .count();
    if tags > 2 {
        return Class::Malformed;
    }
    let (src, dst, v6, payload) = match &packet.net {
        Some(NetSlice::Ipv4(ip)) => (
            u128::from(u32::from_be_bytes(ip.header().source())),
            u128::from(u32::from_be_bytes(ip.header().destination())),
            false,
            ip.payload(),
        ),
        Some(NetSlice::Ipv6(ip)) => (
            u128::from_be_bytes(ip.header().source()),
            u128::from_be_bytes(ip.header().destination()),
            true,
            ip.payload(),
        ),
        _ => return Class::NonIp,
    };
    let (sport, dport) = match &packet.transport {
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        _ => (0, 0),
    };
    Class::Ip(IpFields {
        src,
        dst,
        v6,
        proto: payload.ip_number.0,
        sport,
        dport,
    })
}

fn configs() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#"{"rate": {"pps": 1000}, "burst": 5}"#.to_string()),
        Just(
            r#"{"rate": {"bps": 100000}, "non_ip": "forward", "malformed": "forward",
                "per_flow": {"rate": {"pps": 2}, "max_flows": 4}}"#
                .to_string()
        ),
        Just(
            r#"{"rate": {"pps": 100}, "non_ip": "drop",
                "per_flow": {"key": "src_prefix", "prefix_len": 8, "prefix_len_v6": 3,
                             "rate": {"bps": 20000}, "max_flows": 2, "idle_timeout_s": 1}}"#
                .to_string()
        ),
    ]
}

/// Checks the token-bucket bound over every window of arrivals: the frames
/// passed from arrival `i` to arrival `j` cost at most
/// `rate × (t_j − t_i) + burst`, in nano-units.
fn check_bound(
    arrivals: &[(u64, u64, bool)],
    cost: impl Fn(u64) -> u128,
    rate: u128,
    burst_nano: u128,
) -> Result<(), TestCaseError> {
    // prefix[k] = cost passed in arrivals[..k]
    let mut prefix = vec![0u128];
    for &(_, len, passed) in arrivals {
        let last = *prefix.last().expect("nonempty");
        prefix.push(last + if passed { cost(len) } else { 0 });
    }
    for i in 0..arrivals.len() {
        for j in i..arrivals.len() {
            let taken = prefix[j + 1] - prefix[i];
            let elapsed = u128::from(arrivals[j].0 - arrivals[i].0);
            prop_assert!(
                taken <= rate * elapsed + burst_nano,
                "window {}..={}: {} > {} × {} + {}",
                i,
                j,
                taken,
                rate,
                elapsed,
                burst_nano
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn classification_agrees_with_etherparse(
        frame in prop_oneof![
            4 => mangled_frames(),
            1 => valid_frames(),
            1 => proptest::collection::vec(any::<u8>(), 0..200),
        ]
    ) {
        prop_assume!(!involves_macsec(&frame));
        prop_assert_eq!(parse::classify(&frame), oracle(&frame));
    }
}

proptest! {

    #[test]
    fn arbitrary_bytes_never_panic_and_are_accounted(
        config in configs(),
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1600), 1..80),
        step in 0..2_000_000u64,
    ) {
        let mut nf = Ratelimit::from_config(&config).expect("config");
        let mut now = 0;
        for chunk in frames.chunks(7) {
            let verdicts = run_at(&mut nf, chunk, Nanos(now));
            prop_assert!(verdicts.iter().all(|v| *v != Verdict::Reflect));
            now += step;
        }
        prop_assert_eq!(accounted(&nf), frames.len() as u64);
        prop_assert!(nf.report().is_some());
    }

    #[test]
    fn mangled_frames_never_panic_and_are_accounted(
        config in configs(),
        frames in proptest::collection::vec(mangled_frames(), 1..80),
        step in 0..2_000_000u64,
    ) {
        let mut nf = Ratelimit::from_config(&config).expect("config");
        let mut now = 0;
        for chunk in frames.chunks(5) {
            run_at(&mut nf, chunk, Nanos(now));
            now += step;
        }
        prop_assert_eq!(accounted(&nf), frames.len() as u64);
        let pf_max = nf.config().per_flow.map_or(0, |p| p.max_flows);
        prop_assert!(nf.flows() <= pf_max);
        if let Some(pf) = &nf.per_flow {
            pf.table.check();
        }
    }

    #[test]
    fn passed_bytes_never_exceed_rate_times_elapsed_plus_burst(
        bps in 100_000..1_000_000_000u64,
        burst in MIN_BURST_BYTES..100_000,
        arrivals in proptest::collection::vec((0..2_000_000u64, 60..=1514usize), 1..250),
        per_flow in any::<bool>(),
    ) {
        let per_flow = if per_flow {
            r#", "per_flow": {"rate": {"pps": 1000}, "burst": 3}"#
        } else {
            ""
        };
        let mut nf = limiter(&format!(r#"{{"rate": {{"bps": {bps}}}, "burst": {burst}{per_flow}}}"#));
        let mut t = 0;
        let mut seen = Vec::new();
        for (gap, len) in arrivals {
            t += gap;
            let frame = udp4_len(len);
            let passed = nf.police(&frame, Nanos(t)) == Verdict::Forward;
            seen.push((t, len as u64, passed));
        }
        let passed_bytes: u64 = seen.iter().filter(|a| a.2).map(|a| a.1).sum();
        prop_assert_eq!(nf.counters().passed_bytes, passed_bytes);
        check_bound(
            &seen,
            |len| u128::from(len) * 8 * u128::from(NANO),
            u128::from(bps),
            u128::from(burst) * 8 * u128::from(NANO),
        )?;
    }

    #[test]
    fn passed_packets_never_exceed_rate_times_elapsed_plus_burst(
        pps in 1..1_000_000u64,
        burst in 1..50u64,
        gaps in proptest::collection::vec(0..3_000_000u64, 1..250),
    ) {
        let mut nf = limiter(&format!(r#"{{"rate": {{"pps": {pps}}}, "burst": {burst}}}"#));
        let frame = udp4_len(60);
        let mut t = 0;
        let mut seen = Vec::new();
        for gap in gaps {
            t += gap;
            seen.push((t, 60, nf.police(&frame, Nanos(t)) == Verdict::Forward));
        }
        check_bound(
            &seen,
            |_| u128::from(NANO),
            u128::from(pps),
            u128::from(burst) * u128::from(NANO),
        )?;
    }
}

/// Micro-benchmark: ns per packet through `process_at`, 64-packet batches of
/// 64-byte-payload UDP frames from 4096 flows, at a rate that passes them.
/// Run with `cargo test -p nf-ratelimit --release -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn bench_ns_per_packet() {
    const FLOWS: u32 = 4096;
    const BATCHES: u64 = 200_000;
    let frames: Vec<Vec<u8>> = (0..FLOWS)
        .map(|i| {
            let [_, a, b, c] = i.to_be_bytes();
            udp4(
                [10, a, b, c],
                [192, 0, 2, 1],
                1000 + (i % 7) as u16,
                53,
                &[0; 64],
            )
        })
        .collect();
    let mut umem = vec![[0u8; FRAME]; FLOWS as usize];
    for (slot, f) in umem.iter_mut().zip(&frames) {
        slot[..f.len()].copy_from_slice(f);
    }
    let len = frames[0].len();
    let configs = [
        ("aggregate only", r#"{"rate": {"pps": 1000000000}}"#),
        (
            "per-flow 5tuple",
            r#"{"rate": {"pps": 1000000000}, "per_flow": {"rate": {"pps": 1000000}}}"#,
        ),
        (
            "per-flow src_prefix /32",
            r#"{"rate": {"pps": 1000000000}, "per_flow": {"key": "src_prefix",
                "prefix_len": 32, "rate": {"pps": 1000000}}}"#,
        ),
        (
            "aggregate only, bps, all dropped",
            r#"{"rate": {"bps": 1}, "burst": 2048}"#,
        ),
    ];
    // Baseline: classifying the frame alone, over the same frames.
    let cpu_start = thread_cpu_ns();
    let start = std::time::Instant::now();
    let mut ip = 0u64;
    for batch_no in 0..BATCHES {
        let first = (batch_no as usize * MAX_BATCH) % FLOWS as usize;
        for slot in &umem[first..first + MAX_BATCH] {
            let class = parse::classify(std::hint::black_box(&slot[..len]));
            ip += u64::from(matches!(class, parse::Class::Ip(_)));
        }
    }
    let cpu = thread_cpu_ns()
        .zip(cpu_start)
        .map(|(end, start)| end - start);
    let packets = BATCHES * MAX_BATCH as u64;
    println!(
        "{:>34}: {:6.1} ns/packet wall, {:6.1} on CPU ({ip} IP)",
        "classify only",
        start.elapsed().as_nanos() as f64 / packets as f64,
        cpu.map_or(f64::NAN, |ns| ns as f64 / packets as f64),
    );
    for (name, config) in configs {
        let mut nf = Ratelimit::from_config(config).expect(config);
        let start = std::time::Instant::now();
        let cpu_start = thread_cpu_ns();
        let mut now = 0;
        let mut passed = 0;
        for batch_no in 0..BATCHES {
            let first = (batch_no as usize * MAX_BATCH) % FLOWS as usize;
            let packets: arrayvec::ArrayVec<Packet<'_>, MAX_BATCH> = umem[first..first + MAX_BATCH]
                .iter_mut()
                .map(|slot| Packet::new(slot, len, 0))
                .collect();
            let mut batch = Batch::from_packets(packets);
            nf.process_at(&mut batch, Nanos(now));
            passed += batch
                .iter()
                .filter(|p| p.verdict() == Verdict::Forward)
                .count();
            now += 10_000;
        }
        let elapsed = start.elapsed();
        let cpu = thread_cpu_ns()
            .zip(cpu_start)
            .map(|(end, start)| end - start);
        let packets = BATCHES * MAX_BATCH as u64;
        println!(
            "{name:>34}: {:6.1} ns/packet wall, {:6.1} on CPU ({} packets, {} passed, {} flows)",
            elapsed.as_nanos() as f64 / packets as f64,
            cpu.map_or(f64::NAN, |ns| ns as f64 / packets as f64),
            packets,
            passed,
            nf.flows()
        );
    }
}

/// Time this thread has spent on a CPU, from the scheduler's statistics
/// (`/proc/thread-self/schedstat`, first field, in ns): on a shared machine
/// wall time also counts the time other processes had the core.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
