use std::net::IpAddr;

use nf_sdk::Verdict;
use nf_testkit::{arp_request, echo6, lldp, run, tagged, tcp4, udp4, udp6};
use proptest::prelude::*;
use serde_json::Value;

use super::*;

/// Runs `frames` and checks the monitor's passive contract: every frame
/// forwarded, byte-identical.
fn run_passive(nf: &mut Monitor, frames: &[Vec<u8>]) {
    for ((verdict, after), before) in run(nf, frames).iter().zip(frames) {
        assert_eq!(*verdict, Verdict::Forward);
        assert_eq!(after, before);
    }
}

fn key(
    src: impl Into<IpAddr>,
    dst: impl Into<IpAddr>,
    proto: IpProto,
    sport: u16,
    dport: u16,
) -> FlowKey {
    FlowKey {
        src: src.into(),
        dst: dst.into(),
        proto,
        sport,
        dport,
    }
}

fn all_flows(nf: &Monitor) -> Vec<FlowStats> {
    nf.top_flows(usize::MAX)
}

fn flow(nf: &Monitor, key: FlowKey) -> Option<(u64, u64)> {
    all_flows(nf)
        .into_iter()
        .find(|f| f.key() == key)
        .map(|f| (f.packets, f.bytes))
}

/// Packets accounted somewhere: each frame lands in exactly one bucket.
fn accounted(nf: &Monitor) -> u64 {
    let t = nf.totals();
    let in_flows: u64 = all_flows(nf).iter().map(|f| f.packets).sum();
    t.non_ip + t.malformed + t.untracked_packets + in_flows
}

#[test]
fn counts_udp_tcp_ipv6_and_vlan_flows() {
    let (a4, b4, c4) = ([10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3]);
    let (a6, b6) = (
        [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
    );
    let frames = vec![
        udp4(a4, b4, 1000, 53, &[0; 20]),
        tcp4(a4, b4, 40000, 80, &[0; 100]),
        udp4(a4, b4, 1000, 53, &[0; 30]),
        udp6(a6, b6, 5000, 443, &[0; 50]),
        tagged(&tcp4(c4, b4, 40001, 22, &[0; 10]), &[42]),
        // Same 5-tuple as the first TCP flow, but tagged: still that flow.
        tagged(&tcp4(a4, b4, 40000, 80, &[0; 10]), &[7]),
        // Reverse direction is its own flow.
        udp4(b4, a4, 53, 1000, &[0; 40]),
        echo6(a6, b6, 1, true),
    ];
    let lens: Vec<u64> = frames.iter().map(|f| f.len() as u64).collect();
    let mut nf = Monitor::default();
    run_passive(&mut nf, &frames);

    let t = nf.totals();
    assert_eq!(t.packets, 8);
    assert_eq!(t.bytes, lens.iter().sum::<u64>());
    assert_eq!((t.non_ip, t.malformed, t.untracked_packets), (0, 0, 0));
    assert_eq!(t.flows, 6);

    let tcp = IpProto::TCP;
    let udp = IpProto::UDP;
    let (a4, b4, c4) = (
        std::net::Ipv4Addr::from(a4),
        std::net::Ipv4Addr::from(b4),
        std::net::Ipv4Addr::from(c4),
    );
    let (a6, b6) = (std::net::Ipv6Addr::from(a6), std::net::Ipv6Addr::from(b6));
    assert_eq!(
        flow(&nf, key(a4, b4, udp, 1000, 53)),
        Some((2, lens[0] + lens[2]))
    );
    assert_eq!(
        flow(&nf, key(a4, b4, tcp, 40000, 80)),
        Some((2, lens[1] + lens[5]))
    );
    assert_eq!(flow(&nf, key(a6, b6, udp, 5000, 443)), Some((1, lens[3])));
    assert_eq!(flow(&nf, key(c4, b4, tcp, 40001, 22)), Some((1, lens[4])));
    assert_eq!(flow(&nf, key(b4, a4, udp, 53, 1000)), Some((1, lens[6])));
    assert_eq!(
        flow(&nf, key(a6, b6, IpProto::ICMPV6, 0, 0)),
        Some((1, lens[7]))
    );
    assert_eq!(accounted(&nf), t.packets);
}

#[test]
fn top_flows_by_bytes_then_packets() {
    let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let frames = vec![
        udp4(a, b, 1, 1, &[0; 100]),
        udp4(a, b, 2, 2, &[0; 500]),
        udp4(a, b, 3, 3, &[0; 300]),
        // Flow 4: two packets with the same total bytes as flow 3's one.
        udp4(a, b, 4, 4, &[0; 129]),
        udp4(a, b, 4, 4, &[0; 129]),
        udp4(a, b, 5, 5, &[0; 10]),
    ];
    // 42 header bytes + 300 == 2 * (42 + 129): the tie on bytes is real.
    assert_eq!(frames[2].len(), frames[3].len() + frames[4].len());
    let mut nf = Monitor::default();
    run_passive(&mut nf, &frames);

    let sports: Vec<u16> = nf.top_flows(10).iter().map(|f| f.sport).collect();
    assert_eq!(sports, [2, 4, 3, 1, 5]);
    let top2 = nf.top_flows(2);
    assert_eq!(top2.len(), 2);
    assert_eq!((top2[0].sport, top2[0].bytes), (2, frames[1].len() as u64));
    assert_eq!((top2[1].sport, top2[1].packets), (4, 2));
    assert!(nf.top_flows(0).is_empty());
}

#[test]
fn counts_non_ip_frames() {
    let frames = vec![
        arp_request([10, 0, 0, 1], [10, 0, 0, 2]),
        lldp(),
        udp4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2, &[0; 3]),
        arp_request([10, 0, 0, 1], [10, 0, 0, 2]),
    ];
    let mut nf = Monitor::default();
    run_passive(&mut nf, &frames);
    let t = nf.totals();
    assert_eq!((t.packets, t.non_ip, t.malformed, t.flows), (4, 3, 0, 1));
    assert_eq!(t.bytes, frames.iter().map(|f| f.len() as u64).sum::<u64>());
}

#[test]
fn flow_table_is_capped_and_never_reallocates() {
    let mut nf = Monitor::from_config(r#"{"max_flows": 3}"#).expect("config");
    let capacity = nf.flows.capacity();
    assert!(capacity >= 3);
    let frames: Vec<Vec<u8>> = (1..=5u16)
        .map(|port| udp4([10, 0, 0, 1], [10, 0, 0, 2], port, 9, &[0; 10]))
        .collect();
    run_passive(&mut nf, &frames);
    // Known flows still count once the table is full; new ones do not enter.
    run_passive(&mut nf, &[frames[0].clone(), frames[4].clone()]);
    let t = nf.totals();
    assert_eq!(t.flows, 3);
    assert_eq!(t.untracked_packets, 3);
    assert_eq!(t.packets, 7);
    let ports: Vec<u16> = all_flows(&nf).iter().map(|f| f.sport).collect();
    assert_eq!(ports, [1, 2, 3]);
    assert_eq!(all_flows(&nf)[0].packets, 2);
    assert_eq!(nf.flows.capacity(), capacity);
    assert_eq!(accounted(&nf), t.packets);
}

#[test]
fn full_default_table_does_not_reallocate() {
    let mut nf = Monitor::default();
    let capacity = nf.flows.capacity();
    assert!(capacity >= DEFAULT_MAX_FLOWS as usize);
    let frame = udp4([10, 0, 0, 1], [10, 0, 0, 2], 0, 0, &[]);
    // 65536 + 100 distinct flows, by rewriting the ports of one frame in place
    // (UDP header at 14 + 20; the monitor does not check UDP checksums).
    let frames: Vec<Vec<u8>> = (0..DEFAULT_MAX_FLOWS as u32 + 100)
        .map(|i| {
            let mut f = frame.clone();
            f[34..38].copy_from_slice(&i.to_be_bytes());
            f
        })
        .collect();
    run(&mut nf, &frames);
    let t = nf.totals();
    assert_eq!(t.flows, DEFAULT_MAX_FLOWS);
    assert_eq!(t.untracked_packets, 100);
    assert_eq!(nf.flows.capacity(), capacity);
}

#[test]
fn survives_every_truncation_of_ip_frames() {
    let whole = [
        tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, &[0; 16]),
        tagged(
            &tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, &[0; 10]),
            &[5],
        ),
        udp6([1; 16], [2; 16], 7, 8, &[0; 4]),
    ];
    let mut nf = Monitor::default();
    let mut prefixes = 0;
    for frame in &whole {
        let cut: Vec<Vec<u8>> = (0..frame.len()).map(|n| frame[..n].to_vec()).collect();
        prefixes += cut.len() as u64;
        run_passive(&mut nf, &cut);
    }
    let t = nf.totals();
    assert_eq!(t.packets, prefixes);
    assert_eq!(
        t.malformed, prefixes,
        "a cut IP frame is malformed, not a flow"
    );
    assert_eq!(t.flows, 0);
}

#[test]
fn inconsistent_headers_are_malformed() {
    let good = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, &[0; 16]);
    let mut frames = Vec::new();
    // IPv4 IHL of 15 words: the header runs past the packet.
    let mut f = good.clone();
    f[14] = 0x4f;
    frames.push(f);
    // IPv4 IHL below the minimum of 5.
    let mut f = good.clone();
    f[14] = 0x42;
    frames.push(f);
    // IPv4 total length past the frame.
    let mut f = good.clone();
    f[16..18].copy_from_slice(&1500u16.to_be_bytes());
    frames.push(f);
    // TCP data offset of 15 words: past the segment.
    let mut f = good.clone();
    f[14 + 20 + 12] = 0xf0;
    frames.push(f);
    // TCP data offset below 5.
    let mut f = good.clone();
    f[14 + 20 + 12] = 0x10;
    frames.push(f);
    let mut nf = Monitor::default();
    run_passive(&mut nf, &frames);
    let t = nf.totals();
    assert_eq!((t.packets, t.malformed, t.flows), (5, 5, 0));
}

#[test]
fn report_is_the_documented_json() {
    let mut nf = Monitor::from_config(r#"{"top": 2}"#).expect("config");
    let frames = vec![
        udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 53, &[0; 200]),
        tcp4([10, 0, 0, 1], [10, 0, 0, 3], 2000, 80, &[0; 100]),
        udp4([10, 0, 0, 4], [10, 0, 0, 2], 3000, 53, &[0; 10]),
        arp_request([10, 0, 0, 1], [10, 0, 0, 2]),
        vec![0; 5],
    ];
    run_passive(&mut nf, &frames);
    let report: Value = serde_json::from_str(&nf.report().expect("report")).expect("json");
    let total: u64 = frames.iter().map(|f| f.len() as u64).sum();
    assert_eq!(report["packets"], 5);
    assert_eq!(report["bytes"], total);
    assert_eq!(report["non_ip"], 1);
    assert_eq!(report["malformed"], 1);
    assert_eq!(report["flows"], 3);
    assert_eq!(report["untracked_packets"], 0);
    let top = report["top"].as_array().expect("top");
    assert_eq!(top.len(), 2);
    assert_eq!(
        top[0],
        serde_json::json!({
            "src": "10.0.0.1", "dst": "10.0.0.2", "proto": "udp",
            "sport": 1000, "dport": 53,
            "packets": 1, "bytes": frames[0].len(),
        })
    );
    assert_eq!(top[1]["proto"], "tcp");
    assert_eq!(top[1]["dst"], "10.0.0.3");
    // Per-protocol counts: two UDP packets, one TCP, busiest (by bytes) first.
    let udp_bytes = (frames[0].len() + frames[2].len()) as u64;
    let tcp_bytes = frames[1].len() as u64;
    let protocols = report["protocols"].as_array().expect("protocols");
    let expected = if udp_bytes >= tcp_bytes {
        serde_json::json!([
            {"proto": "udp", "packets": 2, "bytes": udp_bytes},
            {"proto": "tcp", "packets": 1, "bytes": tcp_bytes},
        ])
    } else {
        serde_json::json!([
            {"proto": "tcp", "packets": 1, "bytes": tcp_bytes},
            {"proto": "udp", "packets": 2, "bytes": udp_bytes},
        ])
    };
    assert_eq!(serde_json::Value::Array(protocols.clone()), expected);
}

#[test]
fn proto_names() {
    assert_eq!(IpProto::ICMPV6.to_string(), "icmpv6");
    assert_eq!(IpProto(47).to_string(), "gre");
    assert_eq!(IpProto(253).to_string(), "253");
    assert_eq!(
        serde_json::to_string(&IpProto(253)).expect("json"),
        r#""253""#
    );
}

#[test]
fn config_defaults_and_limits() {
    for json in ["", " \n\t", "{}"] {
        let nf = Monitor::from_config(json).expect(json);
        assert_eq!((nf.max_flows, nf.top), (65_536, 10), "{json:?}");
    }
    let nf = Monitor::from_config(r#"{"max_flows": 1, "top": 100}"#).expect("low edge");
    assert_eq!((nf.max_flows, nf.top), (1, 100));
    let nf = Monitor::from_config(r#"{"max_flows": 1000000, "top": 1}"#).expect("high edge");
    assert_eq!((nf.max_flows, nf.top), (1_000_000, 1));
    assert!(nf.flows.capacity() >= 1_000_000);
}

#[test]
fn bad_configs_are_rejected_readably() {
    let cases = [
        (
            r#"{"max_flows": 0}"#,
            "max_flows must be in 1..=1000000, got 0",
        ),
        (
            r#"{"max_flows": 1000001}"#,
            "max_flows must be in 1..=1000000, got 1000001",
        ),
        (r#"{"top": 0}"#, "top must be in 1..=100, got 0"),
        (r#"{"top": 101}"#, "top must be in 1..=100, got 101"),
        (
            r#"{"max_flows": -1}"#,
            "invalid value: integer `-1`, expected u64",
        ),
        (r#"{"max_flows": "many"}"#, "invalid type: string \"many\""),
        (r#"{"max_flows": 1.5}"#, "invalid type: floating point"),
        (r#"{"flows": 10}"#, "unknown field `flows`"),
        ("{", "EOF"),
        ("null", "expected a JSON object"),
        ("[1000, 5]", "expected a JSON object"),
        ("65536", "expected a JSON object"),
        (r#"{"top": 5} {"top": 6}"#, "trailing characters"),
    ];
    for (json, needle) in cases {
        let err = Monitor::from_config(json).expect_err(json).to_string();
        assert!(err.starts_with("invalid monitor config: "), "{err}");
        assert!(err.contains(needle), "{json}: {err}");
    }
}

/// Three UDP flows of 1, 2 and 3 packets.
fn three_flows() -> Vec<Vec<u8>> {
    [1u16, 2, 2, 3, 3, 3]
        .iter()
        .map(|&port| udp4([10, 0, 0, 1], [10, 0, 0, 2], port, 9, &[0; 10]))
        .collect()
}

fn report_top(nf: &Monitor) -> Vec<u64> {
    let report: Value = serde_json::from_str(&nf.report().expect("report")).expect("json");
    report["top"]
        .as_array()
        .expect("top")
        .iter()
        .map(|f| f["sport"].as_u64().expect("sport"))
        .collect()
}

#[test]
fn reconfigure_changes_top_and_keeps_flows_and_counts() {
    let mut nf = Monitor::from_config(r#"{"top": 1}"#).expect("config");
    let frames = three_flows();
    run_passive(&mut nf, &frames);
    assert_eq!(report_top(&nf), [3]);

    nf.reconfigure(r#"{"top": 3}"#)
        .expect("top applies in place");
    assert_eq!(report_top(&nf), [3, 2, 1], "the same flows, more of them");
    run_passive(&mut nf, &frames[..1]);
    let t = nf.totals();
    assert_eq!((t.packets, t.flows), (7, 3), "counting goes on");
    assert_eq!(all_flows(&nf)[2].packets, 2);
    assert_eq!(accounted(&nf), t.packets);

    nf.reconfigure("").expect("empty means defaults");
    assert_eq!(nf.config(), MonitorConfig::default());
    assert_eq!(nf.totals().flows, 3);
}

#[test]
fn reconfigure_grows_the_table_without_losing_flows() {
    let mut nf = Monitor::from_config(r#"{"max_flows": 2}"#).expect("config");
    let frames = three_flows();
    run_passive(&mut nf, &frames);
    assert_eq!(nf.totals().untracked_packets, 3);

    nf.reconfigure(r#"{"max_flows": 1000}"#)
        .expect("growth applies");
    let capacity = nf.flows.capacity();
    assert!(capacity >= 1000);
    run_passive(&mut nf, &frames);
    let t = nf.totals();
    assert_eq!((t.flows, t.untracked_packets), (3, 3));
    let packets: Vec<(u16, u64)> = all_flows(&nf)
        .iter()
        .map(|f| (f.sport, f.packets))
        .collect();
    // Flow 3 only counts from the change on: its first three packets stay
    // untracked.
    assert_eq!(packets, [(2, 4), (3, 3), (1, 2)]);
    assert_eq!(accounted(&nf), t.packets);

    // A smaller table that still holds every flow is fine, and then fills
    // up at its new size without reallocating.
    nf.reconfigure(r#"{"max_flows": 4}"#)
        .expect("shrink to fit");
    let capacity = nf.flows.capacity();
    assert!(capacity >= 4);
    let more: Vec<Vec<u8>> = (10..20u16)
        .map(|port| udp4([10, 0, 0, 1], [10, 0, 0, 2], port, 9, &[0; 10]))
        .collect();
    run_passive(&mut nf, &more);
    assert_eq!(nf.totals().flows, 4);
    assert_eq!(nf.flows.capacity(), capacity);
}

#[test]
fn refused_reconfigure_changes_nothing() {
    let mut nf = Monitor::from_config(r#"{"max_flows": 10, "top": 2}"#).expect("config");
    let frames = three_flows();
    run_passive(&mut nf, &frames);
    let (totals, flows, report) = (nf.totals(), all_flows(&nf), nf.report());

    let err = nf
        .reconfigure(r#"{"max_flows": 2, "top": 5}"#)
        .expect_err("fewer slots than flows");
    assert_eq!(
        err,
        "monitor max_flows cannot shrink in place below the 3 flows tracked, got 2"
    );
    for json in [r#"{"top": 0}"#, r#"{"top": 5, "flows": 1}"#, "{", "[5]"] {
        let err = nf.reconfigure(json).expect_err(json);
        assert!(err.starts_with("invalid monitor config: "), "{err}");
    }
    assert_eq!(
        nf.config(),
        MonitorConfig {
            max_flows: 10,
            top: 2
        }
    );
    assert_eq!(
        (nf.totals(), all_flows(&nf), nf.report()),
        (totals, flows, report)
    );
    run_passive(&mut nf, &frames[..1]);
    assert_eq!(nf.totals().packets, 7);
}

fn valid_frames() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u16>(),
            0..300usize
        )
            .prop_map(|(s, d, p, n)| udp4(s, d, p, 80, &vec![0; n])),
        (any::<[u8; 4]>(), any::<u16>(), 0..300usize).prop_map(|(s, p, n)| tcp4(
            s,
            [1, 2, 3, 4],
            p,
            443,
            &vec![0; n]
        )),
        (1..4095u16, any::<u16>())
            .prop_map(|(v, p)| tagged(&tcp4([10, 0, 0, 1], [10, 0, 0, 2], p, 22, &[0; 10]), &[v])),
        (any::<[u8; 16]>(), 0..300usize).prop_map(|(s, n)| udp6(s, [2; 16], 9, 9, &vec![0; n])),
        Just(arp_request([10, 0, 0, 1], [10, 0, 0, 2])),
    ]
}

/// A valid frame with some bytes overwritten and its length cut or padded.
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

proptest! {
    #[test]
    fn arbitrary_bytes_are_forwarded_and_accounted(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1600), 1..80)
    ) {
        let mut nf = Monitor::from_config(r#"{"max_flows": 16}"#).expect("config");
        let out = run(&mut nf, &frames);
        for ((verdict, after), before) in out.iter().zip(&frames) {
            prop_assert_eq!(*verdict, Verdict::Forward);
            prop_assert_eq!(after, before);
        }
        let t = nf.totals();
        prop_assert_eq!(t.packets, frames.len() as u64);
        prop_assert_eq!(t.bytes, frames.iter().map(|f| f.len() as u64).sum::<u64>());
        prop_assert_eq!(accounted(&nf), t.packets);
        prop_assert!(nf.report().is_some());
    }

    #[test]
    fn mangled_frames_are_forwarded_and_accounted(
        frames in proptest::collection::vec(mangled_frames(), 1..80)
    ) {
        let mut nf = Monitor::from_config(r#"{"max_flows": 16}"#).expect("config");
        let capacity = nf.flows.capacity();
        let out = run(&mut nf, &frames);
        for ((verdict, after), before) in out.iter().zip(&frames) {
            prop_assert_eq!(*verdict, Verdict::Forward);
            prop_assert_eq!(after, before);
        }
        let t = nf.totals();
        prop_assert_eq!(t.packets, frames.len() as u64);
        prop_assert!(t.flows <= 16);
        prop_assert_eq!(nf.flows.capacity(), capacity);
        prop_assert_eq!(accounted(&nf), t.packets);
        prop_assert!(nf.report().is_some());
    }
}
