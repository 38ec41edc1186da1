use std::time::{Duration, Instant};

use nf_sdk::{Batch, MAX_BATCH, NetworkFunction, Packet, Verdict};
use nf_testkit::{
    FRAME, TcpStep, arp_request, echo4, echo6, ip4, lldp, run_tagged_with, tagged, tcp4_with,
    tcp6_with, udp4, udp6,
};
use proptest::prelude::*;
use serde_json::Value;

use super::*;

const IN: [u8; 4] = [10, 0, 0, 1];
const OUT: [u8; 4] = [192, 0, 2, 1];
const IN6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const OUT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

use Verdict::{Drop, Forward};

fn fw(json: &str) -> Firewall {
    Firewall::from_config(json).expect(json)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Runs `(frame, stripped TCI)` pairs through `fw` the way the runtime does
/// (see [`nf_testkit::run`]), all as of `now`. Returns the verdicts.
fn run_tagged_at(fw: &mut Firewall, frames: &[(Vec<u8>, u16)], now: Instant) -> Vec<Verdict> {
    let out = run_tagged_with(frames, |batch| fw.process_at(batch, now));
    out.into_iter().map(|(verdict, _)| verdict).collect()
}

fn run_at(fw: &mut Firewall, frames: &[Vec<u8>], now: Instant) -> Vec<Verdict> {
    let tagged: Vec<_> = frames.iter().map(|f| (f.clone(), 0)).collect();
    run_tagged_at(fw, &tagged, now)
}

fn run(fw: &mut Firewall, frames: &[Vec<u8>]) -> Vec<Verdict> {
    run_at(fw, frames, Instant::now())
}

fn one_at(fw: &mut Firewall, frame: &[u8], now: Instant) -> Verdict {
    run_at(fw, &[frame.to_vec()], now)[0]
}

fn one(fw: &mut Firewall, frame: &[u8]) -> Verdict {
    one_at(fw, frame, Instant::now())
}

/// A TCP SYN with 16 bytes of data: what opens a tracked connection.
fn syn4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    tcp4_with(src, dst, sport, dport, &[0; 16], TcpStep::syn)
}

/// A TCP SYN over IPv6 with 8 bytes of data.
fn syn6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
    tcp6_with(src, dst, sport, dport, &[0; 8], TcpStep::syn)
}

/// Every frame counted exactly once.
fn accounted(c: &Counters) -> u64 {
    c.allowed + c.denied + c.non_ip + c.malformed
}

/// Sets the IPv4 fragment offset (8-byte units) and more-fragments flag of
/// an untagged IPv4 frame. The header checksum is left stale: the firewall
/// does not check it, as a router would not before filtering.
fn fragment4(mut frame: Vec<u8>, offset: u16, more: bool) -> Vec<u8> {
    let word = offset | if more { 0x2000 } else { 0 };
    frame[20..22].copy_from_slice(&word.to_be_bytes());
    frame
}

// ---------------------------------------------------------------- config

#[test]
fn config_defaults() {
    for json in ["", " \n\t", "{}"] {
        let mut f = fw(json);
        assert_eq!(f.rule_hits().len(), 0);
        assert_eq!(f.conntrack.slots(), 131_072, "65536 entries, room to spare");
        let verdicts = run(
            &mut f,
            &[syn4(IN, OUT, 1, 80), arp_request(IN, OUT), vec![0; 10]],
        );
        assert_eq!(verdicts, [Drop, Forward, Drop], "{json:?}");
        let c = f.counters();
        assert_eq!(
            (c.denied_by_default, c.non_ip, c.malformed),
            (1, 1, 1),
            "{json:?}"
        );
    }
    let config = FirewallConfig::default();
    assert_eq!(config.default, Action::Deny);
    assert_eq!(config.non_ip, FramePolicy::Forward);
    assert_eq!(config.malformed, FramePolicy::Drop);
    assert_eq!(
        config.conntrack,
        ConntrackConfig {
            max_entries: 65_536,
            tcp_timeout_s: 300,
            udp_timeout_s: 30,
            icmp_timeout_s: 10
        }
    );
}

const FULL: &str = r#"{
    "rules": [
        { "action": "allow", "proto": "tcp", "dst": "10.0.0.0/8", "dport": "80" },
        { "action": "allow", "proto": "udp", "dport": "1000-2000", "vlan": 100 },
        { "action": "deny", "src": "2001:db8::/32", "sport": 53 },
        { "action": "allow", "proto": 47, "src": "192.0.2.7" },
        { "action": "deny", "proto": "icmpv6", "dst": "::/0" }
    ],
    "default": "allow",
    "conntrack": { "max_entries": 1000, "tcp_timeout_s": 60,
                   "udp_timeout_s": 5, "icmp_timeout_s": 2 },
    "non_ip": "drop",
    "malformed": "forward"
}"#;

#[test]
fn full_config_parses_and_round_trips() {
    let config = FirewallConfig::from_json(FULL).expect("config");
    assert_eq!(config.rules.len(), 5);
    let r = &config.rules[1];
    assert_eq!(r.proto, Some(Proto::UDP));
    assert_eq!(r.dport, Some(PortRange::new(1000, 2000).expect("range")));
    assert_eq!(r.vlan.map(VlanId::get), Some(100));
    assert_eq!(config.rules[2].sport, Some(PortRange::single(53)));
    assert_eq!(
        config.rules[3].src.map(|p| p.to_string()).as_deref(),
        Some("192.0.2.7/32")
    );
    assert_eq!(config.rules[3].proto, Some(Proto(47)));
    assert_eq!(config.default, Action::Allow);
    assert_eq!(config.conntrack.max_entries, 1000);
    assert_eq!(config.non_ip, FramePolicy::Drop);
    assert_eq!(config.malformed, FramePolicy::Forward);

    let json = serde_json::to_string(&config).expect("json");
    assert!(json.contains(r#""dport":"1000-2000""#), "{json}");
    assert!(json.contains(r#""proto":47"#), "{json}");
    assert_eq!(FirewallConfig::from_json(&json).expect("again"), config);
    assert!(Firewall::new(config).is_ok());
}

#[test]
fn bad_configs_are_rejected_readably() {
    let rule = |r: &str| format!(r#"{{"rules": [{{"action": "allow"}}, {r}]}}"#);
    let cases = [
        (
            rule(r#"{"action": "allow", "src": "10.0.0.0/33"}"#),
            "rules[1].src: prefix length 33 is longer than an IPv4 address (32 bits)",
        ),
        (
            rule(r#"{"action": "allow", "src": "10.0.0.1/8"}"#),
            "rules[1].src: 10.0.0.1/8 has host bits set: the network is 10.0.0.0/8",
        ),
        (
            rule(r#"{"action": "allow", "dst": "10.0.0/8"}"#),
            "rules[1].dst: `10.0.0/8` is not an IP address or prefix",
        ),
        (
            rule(r#"{"action": "allow", "dst": "2001:db8::/129"}"#),
            "rules[1].dst: prefix length 129 is longer than an IPv6 address",
        ),
        (
            rule(r#"{"action": "allow", "dst": "10.0.0.0/+8"}"#),
            "rules[1].dst: `10.0.0.0/+8` is not an IP address or prefix",
        ),
        (
            rule(r#"{"action": "allow", "src": 10}"#),
            "rules[1].src: invalid type: integer `10`, expected an IP prefix string",
        ),
        (
            rule(r#"{"action": "allow", "proto": "tcp", "dport": "2000-1000"}"#),
            "rules[1].dport: port range 2000-1000 is reversed",
        ),
        (
            rule(r#"{"action": "allow", "proto": "tcp", "sport": "70000"}"#),
            "rules[1].sport: `70000` is not a port",
        ),
        (
            rule(r#"{"action": "allow", "proto": "tcp", "sport": 70000}"#),
            "rules[1].sport: `70000` is not a port",
        ),
        (
            rule(r#"{"action": "allow", "proto": "udp", "dport": "80-"}"#),
            "rules[1].dport: `80-` is not a port",
        ),
        (
            rule(r#"{"action": "allow", "proto": "udp", "dport": -1}"#),
            "rules[1].dport: `-1` is not a port",
        ),
        (
            rule(r#"{"action": "allow", "proto": "tpc"}"#),
            "rules[1].proto: unknown protocol `tpc`: expected tcp, udp, icmp, icmpv6 or a number 0-255",
        ),
        (
            rule(r#"{"action": "allow", "proto": 256}"#),
            "rules[1].proto: unknown protocol `256`",
        ),
        (
            rule(r#"{"action": "allow", "vlan": 4095}"#),
            "rules[1].vlan: VLAN id must be in 1..=4094, got 4095",
        ),
        (
            rule(r#"{"action": "allow", "vlan": 0}"#),
            "rules[1].vlan: VLAN id must be in 1..=4094, got 0",
        ),
        (
            rule(r#"{"action": "permit"}"#),
            "rules[1].action: unknown variant `permit`, expected `allow` or `deny`",
        ),
        (
            rule(r#"{"src": "10.0.0.0/8"}"#),
            "rules[1]: missing field `action`",
        ),
        (
            rule(r#"{"action": "allow", "dprt": "80"}"#),
            "rules[1].dprt: unknown field `dprt`",
        ),
        (
            rule(r#"{"action": "allow", "proto": "icmp", "dport": "80"}"#),
            "rules[1].dport: ports apply only to tcp and udp, but proto is icmp",
        ),
        (
            rule(r#"{"action": "allow", "proto": 47, "sport": "80"}"#),
            "rules[1].sport: ports apply only to tcp and udp, but proto is 47",
        ),
        (
            rule(r#"{"action": "allow", "src": "10.0.0.0/8", "dst": "::/0"}"#),
            "rules[1].dst: src is IPv4 but dst is IPv6, so the rule could never match",
        ),
        (
            rule(r#"{"action": "allow", "proto": "icmp", "src": "2001:db8::/32"}"#),
            "rules[1].proto: icmp does not run over IPv6",
        ),
        (
            r#"{"default": "reject"}"#.to_owned(),
            "default: unknown variant `reject`",
        ),
        (
            r#"{"non_ip": "allow"}"#.to_owned(),
            "non_ip: unknown variant `allow`, expected `forward` or `drop`",
        ),
        (r#"{"rule": []}"#.to_owned(), "unknown field `rule`"),
        (
            r#"{"conntrack": {"max_entries": 0}}"#.to_owned(),
            "conntrack.max_entries must be in 1..=1000000, got 0",
        ),
        (
            r#"{"conntrack": {"udp_timeout_s": 0}}"#.to_owned(),
            "conntrack.udp_timeout_s must be in 1..=604800, got 0",
        ),
        (
            r#"{"conntrack": {"tcp_timeout": 5}}"#.to_owned(),
            "conntrack.tcp_timeout: unknown field `tcp_timeout`",
        ),
        ("{".to_owned(), "EOF"),
        ("null".to_owned(), "expected a JSON object"),
        ("[]".to_owned(), "expected a JSON object"),
        (r#"{} {}"#.to_owned(), "trailing characters"),
    ];
    for (json, needle) in cases {
        let err = Firewall::from_config(&json).expect_err(&json).to_string();
        assert!(err.starts_with("invalid firewall config: "), "{err}");
        assert!(
            err.contains(needle),
            "{json}:\n  got  {err}\n  want {needle}"
        );
    }
}

#[test]
fn rule_count_is_capped() {
    let rules = |n: usize| {
        let rule = r#"{"action": "allow"}"#;
        format!(r#"{{"rules": [{}]}}"#, vec![rule; n].join(","))
    };
    let f = fw(&rules(MAX_RULES));
    assert_eq!(f.rule_hits().len(), 10_000);
    let err = Firewall::from_config(&rules(MAX_RULES + 1))
        .expect_err("too many")
        .to_string();
    assert_eq!(
        err,
        "invalid firewall config: 10001 rules, at most 10000 allowed"
    );
}

// ---------------------------------------------------------------- rules

#[test]
fn src_prefix_decides() {
    let mut f = fw(r#"{"rules": [{"action": "allow", "src": "10.0.0.0/8"}]}"#);
    let v = run(
        &mut f,
        &[
            udp4([10, 0, 0, 1], OUT, 1, 2, &[0; 20]),
            udp4([10, 255, 255, 255], OUT, 1, 2, &[0; 20]),
            udp4([11, 0, 0, 0], OUT, 1, 2, &[0; 20]),
            udp4([9, 255, 255, 255], OUT, 1, 2, &[0; 20]),
        ],
    );
    assert_eq!(v, [Forward, Forward, Drop, Drop]);
}

#[test]
fn dst_prefix_decides() {
    let mut f = fw(r#"{"rules": [{"action": "deny", "dst": "192.0.2.0/25"}],
                       "default": "allow"}"#);
    let v = run(
        &mut f,
        &[
            syn4(IN, [192, 0, 2, 0], 1, 2),
            syn4(IN, [192, 0, 2, 127], 1, 2),
            syn4(IN, [192, 0, 2, 128], 1, 2),
        ],
    );
    assert_eq!(v, [Drop, Drop, Forward]);
    let c = f.counters();
    assert_eq!((c.denied_by_rule, c.allowed_by_default), (2, 1));
}

#[test]
fn proto_decides() {
    let mut f = fw(r#"{"rules": [
        {"action": "allow", "proto": "udp"},
        {"action": "allow", "proto": "icmp"},
        {"action": "allow", "proto": 47}
    ]}"#);
    let v = run(
        &mut f,
        &[
            udp4(IN, OUT, 1, 2, &[0; 20]),
            syn4(IN, OUT, 1, 2),
            echo4(IN, OUT, 7, true),
            ip4(IN, OUT, 47, &[0; 24]),
            ip4(IN, OUT, 50, &[0; 24]),
        ],
    );
    assert_eq!(v, [Forward, Drop, Forward, Forward, Drop]);
    assert_eq!(f.rule_hits(), [1, 1, 1]);
}

#[test]
fn ports_decide() {
    let config = r#"{"rules": [
        {"action": "allow", "proto": "tcp", "dport": "80"},
        {"action": "allow", "proto": "udp", "dport": "1000-2000"},
        {"action": "allow", "proto": "tcp", "sport": "53"}
    ]}"#;
    let cases = [
        (syn4(IN, OUT, 40_000, 80), Forward),
        (syn4(IN, OUT, 40_000, 81), Drop),
        (udp4(IN, OUT, 1, 80, &[0; 20]), Drop),
        (udp4(IN, OUT, 1, 999, &[0; 20]), Drop),
        (udp4(IN, OUT, 1, 1000, &[0; 20]), Forward),
        (udp4(IN, OUT, 1, 2000, &[0; 20]), Forward),
        (udp4(IN, OUT, 1, 2001, &[0; 20]), Drop),
        (syn4(IN, OUT, 53, 9), Forward),
        (syn4(IN, OUT, 54, 9), Drop),
    ];
    for (i, (frame, want)) in cases.iter().enumerate() {
        // A fresh firewall each time: no earlier flow is tracked.
        assert_eq!(one(&mut fw(config), frame), *want, "case {i}");
    }
}

#[test]
fn ports_without_proto_mean_tcp_and_udp() {
    let mut f = fw(r#"{"rules": [{"action": "deny", "dport": "53"}], "default": "allow"}"#);
    let v = run(
        &mut f,
        &[
            syn4(IN, OUT, 1, 53),
            udp4(IN, OUT, 1, 53, &[0; 20]),
            udp6(IN6, OUT6, 1, 53, &[0; 20]),
            udp4(IN, OUT, 1, 54, &[0; 20]),
            echo4(IN, OUT, 53, true),
            ip4(IN, OUT, 47, &[0; 24]),
        ],
    );
    assert_eq!(v, [Drop, Drop, Drop, Forward, Forward, Forward]);
}

#[test]
fn vlan_decides() {
    let untagged = udp4(IN, OUT, 1, 2, &[0; 20]);
    let cases = [
        // The tag the NIC stripped (priority bits set, id 100).
        ((untagged.clone(), 0xa064), Forward),
        ((untagged.clone(), 101), Drop),
        ((untagged.clone(), 0), Drop),
        // A tag left in the frame.
        ((tagged(&udp4(IN, OUT, 1, 2, &[0; 10]), &[100]), 0), Forward),
        ((tagged(&udp4(IN, OUT, 1, 2, &[0; 10]), &[200]), 0), Drop),
        // QinQ: the outer tag is the packet's VLAN.
        (
            (tagged(&udp4(IN, OUT, 1, 2, &[0; 10]), &[100, 200]), 0),
            Forward,
        ),
        (
            (tagged(&udp4(IN, OUT, 1, 2, &[0; 10]), &[200, 100]), 0),
            Drop,
        ),
        // A stripped tag wins over one in the frame...
        ((tagged(&udp4(IN, OUT, 1, 2, &[0; 10]), &[100]), 200), Drop),
        (
            (tagged(&udp4(IN, OUT, 1, 2, &[0; 10]), &[200]), 100),
            Forward,
        ),
        // ...unless it is a priority tag (id 0).
        (
            (tagged(&udp4(IN, OUT, 1, 2, &[0; 10]), &[100]), 0x6000),
            Forward,
        ),
    ];
    for (i, ((frame, tci), want)) in cases.into_iter().enumerate() {
        let mut f = fw(r#"{"rules": [{"action": "allow", "vlan": 100}]}"#);
        let got = run_tagged_at(&mut f, &[(frame, tci)], Instant::now());
        assert_eq!(got, [want], "case {i}, tci {tci:#x}");
        assert_eq!(f.counters().malformed, 0);
    }
}

#[test]
fn first_match_wins() {
    let deny_first = r#"{"rules": [
        {"action": "deny", "src": "10.0.0.5"},
        {"action": "allow", "src": "10.0.0.0/8"}
    ]}"#;
    let allow_first = r#"{"rules": [
        {"action": "allow", "src": "10.0.0.0/8"},
        {"action": "deny", "src": "10.0.0.5"}
    ]}"#;
    let frames = [
        udp4([10, 0, 0, 5], OUT, 1, 2, &[0; 20]),
        udp4([10, 0, 0, 6], OUT, 1, 2, &[0; 20]),
    ];
    let mut f = fw(deny_first);
    assert_eq!(run(&mut f, &frames), [Drop, Forward]);
    assert_eq!(f.rule_hits(), [1, 1]);
    let mut f = fw(allow_first);
    assert_eq!(run(&mut f, &frames), [Forward, Forward]);
    assert_eq!(f.rule_hits(), [2, 0]);
    let top: Vec<usize> = f.top_rules(10).iter().map(|r| r.rule).collect();
    assert_eq!(top, [0], "a rule that decided nothing is not listed");
}

#[test]
fn default_action_applies_when_nothing_matches() {
    let rules = r#"[{"action": "deny", "proto": "tcp", "dport": "22"}]"#;
    let mut allow = fw(&format!(r#"{{"rules": {rules}, "default": "allow"}}"#));
    let mut deny = fw(&format!(r#"{{"rules": {rules}, "default": "deny"}}"#));
    let frames = [syn4(IN, OUT, 1, 22), syn4(IN, OUT, 1, 23)];
    assert_eq!(run(&mut allow, &frames), [Drop, Forward]);
    assert_eq!(run(&mut deny, &frames), [Drop, Drop]);
    let (a, d) = (allow.counters(), deny.counters());
    assert_eq!((a.denied_by_rule, a.allowed_by_default), (1, 1));
    assert_eq!((d.denied_by_rule, d.denied_by_default, d.denied), (1, 1, 2));
}

#[test]
fn ipv6_rules() {
    let mut f = fw(r#"{"rules": [
        {"action": "allow", "src": "2001:db8::/32", "proto": "tcp", "dport": "443"},
        {"action": "allow", "dst": "2001:db9::/32", "proto": "icmpv6"}
    ]}"#);
    let mut outside = IN6;
    outside[3] = 0xba;
    let v = run(
        &mut f,
        &[
            syn6(IN6, OUT6, 1, 443),
            syn6(IN6, OUT6, 1, 444),
            syn6(outside, OUT6, 1, 443),
            // An IPv4 packet never matches an IPv6 prefix.
            syn4(IN, OUT, 1, 443),
            echo6(IN6, OUT6, 1, true),
            echo6(OUT6, IN6, 2, true),
        ],
    );
    assert_eq!(v, [Forward, Drop, Drop, Drop, Forward, Drop]);
}

#[test]
fn fragments_keep_the_first_ones_ports() {
    let mut f = fw(r#"{"rules": [
        {"action": "deny", "proto": "udp", "dport": "53"},
        {"action": "deny", "src": "10.0.0.9"}
    ], "default": "allow"}"#);
    let first = fragment4(udp4(IN, OUT, 1, 53, &[0; 20]), 0, true);
    let later = fragment4(udp4(IN, OUT, 1, 53, &[0; 20]), 100, false);
    let later_other = fragment4(udp4([10, 0, 0, 9], OUT, 1, 53, &[0; 20]), 100, false);
    let v = run(&mut f, &[first, later, later_other]);
    // A later fragment has no ports: the port rule cannot match it, a rule
    // without ports can.
    assert_eq!(v, [Drop, Forward, Drop]);
    assert_eq!(f.rule_hits(), [1, 1]);
    assert_eq!(
        f.counters().conntrack_entries,
        0,
        "fragments are not tracked"
    );
}

// ---------------------------------------------------------------- conntrack

/// Only `10.0.0.0/8` may open flows.
const OUTBOUND_ONLY: &str = r#"{"rules": [{"action": "allow", "src": "10.0.0.0/8"}]}"#;

#[test]
fn tcp_replies_of_an_allowed_flow_pass() {
    let mut f = fw(OUTBOUND_ONLY);
    let v = run(
        &mut f,
        &[
            syn4(IN, OUT, 40_000, 80),
            tcp4_with(OUT, IN, 80, 40_000, &[0; 16], |b| b.syn().ack(1001)),
            tcp4_with(IN, OUT, 40_000, 80, &[0; 16], |b| b.ack(1)),
            // Not the tracked flow: another port, or UDP.
            syn4(OUT, IN, 80, 40_001),
            udp4(OUT, IN, 80, 40_000, &[0; 20]),
        ],
    );
    assert_eq!(v, [Forward, Forward, Forward, Drop, Drop]);
    let c = f.counters();
    assert_eq!(c.conntrack_hits, 2, "the reply and the next packet");
    assert_eq!(c.conntrack_entries, 1);
    assert_eq!(c.allowed_by_rule, 1);
    assert_eq!(c.denied_by_default, 2);
    assert_eq!(f.rule_hits(), [1]);
}

#[test]
fn udp_replies_of_an_allowed_flow_pass() {
    let mut f = fw(OUTBOUND_ONLY);
    let v = run(
        &mut f,
        &[
            udp4(IN, OUT, 5353, 53, &[0; 20]),
            udp4(OUT, IN, 53, 5353, &[0; 20]),
            udp4(OUT, IN, 53, 5354, &[0; 20]),
            udp4([192, 0, 2, 2], IN, 53, 5353, &[0; 20]),
        ],
    );
    assert_eq!(v, [Forward, Forward, Drop, Drop]);
    assert_eq!(f.counters().conntrack_hits, 1);
}

#[test]
fn ipv6_flows_are_tracked() {
    let mut f = fw(r#"{"rules": [{"action": "allow", "src": "2001:db8::/32"}]}"#);
    let v = run(
        &mut f,
        &[
            udp6(IN6, OUT6, 1000, 53, &[0; 20]),
            udp6(OUT6, IN6, 53, 1000, &[0; 20]),
            syn6(OUT6, IN6, 53, 1000),
        ],
    );
    assert_eq!(v, [Forward, Forward, Drop]);
}

#[test]
fn icmp_echo_replies_pass() {
    let mut f = fw(r#"{"rules": [
        {"action": "allow", "src": "10.0.0.0/8", "proto": "icmp"},
        {"action": "allow", "src": "2001:db8::/32", "proto": "icmpv6"}
    ]}"#);
    let v = run(
        &mut f,
        &[
            echo4(IN, OUT, 7, true),
            echo4(OUT, IN, 7, false),
            // Another identifier, or a reply nobody asked for.
            echo4(OUT, IN, 8, false),
            echo4([192, 0, 2, 2], IN, 7, false),
            // The peer's own request is not a reply.
            echo4(OUT, IN, 7, true),
            echo6(IN6, OUT6, 9, true),
            echo6(OUT6, IN6, 9, false),
            echo6(OUT6, IN6, 10, false),
        ],
    );
    assert_eq!(
        v,
        [Forward, Forward, Drop, Drop, Drop, Forward, Forward, Drop]
    );
    assert_eq!(f.counters().conntrack_hits, 2);
    assert_eq!(f.counters().conntrack_entries, 2);
}

#[test]
fn echo_replies_and_resets_open_no_entry() {
    let mut f = fw(r#"{"rules": [{"action": "allow"}]}"#);
    let v = run(
        &mut f,
        &[
            echo4(IN, OUT, 7, false),
            tcp4_with(IN, OUT, 1, 2, &[0; 16], |b| b.rst()),
            ip4(IN, OUT, 47, &[0; 24]),
        ],
    );
    assert_eq!(v, [Forward, Forward, Forward]);
    assert_eq!(f.counters().conntrack_entries, 0);
}

#[test]
fn flows_allowed_by_default_are_tracked() {
    let mut f = fw(r#"{"rules": [{"action": "deny", "src": "192.0.2.0/24"}],
                       "default": "allow"}"#);
    let v = run(
        &mut f,
        &[
            udp4(IN, OUT, 1, 2, &[0; 20]),
            udp4(OUT, IN, 2, 1, &[0; 20]),
            udp4(OUT, IN, 2, 3, &[0; 20]),
        ],
    );
    assert_eq!(v, [Forward, Forward, Drop]);
}

const SHORT_TIMEOUTS: &str = r#"{"rules": [{"action": "allow", "src": "10.0.0.0/8"}],
    "conntrack": {"tcp_timeout_s": 300, "udp_timeout_s": 30, "icmp_timeout_s": 10}}"#;

#[test]
fn entries_expire_by_protocol() {
    let t0 = Instant::now();
    let mut f = fw(SHORT_TIMEOUTS);
    let opens = [
        syn4(IN, OUT, 1000, 80),
        udp4(IN, OUT, 1000, 53, &[0; 20]),
        echo4(IN, OUT, 1000, true),
    ];
    let replies = [
        tcp4_with(OUT, IN, 80, 1000, &[0; 16], |b| b.ack(1)),
        udp4(OUT, IN, 53, 1000, &[0; 20]),
        echo4(OUT, IN, 1000, false),
    ];
    assert_eq!(run_at(&mut f, &opens, t0), [Forward; 3]);
    let reply = |f: &mut Firewall, i: usize, at: u64| one_at(f, &replies[i], t0 + secs(at));
    // Each reply restarts its entry's timeout.
    assert_eq!(reply(&mut f, 2, 9), Forward);
    assert_eq!(reply(&mut f, 2, 18), Forward);
    assert_eq!(reply(&mut f, 2, 29), Drop, "ICMP idle 11 s > 10 s");
    assert_eq!(reply(&mut f, 1, 29), Forward);
    assert_eq!(reply(&mut f, 1, 60), Drop, "UDP idle 31 s > 30 s");
    assert_eq!(reply(&mut f, 0, 299), Forward);
    assert_eq!(reply(&mut f, 0, 598), Forward);
    assert_eq!(reply(&mut f, 0, 899), Drop, "TCP idle 301 s > 300 s");
}

#[test]
fn tcp_reset_and_fin_shorten_the_timeout() {
    let t0 = Instant::now();
    let mut f = fw(SHORT_TIMEOUTS);
    let open = |port| syn4(IN, OUT, port, 80);
    let reply = |port| tcp4_with(OUT, IN, 80, port, &[0; 16], |b| b.ack(1));
    run_at(&mut f, &[open(1), open(2), open(3)], t0);
    let closing = [
        tcp4_with(IN, OUT, 1, 80, &[0; 16], |b| b.rst()),
        tcp4_with(OUT, IN, 80, 2, &[0; 16], |b| b.fin().ack(1)),
    ];
    assert_eq!(run_at(&mut f, &closing, t0), [Forward, Forward]);
    let at = |s| t0 + secs(s);
    assert_eq!(one_at(&mut f, &reply(1), at(11)), Drop, "RST: 10 s");
    assert_eq!(one_at(&mut f, &reply(2), at(110)), Forward, "FIN: 120 s");
    assert_eq!(one_at(&mut f, &reply(2), at(231)), Drop);
    assert_eq!(one_at(&mut f, &reply(3), at(231)), Forward, "open: 300 s");
}

#[test]
fn a_full_table_still_decides_but_does_not_track() {
    let t0 = Instant::now();
    let mut f = fw(r#"{"rules": [{"action": "allow", "src": "10.0.0.0/8"}],
                       "conntrack": {"max_entries": 2, "udp_timeout_s": 30}}"#);
    let slots = f.conntrack.slots();
    let open = |port| udp4(IN, OUT, port, 53, &[0; 20]);
    let reply = |port| udp4(OUT, IN, 53, port, &[0; 20]);
    let v = run_at(&mut f, &[open(1), open(2), open(3), open(3)], t0);
    assert_eq!(v, [Forward; 4], "the rules still allow");
    let c = f.counters();
    assert_eq!((c.conntrack_entries, c.conntrack_full), (2, 2));
    let v = run_at(&mut f, &[reply(1), reply(2), reply(3)], t0);
    assert_eq!(v, [Forward, Forward, Drop], "flow 3 is not tracked");
    // Denied traffic never needs an entry.
    assert_eq!(one_at(&mut f, &udp4(OUT, IN, 9, 9, &[0; 20]), t0), Drop);
    assert_eq!(f.counters().conntrack_full, 2);

    // Once the first two expire, new flows take their place.
    let later = t0 + secs(31);
    assert_eq!(run_at(&mut f, &[open(4), open(5)], later), [Forward; 2]);
    assert_eq!(
        run_at(&mut f, &[reply(4), reply(5), reply(1)], later),
        [Forward, Forward, Drop]
    );
    let c = f.counters();
    assert_eq!((c.conntrack_entries, c.conntrack_full), (2, 2));
    assert_eq!(f.conntrack.slots(), slots, "never reallocated");
}

#[test]
fn random_flows_never_grow_the_table() {
    let t0 = Instant::now();
    let mut f = fw(r#"{"rules": [{"action": "allow"}], "conntrack": {"max_entries": 100}}"#);
    let slots = f.conntrack.slots();
    let frames: Vec<_> = (0..1000u16)
        .map(|i| udp4([10, 0, (i >> 8) as u8, i as u8], OUT, i, 53, &[0; 20]))
        .collect();
    run_at(&mut f, &frames, t0);
    let c = f.counters();
    assert_eq!(c.conntrack_entries, 100);
    assert_eq!(c.conntrack_full, 900);
    assert_eq!(f.conntrack.slots(), slots);
}

#[test]
fn expired_entries_are_swept() {
    let t0 = Instant::now();
    let mut f = fw(r#"{"rules": [{"action": "allow"}],
                       "conntrack": {"max_entries": 1000, "udp_timeout_s": 5}}"#);
    let frames: Vec<_> = (0..500u16)
        .map(|i| udp4(IN, OUT, i, 53, &[0; 20]))
        .collect();
    run_at(&mut f, &frames, t0);
    assert_eq!(f.counters().conntrack_entries, 500);
    // Empty batches sweep too, 64 slots each.
    for _ in 0..2 * f.conntrack.slots() / SWEEP_SLOTS {
        let mut none: [Packet<'_>; 0] = [];
        f.process_at(&mut Batch::new(&mut none), t0 + secs(6));
    }
    assert_eq!(f.counters().conntrack_entries, 0);
}

// ---------------------------------------------------------------- malformed

#[test]
fn runts_are_malformed() {
    let mut f = fw("");
    let frames: Vec<Vec<u8>> = (0..14).map(|n| vec![0x08; n]).collect();
    assert!(run(&mut f, &frames).iter().all(|&v| v == Drop));
    assert_eq!(f.counters().malformed, 14);
}

#[test]
fn every_truncation_of_an_ip_frame_is_malformed() {
    let whole = [
        syn4(IN, OUT, 1234, 80),
        udp4(IN, OUT, 1234, 53, &[0; 20]),
        syn6(IN6, OUT6, 1, 2),
        udp6(IN6, OUT6, 1, 2, &[0; 20]),
        echo4(IN, OUT, 1, true),
        echo6(IN6, OUT6, 1, true),
        tagged(&udp4(IN, OUT, 1, 2, &[0; 10]), &[5]),
        tagged(&udp4(IN, OUT, 1, 2, &[0; 10]), &[5, 6]),
    ];
    let mut f = fw(r#"{"default": "allow", "malformed": "drop"}"#);
    let mut cuts = 0;
    for frame in &whole {
        let cut: Vec<Vec<u8>> = (0..frame.len()).map(|n| frame[..n].to_vec()).collect();
        cuts += cut.len() as u64;
        assert!(run(&mut f, &cut).iter().all(|&v| v == Drop));
    }
    let c = f.counters();
    assert_eq!(c.malformed, cuts, "a cut frame is malformed, not IP");
    assert_eq!(c.allowed + c.denied + c.non_ip, 0);
    // And whole, they pass.
    assert!(run(&mut f, &whole).iter().all(|&v| v == Forward));
}

#[test]
fn inconsistent_headers_are_malformed() {
    let tcp = syn4(IN, OUT, 1234, 80);
    let ip = 14;
    let mut frames = Vec::new();
    let mut edit = |base: &Vec<u8>, f: &dyn Fn(&mut Vec<u8>)| {
        let mut frame = base.clone();
        f(&mut frame);
        frames.push(frame);
    };
    // IHL below the minimum of 5, and past the packet.
    edit(&tcp, &|f| f[ip] = 0x44);
    edit(&tcp, &|f| f[ip] = 0x4f);
    // Total length past the frame, and below the header.
    edit(&tcp, &|f| {
        f[ip + 2..ip + 4].copy_from_slice(&1500u16.to_be_bytes())
    });
    edit(&tcp, &|f| {
        f[ip + 2..ip + 4].copy_from_slice(&10u16.to_be_bytes())
    });
    // Not version 4 under an IPv4 EtherType.
    edit(&tcp, &|f| f[ip] = 0x65);
    // TCP data offset below 5, and past the segment.
    edit(&tcp, &|f| f[ip + 20 + 12] = 0x40);
    edit(&tcp, &|f| f[ip + 20 + 12] = 0xf0);
    // IPv6 payload length past the frame.
    edit(&udp6(IN6, OUT6, 1, 2, &[0; 20]), &|f| {
        f[ip + 4..ip + 6].copy_from_slice(&1000u16.to_be_bytes());
    });
    // UDP length past the datagram, and below its header.
    edit(&udp4(IN, OUT, 1, 2, &[0; 20]), &|f| {
        f[ip + 20 + 4..ip + 24 + 2].copy_from_slice(&500u16.to_be_bytes());
    });
    edit(&udp4(IN, OUT, 1, 2, &[0; 20]), &|f| {
        f[ip + 20 + 4..ip + 24 + 2].copy_from_slice(&4u16.to_be_bytes());
    });
    let n = frames.len() as u64;
    let mut f = fw(r#"{"default": "allow"}"#);
    let v = run(&mut f, &frames);
    for (i, verdict) in v.iter().enumerate() {
        assert_eq!(*verdict, Drop, "frame {i}");
    }
    assert_eq!(f.counters().malformed, n);
}

/// A VLAN-tagged frame with `tags` 802.1Q tags.
fn stacked(tags: usize) -> Vec<u8> {
    let inner = udp4(IN, OUT, 1, 2, &[0; 20]);
    let mut frame = inner[..12].to_vec();
    for i in 0..tags {
        frame.extend_from_slice(&0x8100u16.to_be_bytes());
        frame.extend_from_slice(&(10 + i as u16).to_be_bytes());
    }
    frame.extend_from_slice(&inner[12..]);
    frame
}

#[test]
fn more_than_two_vlan_tags_are_malformed() {
    let mut f = fw(r#"{"default": "allow"}"#);
    let v = run(
        &mut f,
        &[stacked(1), stacked(2), stacked(3), stacked(4), stacked(9)],
    );
    assert_eq!(v, [Forward, Forward, Drop, Drop, Drop]);
    assert_eq!(f.counters().malformed, 3);
    // 802.1ad and the old QinQ TPID count as tags too.
    let mut mixed = stacked(3);
    mixed[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
    mixed[16..18].copy_from_slice(&0x9100u16.to_be_bytes());
    assert_eq!(one(&mut f, &mixed), Drop);
    // A stripped tag is not in the frame and does not count.
    let v = run_tagged_at(&mut f, &[(stacked(2), 7)], Instant::now());
    assert_eq!(v, [Forward]);
}

#[test]
fn tiny_and_overlapping_fragments_are_malformed() {
    let mut f = fw(r#"{"default": "allow"}"#);
    // A first fragment with 4 bytes of TCP header: no flags (RFC 1858 §3).
    let mut tiny = fragment4(syn4(IN, OUT, 1, 80), 0, true);
    tiny.truncate(14 + 20 + 4);
    tiny[16..18].copy_from_slice(&24u16.to_be_bytes());
    // A TCP fragment at offset 8 bytes rewrites the flags (RFC 1858 §4).
    let overlap = fragment4(syn4(IN, OUT, 1, 80), 1, false);
    // UDP at offset 8 bytes is just a fragment.
    let udp = fragment4(udp4(IN, OUT, 1, 53, &[0; 20]), 1, false);
    assert_eq!(run(&mut f, &[tiny, overlap, udp]), [Drop, Drop, Forward]);
    assert_eq!(f.counters().malformed, 2);
}

#[test]
fn malformed_and_non_ip_follow_their_policies() {
    let frames = [vec![0; 5], stacked(3), arp_request(IN, OUT), lldp()];
    let mut f = fw("");
    assert_eq!(run(&mut f, &frames), [Drop, Drop, Forward, Forward]);
    let mut f = fw(r#"{"malformed": "forward", "non_ip": "drop"}"#);
    assert_eq!(run(&mut f, &frames), [Forward, Forward, Drop, Drop]);
    let c = f.counters();
    assert_eq!((c.malformed, c.non_ip, c.allowed, c.denied), (2, 2, 0, 0));
}

// ---------------------------------------------------------------- reconfigure

#[test]
fn reconfigure_applies_to_new_flows_and_tracked_ones_keep_passing() {
    let t0 = Instant::now();
    let mut f = fw(r#"{"rules": [{"action": "allow", "proto": "udp"}]}"#);
    let (open, reply) = (
        udp4(IN, OUT, 5353, 53, &[0; 20]),
        udp4(OUT, IN, 53, 5353, &[0; 20]),
    );
    let other = udp4(IN, OUT, 5354, 53, &[0; 20]);
    let frames = [vec![0; 5], arp_request(IN, OUT)];
    assert_eq!(
        run_at(&mut f, &[open.clone(), reply.clone()], t0),
        [Forward; 2]
    );
    assert_eq!(run_at(&mut f, &frames, t0), [Drop, Forward]);

    // Deny UDP from inside: a new flow with the tracked flow's 5-tuple
    // would be denied, and the frame policies flip.
    let deny = r#"{"rules": [{"action": "deny", "proto": "udp", "src": "10.0.0.0/8"}],
                   "default": "allow", "malformed": "forward", "non_ip": "drop"}"#;
    NetworkFunction::reconfigure(&mut f, deny).expect("applies in place");
    let v = run_at(&mut f, &[open.clone(), reply, other.clone()], t0 + secs(1));
    assert_eq!(
        v,
        [Forward, Forward, Drop],
        "tracked flow passes, a new one not"
    );
    assert_eq!(run_at(&mut f, &frames, t0 + secs(1)), [Forward, Drop]);

    let c = f.counters();
    assert_eq!(c.packets, 9, "counters carry over");
    assert_eq!((c.conntrack_hits, c.conntrack_entries), (3, 1));
    assert_eq!((c.allowed_by_rule, c.denied_by_rule), (1, 1));
    assert_eq!(f.rule_hits(), [1], "hits restart with the new rules");
    assert_eq!(accounted(&c), c.packets);

    // Once the tracked flow has gone idle, its 5-tuple meets the new rules.
    assert_eq!(one_at(&mut f, &open, t0 + secs(40)), Drop);
}

#[test]
fn reconfigured_timeouts_apply_from_an_entrys_next_packet() {
    let t0 = Instant::now();
    let mut f = fw(SHORT_TIMEOUTS);
    let reply = udp4(OUT, IN, 53, 1000, &[0; 20]);
    assert_eq!(
        one_at(&mut f, &udp4(IN, OUT, 1000, 53, &[0; 20]), t0),
        Forward
    );
    let shorter = r#"{"rules": [{"action": "allow", "src": "10.0.0.0/8"}],
        "conntrack": {"udp_timeout_s": 5}}"#;
    NetworkFunction::reconfigure(&mut f, shorter).expect("timeouts apply in place");
    // The entry keeps its 30 s deadline; this reply sets 5 s.
    assert_eq!(one_at(&mut f, &reply, t0 + secs(20)), Forward);
    assert_eq!(one_at(&mut f, &reply, t0 + secs(24)), Forward);
    assert_eq!(
        one_at(&mut f, &reply, t0 + secs(30)),
        Drop,
        "idle 6 s > 5 s"
    );
}

#[test]
fn refused_reconfigure_changes_nothing() {
    let mut f = fw(OUTBOUND_ONLY);
    let (open, reply) = (syn4(IN, OUT, 40_000, 80), syn4(OUT, IN, 80, 40_001));
    assert_eq!(run(&mut f, &[open.clone(), reply.clone()]), [Forward, Drop]);
    let (counters, report) = (f.counters(), f.report());

    let err = NetworkFunction::reconfigure(
        &mut f,
        r#"{"default": "allow", "conntrack": {"max_entries": 1024}}"#,
    )
    .expect_err("a new table size needs a restart");
    assert_eq!(
        err,
        "firewall conntrack.max_entries cannot change in place: \
         the table holds 65536, the new config asks for 1024"
    );
    for json in [
        r#"{"default": "allow", "rules": [{"action": "allow", "dport": "2-1"}]}"#,
        r#"{"default": "maybe"}"#,
        r#"{"default": "allow"} x"#,
        "[]",
    ] {
        let err = NetworkFunction::reconfigure(&mut f, json).expect_err(json);
        assert!(err.starts_with("invalid firewall config: "), "{err}");
    }
    assert_eq!((f.counters(), f.report()), (counters, report));
    // Still the old rules and the old table.
    let v = run(
        &mut f,
        &[
            reply,
            tcp4_with(OUT, IN, 80, 40_000, &[0; 16], |b| b.ack(1)),
        ],
    );
    assert_eq!(v, [Drop, Forward]);
    assert_eq!(f.rule_hits(), [1]);

    NetworkFunction::reconfigure(&mut f, "").expect("empty means defaults");
    assert_eq!(one(&mut f, &syn4(IN, OUT, 40_002, 80)), Drop);
}

// ---------------------------------------------------------------- report

#[test]
fn report_is_the_documented_json() {
    let mut rules: Vec<String> = (0..30)
        .map(|i| format!(r#"{{"action": "allow", "proto": "udp", "dport": "{i}"}}"#))
        .collect();
    rules.push(r#"{"action": "deny", "proto": "tcp"}"#.to_owned());
    let mut f = fw(&format!(r#"{{"rules": [{}]}}"#, rules.join(",")));
    let mut frames = Vec::new();
    for port in 0..30u16 {
        // Rule `port` decides `port + 1` packets (new flows each time).
        for n in 0..=port {
            frames.push(udp4(IN, OUT, 1000 + n, port, &[0; 20]));
        }
    }
    frames.extend([
        syn4(IN, OUT, 1, 2),
        syn4(IN, OUT, 1, 2),
        udp4(IN, OUT, 1, 999, &[0; 20]),
        udp4(OUT, IN, 0, 1000, &[0; 20]),
        arp_request(IN, OUT),
        vec![1, 2, 3],
    ]);
    run(&mut f, &frames);
    let report: Value = serde_json::from_str(&f.report().expect("report")).expect("json");
    let allowed = (1..=30).sum::<u64>();
    assert_eq!(report["packets"], frames.len());
    assert_eq!(report["allowed"], allowed + 1);
    assert_eq!(report["allowed_by_rule"], allowed);
    assert_eq!(report["allowed_by_default"], 0);
    assert_eq!(report["denied"], 3);
    assert_eq!(report["denied_by_rule"], 2);
    assert_eq!(report["denied_by_default"], 1);
    assert_eq!(report["conntrack_hits"], 1);
    assert_eq!(report["conntrack_entries"], allowed);
    assert_eq!(report["conntrack_full"], 0);
    assert_eq!(report["non_ip"], 1);
    assert_eq!(report["malformed"], 1);
    assert_eq!(report["rules"], 31);
    let top = report["top_rules"].as_array().expect("top_rules");
    assert_eq!(top.len(), REPORT_TOP_RULES);
    assert_eq!(
        top[0],
        serde_json::json!({"rule": 29, "action": "allow", "hits": 30})
    );
    assert_eq!(top[19]["rule"], 10);
    let all = f.top_rules(100);
    assert_eq!(all.len(), 31);
    let order: Vec<(usize, u64)> = all[27..].iter().map(|r| (r.rule, r.hits)).collect();
    assert_eq!(
        order,
        [(2, 3), (1, 2), (30, 2), (0, 1)],
        "ties go to the earlier rule"
    );
    assert_eq!(accounted(&f.counters()), frames.len() as u64);
}

// ---------------------------------------------------------------- no panics

fn valid_frames() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>(), any::<u16>())
            .prop_map(|(s, p, q)| udp4(s, OUT, p, q, &[0; 20])),
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(s, p)| syn4(s, OUT, p, 80)),
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(s, p)| syn4(OUT, s, 80, p)),
        (1..4095u16, any::<u16>()).prop_map(|(v, p)| tagged(&udp4(IN, OUT, p, 53, &[0; 10]), &[v])),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(s, p)| udp6(s, OUT6, p, 53, &[0; 20])),
        (any::<u16>(), any::<bool>()).prop_map(|(id, r)| echo4(IN, OUT, id, r)),
        (any::<u16>(), any::<bool>()).prop_map(|(id, r)| echo6(OUT6, IN6, id, r)),
        (0..4usize).prop_map(stacked),
        Just(arp_request(IN, OUT)),
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

const SOME_RULES: &str = r#"{"rules": [
    {"action": "deny", "src": "10.0.0.0/8", "proto": "tcp", "dport": "22"},
    {"action": "allow", "src": "10.0.0.0/8"},
    {"action": "allow", "proto": "udp", "dport": "53", "vlan": 5},
    {"action": "allow", "dst": "2001:db9::/32", "proto": "icmpv6"}
], "conntrack": {"max_entries": 16}}"#;

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_are_counted(
        frames in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..200), any::<u16>()), 1..80),
        later in 0..100u64,
    ) {
        let t0 = Instant::now();
        let mut f = fw(SOME_RULES);
        run_tagged_at(&mut f, &frames, t0);
        run_tagged_at(&mut f, &frames, t0 + secs(later));
        let c = f.counters();
        prop_assert_eq!(c.packets, 2 * frames.len() as u64);
        prop_assert_eq!(accounted(&c), c.packets);
        prop_assert!(c.conntrack_entries <= 16);
        prop_assert!(f.report().is_some());
    }

    #[test]
    fn mangled_frames_never_panic_and_are_counted(
        frames in proptest::collection::vec(mangled_frames(), 1..120),
        later in 0..100u64,
    ) {
        let t0 = Instant::now();
        let mut f = fw(SOME_RULES);
        let slots = f.conntrack.slots();
        run_at(&mut f, &frames, t0);
        run_at(&mut f, &frames, t0 + secs(later));
        let c = f.counters();
        prop_assert_eq!(accounted(&c), 2 * frames.len() as u64);
        prop_assert!(c.conntrack_entries <= 16);
        prop_assert_eq!(f.conntrack.slots(), slots);
        let hits: u64 = f.rule_hits().iter().sum();
        prop_assert_eq!(hits, c.allowed_by_rule + c.denied_by_rule);
    }
}

// ---------------------------------------------------------------- benchmark

/// Rough cost per packet with 1000 rules. Run with
/// `cargo test -p nf-firewall --release -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: run in release with --ignored --nocapture"]
fn bench_1000_rules() {
    // 1000 rules over distinct /24s and ports, none matching the traffic
    // below until the last, so each packet walks the whole bitmap.
    let mut rules: Vec<String> = (0..999u32)
        .map(|i| {
            format!(
                r#"{{"action": "deny", "src": "10.{}.{}.0/24", "proto": "{}", "dport": "{}"}}"#,
                i / 256,
                i % 256,
                if i % 2 == 0 { "tcp" } else { "udp" },
                1000 + i
            )
        })
        .collect();
    rules.push(r#"{"action": "allow", "src": "172.16.0.0/12"}"#.to_owned());
    let config = format!(r#"{{"rules": [{}]}}"#, rules.join(","));
    let mut f = fw(&config);
    println!("index: {} KiB", f.index_bytes() / 1024);

    // New flows each time: first packets of flows the default denies (no
    // entry is made), so every packet takes the full rule lookup.
    let denied: Vec<Vec<u8>> = (0..MAX_BATCH as u16)
        .map(|i| syn4([192, 0, 2, i as u8], OUT, 40_000 + i, 1000 + 2 * i + 1))
        .collect();
    // Packets of established flows: conntrack hits.
    let established: Vec<Vec<u8>> = (0..MAX_BATCH as u16)
        .map(|i| udp4([172, 16, 0, i as u8], OUT, 40_000 + i, 53, &[0; 20]))
        .collect();
    // One batch first to open the flows.
    run(&mut f, &established);

    // Best of three runs: the machine is shared.
    let best = |per_round: usize, run: &mut dyn FnMut()| {
        let rounds = 50_000;
        (0..3)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..rounds {
                    run();
                }
                start.elapsed().as_nanos() as f64 / (rounds * per_round) as f64
            })
            .fold(f64::INFINITY, f64::min)
    };
    for (name, frames) in [
        ("whole NF, rule lookup (new flows, denied)", &denied),
        ("whole NF, conntrack hit (established)", &established),
    ] {
        let mut umem = vec![[0u8; FRAME]; frames.len()];
        for (slot, frame) in umem.iter_mut().zip(frames.iter()) {
            slot[..frame.len()].copy_from_slice(frame);
        }
        let lens: Vec<usize> = frames.iter().map(Vec::len).collect();
        let ns = best(frames.len(), &mut || {
            let mut packets: Vec<Packet<'_>> = umem
                .iter_mut()
                .zip(&lens)
                .map(|(slot, &len)| Packet::new(slot, len, 0))
                .collect();
            let mut batch = Batch::new(&mut packets);
            f.process(&mut batch);
            std::hint::black_box(&batch);
        });
        println!("{name}: {ns:.1} ns/packet");
    }
    let ns = best(denied.len(), &mut || {
        for frame in &denied {
            std::hint::black_box(parse::parse(std::hint::black_box(frame), 0));
        }
    });
    println!("  of which parsing: {ns:.1} ns/packet");
    let parsed: Vec<_> = denied
        .iter()
        .map(|frame| match parse::parse(frame, 0) {
            Parsed::Ip(p) => p.fields,
            other => panic!("{other:?}"),
        })
        .collect();
    let ns = best(parsed.len(), &mut || {
        for fields in &parsed {
            std::hint::black_box(f.index.lookup(std::hint::black_box(fields)));
        }
    });
    println!("  of which the 1000-rule index lookup: {ns:.1} ns/packet");
    let c = f.counters();
    assert!(c.denied_by_default > 0 && c.conntrack_hits > 0);
}
