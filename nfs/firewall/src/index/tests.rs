//! The index against the obvious implementation: try every rule in order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::config::{Action, FirewallConfig, IpPrefix, PortRange, VlanId};

/// Whether `prefix` holds `addr`, by masking, written apart from
/// [`IpPrefix::range`].
fn prefix_holds(prefix: &IpPrefix, v6: bool, addr: u128) -> bool {
    let len = u32::from(prefix.len());
    match prefix.addr() {
        IpAddr::V4(net) if !v6 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            (addr as u32) & mask == u32::from(net)
        }
        IpAddr::V6(net) if v6 => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            addr & mask == u128::from(net)
        }
        _ => false,
    }
}

fn reference_matches(r: &RuleConfig, f: &Fields) -> bool {
    let port = |range: Option<PortRange>, pick: fn((u16, u16)) -> u16| {
        range.is_none_or(|range| f.ports.is_some_and(|p| range.contains(pick(p))))
    };
    r.src.is_none_or(|p| prefix_holds(&p, f.v6, f.src))
        && r.dst.is_none_or(|p| prefix_holds(&p, f.v6, f.dst))
        && match r.proto {
            Some(p) => p.0 == f.proto,
            None => !r.has_ports() || f.proto == 6 || f.proto == 17,
        }
        && port(r.sport, |p| p.0)
        && port(r.dport, |p| p.1)
        && r.vlan.is_none_or(|v| f.vlan == Some(v.get()))
}

/// First match, one rule at a time.
fn reference(rules: &[RuleConfig], f: &Fields) -> Option<usize> {
    rules.iter().position(|r| reference_matches(r, f))
}

fn v4(a: [u8; 4]) -> u128 {
    u32::from_be_bytes(a).into()
}

fn v6(a: Ipv6Addr) -> u128 {
    a.into()
}

fn prefix(s: &str) -> Option<IpPrefix> {
    Some(s.parse().expect(s))
}

fn ports(s: &str) -> Option<PortRange> {
    Some(s.parse().expect(s))
}

fn fields(v6: bool, src: u128, dst: u128, proto: u8, ports: Option<(u16, u16)>) -> Fields {
    Fields {
        v6,
        src,
        dst,
        proto,
        ports,
        vlan: None,
    }
}

#[test]
fn no_rules_match_nothing() {
    let index = RuleIndex::new(&[]);
    let f = fields(false, 1, 2, 6, Some((1, 2)));
    assert_eq!(index.lookup(&f), None);
}

/// The ends of every axis, where an off-by-one in the interval sweep would
/// show.
#[test]
fn axis_edges_match_the_reference() {
    let mut rules = vec![
        RuleConfig {
            src: prefix("255.255.255.255/32"),
            ..RuleConfig::any(Action::Deny)
        },
        RuleConfig {
            dst: prefix("0.0.0.0/32"),
            ..RuleConfig::any(Action::Deny)
        },
        RuleConfig {
            src: prefix("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"),
            ..RuleConfig::any(Action::Deny)
        },
        RuleConfig {
            dst: prefix("::/128"),
            ..RuleConfig::any(Action::Deny)
        },
        RuleConfig {
            sport: ports("65535"),
            ..RuleConfig::any(Action::Deny)
        },
        RuleConfig {
            dport: ports("0"),
            ..RuleConfig::any(Action::Deny)
        },
        RuleConfig {
            proto: Some(Proto(255)),
            ..RuleConfig::any(Action::Deny)
        },
        RuleConfig {
            vlan: Some(VlanId::new(4094).expect("vlan")),
            ..RuleConfig::any(Action::Deny)
        },
        RuleConfig {
            src: prefix("128.0.0.0/1"),
            ..RuleConfig::any(Action::Deny)
        },
        RuleConfig {
            dst: prefix("::/0"),
            ..RuleConfig::any(Action::Deny)
        },
    ];
    // 70 rules: bitmaps of two words.
    for i in 0..60u16 {
        rules.push(RuleConfig {
            dport: Some(PortRange::new(i * 1000, i * 1000 + 999).expect("range")),
            ..RuleConfig::any(Action::Allow)
        });
    }
    FirewallConfig {
        rules: rules.clone(),
        ..FirewallConfig::default()
    }
    .validate()
    .expect("valid");
    let index = RuleIndex::new(&rules);
    let addrs4 = [0, 1, 0x7fff_ffff, 0x8000_0000, u128::from(u32::MAX)];
    let addrs6 = [0, 1, u128::MAX - 1, u128::MAX];
    let port_values = [0, 1, 999, 1000, 59_999, 60_000, 65_534, 65_535];
    let mut checked = 0;
    for v6 in [false, true] {
        let addrs: &[u128] = if v6 { &addrs6 } else { &addrs4 };
        for &src in addrs {
            for &dst in addrs {
                for proto in [6, 17, 1, 254, 255] {
                    for &s in &port_values {
                        for &d in &port_values {
                            for vlan in [None, Some(1), Some(4094), Some(4095)] {
                                let ports = (proto == 6 || proto == 17).then_some((s, d));
                                let f = Fields {
                                    vlan,
                                    ..fields(v6, src, dst, proto, ports)
                                };
                                assert_eq!(index.lookup(&f), reference(&rules, &f), "{f:?}");
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 10_000);
}

#[test]
fn first_match_is_the_lowest_index() {
    let rules = vec![
        RuleConfig {
            src: prefix("10.0.0.5"),
            ..RuleConfig::any(Action::Deny)
        },
        RuleConfig {
            src: prefix("10.0.0.0/8"),
            ..RuleConfig::any(Action::Allow)
        },
        RuleConfig::any(Action::Deny),
    ];
    let index = RuleIndex::new(&rules);
    let at = |a| index.lookup(&fields(false, v4(a), v4([1, 1, 1, 1]), 6, Some((1, 2))));
    assert_eq!(at([10, 0, 0, 5]), Some(0));
    assert_eq!(at([10, 0, 0, 6]), Some(1));
    assert_eq!(at([11, 0, 0, 5]), Some(2));
    let v6_packet = fields(true, v6(Ipv6Addr::LOCALHOST), 0, 6, None);
    assert_eq!(index.lookup(&v6_packet), Some(2), "IPv4 rules skip IPv6");
}

#[test]
fn memory_stays_within_the_documented_bound() {
    // Every rule its own prefix on both address axes and ports on both.
    let n = 1000usize;
    let rules: Vec<RuleConfig> = (0..n)
        .map(|i| {
            let i = i as u32;
            RuleConfig {
                src: Some(IpPrefix::new(Ipv4Addr::from(i << 8).into(), 24).expect("src")),
                dst: Some(IpPrefix::new(Ipv4Addr::from(i << 12).into(), 20).expect("dst")),
                sport: Some(PortRange::single(i as u16)),
                dport: Some(PortRange::new(i as u16 * 10, i as u16 * 10 + 5).expect("dport")),
                ..RuleConfig::any(Action::Allow)
            }
        })
        .collect();
    let index = RuleIndex::new(&rules);
    let bound = 4 * (2 * n + 1) * n.div_ceil(64) * 8 + 2 * 65_536 * 4 + 256 * 4 + 64 * 1024;
    assert!(index.bytes() <= bound, "{} > {bound}", index.bytes());
    assert!(index.bytes() < 2 << 20, "{}", index.bytes());
}

// Random rule sets drawn from a small address and port space, so that rules
// overlap and packets hit them.

const V4_NETS: [[u8; 4]; 3] = [[10, 0, 0, 0], [10, 1, 0, 0], [192, 168, 0, 0]];
const V4_LENS: [u8; 10] = [0, 8, 15, 16, 20, 24, 28, 30, 31, 32];
const V6_LENS: [u8; 9] = [0, 16, 32, 33, 48, 64, 120, 127, 128];

fn v4_addr() -> impl Strategy<Value = u128> {
    (0..V4_NETS.len(), 0..4u8, any::<u8>()).prop_map(|(net, c, d)| {
        let [a, b, ..] = V4_NETS[net];
        v4([a, b, c, d])
    })
}

fn v6_addr() -> impl Strategy<Value = u128> {
    (0..3u16, 0..4u16, any::<u8>()).prop_map(|(net, host, low)| {
        v6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            net,
            0,
            0,
            0,
            host,
            u16::from(low),
        ))
    })
}

fn masked_prefix(v6: bool, addr: u128, len: u8) -> IpPrefix {
    let bits = if v6 { 128 } else { 32 };
    let host = u32::from(bits - len);
    let mask = u128::MAX.checked_shr(128 - host).unwrap_or(0);
    let net = addr & !mask;
    let ip: IpAddr = if v6 {
        Ipv6Addr::from(net).into()
    } else {
        Ipv4Addr::from(net as u32).into()
    };
    IpPrefix::new(ip, len).expect("masked prefix")
}

fn prefix_of(v6: bool) -> BoxedStrategy<IpPrefix> {
    if v6 {
        (v6_addr(), 0..V6_LENS.len())
            .prop_map(|(a, l)| masked_prefix(true, a, V6_LENS[l]))
            .boxed()
    } else {
        (v4_addr(), 0..V4_LENS.len())
            .prop_map(|(a, l)| masked_prefix(false, a, V4_LENS[l]))
            .boxed()
    }
}

fn port_range() -> impl Strategy<Value = PortRange> {
    prop_oneof![
        4 => (0..40u16).prop_map(PortRange::single),
        3 => (0..40u16, 0..15u16).prop_map(|(lo, w)| PortRange::new(lo, lo + w).expect("range")),
        1 => Just(PortRange::new(0, u16::MAX).expect("range")),
        1 => Just(PortRange::new(30, u16::MAX).expect("range")),
    ]
}

fn rule() -> impl Strategy<Value = RuleConfig> {
    let family = prop_oneof![Just(None), Just(Some(false)), Just(Some(true))];
    family
        .prop_flat_map(|family| {
            let prefixes = match family {
                Some(v6) => (
                    proptest::option::of(prefix_of(v6)),
                    proptest::option::of(prefix_of(v6)),
                )
                    .boxed(),
                None => Just((None, None)).boxed(),
            };
            (
                Just(family),
                prefixes,
                proptest::option::weighted(
                    0.7,
                    prop_oneof![Just(6u8), Just(17), Just(1), Just(47)],
                ),
                proptest::option::weighted(0.3, port_range()),
                proptest::option::weighted(0.5, port_range()),
                proptest::option::weighted(0.15, 1..4u16),
                any::<bool>(),
            )
        })
        .prop_map(|(family, (src, dst), proto, sport, dport, vlan, allow)| {
            // Keep the rule valid: ICMP by family, ports only with TCP/UDP.
            let proto = proto.map(|p| match (p, family) {
                (1, Some(true)) => Proto::ICMPV6,
                (p, _) => Proto(p),
            });
            let ports_ok = proto.is_none_or(Proto::has_ports);
            RuleConfig {
                action: if allow { Action::Allow } else { Action::Deny },
                src,
                dst,
                proto,
                sport: sport.filter(|_| ports_ok),
                dport: dport.filter(|_| ports_ok),
                vlan: vlan.map(|v| VlanId::new(v).expect("vlan")),
            }
        })
}

fn packet() -> impl Strategy<Value = Fields> {
    any::<bool>()
        .prop_flat_map(|v6| {
            let addr = if v6 {
                v6_addr().boxed()
            } else {
                v4_addr().boxed()
            };
            (
                Just(v6),
                addr.clone(),
                addr,
                prop_oneof![Just(6u8), Just(17), Just(1), Just(58), Just(47), Just(0)],
                (0..50u16, 0..50u16),
                proptest::bool::weighted(0.1),
                proptest::option::weighted(0.2, 0..5u16),
            )
        })
        .prop_map(|(v6, src, dst, proto, ports, fragment, vlan)| {
            let has_ports = (proto == 6 || proto == 17) && !fragment;
            Fields {
                v6,
                src,
                dst,
                proto,
                ports: has_ports.then_some(ports),
                vlan,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// 1000 random rules, 300 random packets: the index finds the same
    /// first rule as trying them in order.
    #[test]
    fn index_agrees_with_linear_reference(
        rules in proptest::collection::vec(rule(), 1000),
        packets in proptest::collection::vec(packet(), 300),
    ) {
        FirewallConfig { rules: rules.clone(), ..FirewallConfig::default() }
            .validate()
            .expect("generated rules are valid");
        let index = RuleIndex::new(&rules);
        let mut matched = 0;
        for f in &packets {
            let want = reference(&rules, f);
            prop_assert_eq!(index.lookup(f), want, "{:?}", f);
            matched += usize::from(want.is_some());
        }
        // The generator is worth something only if packets do match.
        prop_assert!(matched > 0);
    }
}
