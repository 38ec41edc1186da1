//! The data path at a modest paced rate, counted rather than timed: no frame is
//! lost while the NFs sleep between batches (interrupt moderation gives them
//! batches, so they wake far less often than frames arrive), and VFs without
//! traffic are not visited by the engine at all, however many frames pass others.

#[path = "common/server.rs"]
mod server;

use nfhost::dataplane::counters::Counters;
use nfhost::dataplane::engine::{ChainEgress, EngineConfig, Isolation, WireConfig};
use nfhost::dataplane::r#gen::GenConfig;
use nfhost::dataplane::runner::{NfSpec, Runner};
use nfhost::nic::{VfId, VfUpdate, VlanTag, WireMatch};
use server::wait_until;

/// The offered rate: a few frames per moderation interval, far below what the chain
/// carries flat out even in a debug build.
const RATE_PPS: u64 = 100_000;
const CHAIN: [VfId; 2] = [VfId(0), VfId(1)];
const IDLE: [VfId; 4] = [VfId(4), VfId(5), VfId(6), VfId(7)];

/// The runtime counters an NF reports: (frames received, wake-ups).
fn runtime_counts(r: &Runner, vf: VfId) -> Option<(u64, u64)> {
    let report = r.engine().view().report(vf)?;
    let json: serde_json::Value = serde_json::from_str(&report).ok()?;
    let runtime = json.get("runtime")?;
    Some((
        runtime.get("rx")?.as_u64()?,
        runtime.get("wakeups")?.as_u64()?,
    ))
}

fn drops(c: &Counters) -> u64 {
    c.wire.total_drops()
        + CHAIN
            .iter()
            .chain(&IDLE)
            .map(|v| c.vf(*v).snapshot().total_drops())
            .sum::<u64>()
}

#[test]
fn a_paced_chain_loses_nothing_while_its_nfs_sleep_and_idle_vfs_are_never_visited() {
    let traffic = GenConfig {
        rate_pps: RATE_PPS,
        vlans: vec![100],
        ..Default::default()
    };
    let dst = traffic.dst_mac;
    let config = EngineConfig {
        num_vfs: 8,
        wire: WireConfig::Gen(traffic),
        ..Default::default()
    };
    let mut r = Runner::start(config, env!("CARGO_BIN_EXE_nfhost").into()).expect("engine");
    // Idle NFs first: attached, enabled, and never sent a frame.
    for (i, vf) in IDLE.iter().enumerate() {
        r.run_nf(*vf, &NfSpec::new(&format!("idle{i}"), "l2fwd"))
            .expect("idle NF");
    }
    // Rings of 4096: 20 ms of frames at this rate, room for a debug-build NF that
    // a busy CI machine leaves off the CPU for a few milliseconds.
    for vf in CHAIN {
        let rings = VfUpdate {
            rx_ring: Some(4096),
            tx_ring: Some(4096),
            ..Default::default()
        };
        r.engine().update_vf(vf, rings, false).expect("ring sizes");
    }
    r.run_chain(
        &CHAIN,
        &[NfSpec::new("mon", "monitor"), NfSpec::new("fwd", "l2fwd")],
        Isolation::Shared,
        WireMatch {
            vlan: Some(100),
            dst: Some(dst),
        },
        ChainEgress::OneWay(Some(VlanTag { vid: 200, pcp: 0 })),
    )
    .expect("chain");
    let c = r.engine().counters().clone();
    // Past the start (frames that came before the NFs attached are dropped as
    // `link_down`), and until both hops have reported.
    wait_until("traffic through the chain", 20, || {
        c.wire.tx_packets.get() >= 10_000
    });
    wait_until("reports from both hops", 10, || {
        CHAIN.iter().all(|v| runtime_counts(&r, *v).is_some())
    });

    let start = CHAIN.map(|v| runtime_counts(&r, v).expect("report"));
    let (sent0, out0, drops0) = (c.wire.rx_packets.get(), c.wire.tx_packets.get(), drops(&c));
    let idle0 = IDLE.map(|v| c.vf(v).snapshot().visits);
    // Two more reports of each hop (they come once a second while traffic flows),
    // and a second of frames on the wire: a report may be up to a second older
    // than the wire counters read beside it (the first comes on the NF's first
    // pass), so the window is closed on both clocks.
    wait_until("two more reports", 20, || {
        let reported = CHAIN.iter().zip(&start).all(|(v, (rx0, _))| {
            runtime_counts(&r, *v).is_some_and(|(rx, _)| rx > *rx0 + RATE_PPS)
        });
        reported && c.wire.rx_packets.get() >= sent0 + RATE_PPS
    });
    let end = CHAIN.map(|v| runtime_counts(&r, v).expect("report"));
    let (sent, out, dropped) = (
        c.wire.rx_packets.get() - sent0,
        c.wire.tx_packets.get() - out0,
        drops(&c) - drops0,
    );
    let idle = IDLE.map(|v| c.vf(v).snapshot().visits);
    let hops = CHAIN.map(|v| c.vf(v).snapshot());
    r.stop();

    assert_eq!(
        dropped, 0,
        "frames dropped at {RATE_PPS} pps; the hops now: {hops:#?}"
    );
    // What entered during the window came out, but for what was in flight at its
    // edges (at most the rings of the two hops).
    assert!(sent >= RATE_PPS, "{sent} frames offered");
    assert!(sent.abs_diff(out) <= 2 * 4096, "{sent} in, {out} out");
    for ((vf, (rx0, wakeups0)), (rx, wakeups)) in CHAIN.iter().zip(start).zip(end) {
        let (frames, wakeups) = (rx - rx0, wakeups - wakeups0);
        assert!(frames > RATE_PPS, "{vf}: {frames} frames");
        // Moderation: the NF is woken once per batch, not once per frame.
        assert!(
            wakeups * 2 <= frames,
            "{vf}: {wakeups} wake-ups for {frames} frames"
        );
    }
    // The engine never looked at the idle VFs while the chain carried traffic.
    assert_eq!(idle, idle0, "visits of idle VFs {IDLE:?}");
}
