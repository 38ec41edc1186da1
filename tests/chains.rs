//! Chains classified by VLAN, through real NF processes.

#[path = "common/server.rs"]
mod server;

use nfhost::dataplane::counters::Drop;
use nfhost::dataplane::engine::{EngineConfig, Isolation, WireConfig};
use nfhost::dataplane::r#gen::GenConfig;
use nfhost::dataplane::runner::{NfSpec, Runner};
use nfhost::nic::{VfId, VlanTag, WireMatch};
use server::wait_until;

fn runner(vlans: Vec<u16>) -> Runner {
    let config = EngineConfig {
        num_vfs: 8,
        wire: WireConfig::Gen(GenConfig {
            rate_pps: 20_000,
            vlans,
            ..Default::default()
        }),
        ..Default::default()
    };
    Runner::start(config, env!("CARGO_BIN_EXE_nfhost").into()).expect("engine starts")
}

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
            Some(VlanTag { vid: 200, pcp: 0 }),
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
        let vlan = r
            .engine()
            .call(|e| e.nic().vf(VfId(0)).map(|v| v.admin().vlan))
            .expect("engine")
            .expect("vf0");
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
        None,
    )
    .expect("chain a");
    r.run_chain(
        &[VfId(1)],
        &[NfSpec::new("b", "l2fwd")],
        Isolation::Strict,
        classify(300),
        None,
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
