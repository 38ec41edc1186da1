//! Chains classified by VLAN, through real NF processes.

#[path = "common/server.rs"]
mod server;

use nfhost::dataplane::counters::Drop;
use nfhost::dataplane::engine::{ChainEgress, EngineConfig, Isolation, WireConfig};
use nfhost::dataplane::r#gen::GenConfig;
use nfhost::dataplane::runner::{NfSpec, Runner};
use nfhost::nic::{VfId, VlanTag, WireMatch};
use server::wait_until;

fn runner(vlans: Vec<u16>) -> Runner {
    runner_with(GenConfig {
        rate_pps: 20_000,
        vlans,
        ..Default::default()
    })
}

fn runner_with(wire: GenConfig) -> Runner {
    let config = EngineConfig {
        num_vfs: 8,
        wire: WireConfig::Gen(wire),
        ..Default::default()
    };
    Runner::start(config, env!("CARGO_BIN_EXE_nfhost").into()).expect("engine starts")
}

/// Clients on VLAN 100, servers on VLAN 200, each side its own source MAC; twice as
/// many frames from the clients, so that "each frame leaves on the other side" and
/// "each frame goes back where it came from" give different counts.
fn two_sides() -> Runner {
    runner_with(GenConfig {
        rate_pps: 20_000,
        vlans: vec![100, 100, 200],
        src_mac_per_vlan: true,
        ..Default::default()
    })
}

fn tag(vid: u16) -> VlanTag {
    VlanTag { vid, pcp: 0 }
}

const CLIENT_SIDE: WireMatch = WireMatch {
    vlan: Some(100),
    dst: None,
};

/// Regression: tagged frames entering a chain used to reach the NF still tagged, and
/// the NF's forwarded frames were then dropped by VLAN anti-spoof on the hop.
#[test]
fn a_vlan_classified_chain_carries_traffic_and_retags_it() {
    for isolation in [Isolation::Shared, Isolation::Strict] {
        let mut r = runner(vec![100]);
        let hops = [VfId(0), VfId(1)];
        r.run_chain(
            &hops,
            &[NfSpec::new("mon", "monitor"), NfSpec::new("fwd", "l2fwd")],
            isolation,
            WireMatch {
                vlan: Some(100),
                dst: None,
            },
            ChainEgress::OneWay(Some(VlanTag { vid: 200, pcp: 0 })),
        )
        .expect("chain runs");
        let c = r.engine().counters().clone();
        wait_until("1000 frames out of the chain", 10, || {
            c.wire.tx_packets.get() >= 1000
        });
        for hop in hops {
            let s = c.vf(hop).snapshot();
            assert_eq!(
                s.drop_count(Drop::Vlan),
                0,
                "{isolation:?}: {hop} dropped by VLAN"
            );
            assert_eq!(
                s.drop_count(Drop::Spoof),
                0,
                "{isolation:?}: {hop} dropped as spoofed"
            );
        }
        // The NF saw untagged frames: the port VLAN was stripped on the way in.
        let vlan = r.engine().vf(VfId(0)).map(|v| v.admin.vlan).expect("vf0");
        assert_eq!(vlan, 100);
        r.stop();
    }
}

/// Two chains on two VLANs share the wire without seeing each other's traffic.
#[test]
fn chains_on_different_vlans_stay_apart() {
    let mut r = runner(vec![100, 300]);
    let classify = |vlan| WireMatch {
        vlan: Some(vlan),
        dst: None,
    };
    r.run_chain(
        &[VfId(0)],
        &[NfSpec::new("a", "l2fwd")],
        Isolation::Strict,
        classify(100),
        ChainEgress::OneWay(None),
    )
    .expect("chain a");
    r.run_chain(
        &[VfId(1)],
        &[NfSpec::new("b", "l2fwd")],
        Isolation::Strict,
        classify(300),
        ChainEgress::OneWay(None),
    )
    .expect("chain b");
    let c = r.engine().counters().clone();
    wait_until("both chains forwarding", 10, || {
        c.vf(VfId(0)).tx_packets.get() > 500 && c.vf(VfId(1)).tx_packets.get() > 500
    });
    // Each VF got about half the traffic, none of it the other VLAN's.
    let (a, b) = (c.vf(VfId(0)).snapshot(), c.vf(VfId(1)).snapshot());
    let total = c.wire.rx_packets.get();
    assert!(a.rx_packets + b.rx_packets <= total);
    for s in [a, b] {
        assert_eq!(s.drop_count(Drop::Vlan), 0);
    }
    r.stop();
}

/// NF on a stick: one chain carries both directions through the same NFs. Frames of
/// VLAN 100 leave tagged 200, frames of VLAN 200 (entering the same first hop) leave
/// tagged 100, nothing leaves anywhere else, and no frame is lost for want of a
/// learned source.
#[test]
fn a_two_way_chain_carries_both_directions_through_the_same_nfs() {
    for isolation in [Isolation::Strict, Isolation::Shared] {
        let mut r = two_sides();
        let hops = [VfId(0), VfId(1)];
        // The forwarder must keep the source MAC: it is what says which way.
        let keep_macs = NfSpec {
            config: r#"{"mac_rewrite":"none"}"#.into(),
            ..NfSpec::new("fwd", "l2fwd")
        };
        r.run_chain(
            &hops,
            &[NfSpec::new("mon", "monitor"), keep_macs],
            isolation,
            CLIENT_SIDE,
            ChainEgress::TwoWay(tag(200)),
        )
        .expect("chain runs");
        let c = r.engine().counters().clone();
        wait_until("3000 frames out of the chain", 20, || {
            c.wire.tx_packets.get() >= 3000
        });
        // Frames generated before the chain was installed had nowhere to go.
        let unrouted = c.wire.drops(Drop::NoRoute);
        // Read on the engine thread, between two polls: one consistent moment.
        let w = r.engine().read_counters().expect("engine").wire;
        let (out, to_servers, to_clients) =
            (w.tx_packets, w.tx_vlan_packets(200), w.tx_vlan_packets(100));
        assert_eq!(
            out,
            to_servers + to_clients,
            "{isolation:?}: {out} out, {to_servers} on 200, {to_clients} on 100: \
             every frame leaves on one of the two sides"
        );
        // 2:1, as generated: client frames went to the servers, server frames back.
        let ratio = to_servers as f64 / to_clients.max(1) as f64;
        assert!(
            (1.8..2.2).contains(&ratio),
            "{isolation:?}: {to_servers} to VLAN 200, {to_clients} to VLAN 100"
        );
        // Both directions went through both NFs.
        for hop in hops {
            let s = c.vf(hop).snapshot();
            assert!(s.rx_packets >= out, "{isolation:?}: {hop} saw {s:?}");
            for reason in [Drop::Vlan, Drop::Spoof, Drop::Unlearned] {
                assert_eq!(s.drop_count(reason), 0, "{isolation:?}: {hop} {reason:?}");
            }
        }
        let more = c.wire.tx_packets.get() + 1000;
        wait_until("1000 more frames out", 20, || {
            c.wire.tx_packets.get() >= more
        });
        assert_eq!(
            c.wire.drops(Drop::NoRoute),
            unrouted,
            "VLAN 200 is steered too"
        );
        r.stop();
    }
}

/// A frame whose source MAC was never seen on the wire cannot be placed on either
/// side: l2fwd's default MAC swap sends frames from the generator's destination MAC,
/// and the last hop's transmits are dropped and counted as `unlearned`.
#[test]
fn a_two_way_chain_drops_and_counts_frames_from_unlearned_sources() {
    let mut r = two_sides();
    r.run_chain(
        &[VfId(0)],
        &[NfSpec::new("swap", "l2fwd")],
        Isolation::Strict,
        CLIENT_SIDE,
        ChainEgress::TwoWay(tag(200)),
    )
    .expect("chain runs");
    let c = r.engine().counters().clone();
    wait_until("500 frames dropped as unlearned", 20, || {
        c.vf(VfId(0)).drops(Drop::Unlearned) >= 500
    });
    assert_eq!(c.wire.tx_packets.get(), 0, "nothing guessed its way out");
    r.stop();
}

/// The engine refuses a two-way chain whose classifier is not one VLAN alone, other
/// than the return VLAN, leaving nothing steered; a good one, taken down as the
/// control plane does, leaves nothing either: both classifiers and what was learned
/// are gone.
#[test]
fn a_two_way_chain_is_refused_without_a_plain_vlan_classifier_and_leaves_nothing() {
    let r = two_sides();
    let refused = {
        let engine = r.engine();
        {
            let with_mac = WireMatch {
                vlan: Some(100),
                dst: Some(nfhost::nic::MacAddr([0x02, 0, 0, 0, 0xff, 0x01])),
            };
            let bad = [
                (with_mac, tag(200)),
                (CLIENT_SIDE, tag(100)),
                (
                    WireMatch {
                        vlan: None,
                        dst: None,
                    },
                    tag(200),
                ),
            ];
            let refused = bad
                .iter()
                .filter(|(m, back)| {
                    engine
                        .install_chain(
                            &[VfId(0)],
                            Isolation::Strict,
                            *m,
                            ChainEgress::TwoWay(*back),
                        )
                        .is_err()
                })
                .count();
            let nic = engine.snapshot().expect("engine").nic;
            (
                refused,
                nic.veb().wire_rules().to_vec(),
                nic.veb().tx_rule(VfId(0)),
            )
        }
    };
    assert_eq!(refused, (3, vec![], None));
    r.engine()
        .install_chain(
            &[VfId(0), VfId(1)],
            Isolation::Strict,
            CLIENT_SIDE,
            ChainEgress::TwoWay(tag(200)),
        )
        .expect("installs");
    let installed = r
        .engine()
        .snapshot()
        .expect("engine")
        .nic
        .veb()
        .wire_rules()
        .len();
    assert_eq!(installed, 2, "both sides steered");
    // The return VLAN is taken like a classifier: a chain on VLAN 200 is refused, and
    // its hop is left as it was.
    let clash = {
        let server_side = WireMatch {
            vlan: Some(200),
            dst: None,
        };
        let refused = r
            .engine()
            .install_chain(
                &[VfId(2)],
                Isolation::Strict,
                server_side,
                ChainEgress::OneWay(None),
            )
            .is_err();
        let nic = r.engine().snapshot().expect("engine").nic;
        let vf2 = nic
            .vf(VfId(2))
            .map(|v| (v.admin().vlan, v.admin().spoof_check));
        (refused, nic.veb().tx_rule(VfId(2)), vf2.ok())
    };
    assert_eq!(clash, (true, None, Some((0, true))));
    // No NF is attached, so the frames steered in go no further; their sources are
    // learned all the same: the client's on VLAN 100, the server's on 200.
    wait_until("both sides learned", 10, || {
        r.engine()
            .snapshot()
            .expect("engine")
            .nic
            .veb()
            .learn_stats()
            .entries
            == 2
    });
    r.engine()
        .remove_chain(&[VfId(0), VfId(1)])
        .expect("engine");
    let torn_down = {
        let nic = r.engine().snapshot().expect("engine").nic;
        let veb = nic.veb();
        (
            veb.wire_rules().len(),
            veb.tx_rule(VfId(1)),
            veb.learn_stats().entries,
        )
    };
    assert_eq!(torn_down, (0, None, 0));
    r.stop();
}
