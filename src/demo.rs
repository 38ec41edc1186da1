//! `nfhost demo`: the embedded default, live. The emulated NIC with 64 VFs, the gen
//! wire sending on VLAN 100 and 300, the chain `monitor → l2fwd` on VLAN 100 in real
//! NF processes, and a second NF alone on VLAN 300. Prints per-VF throughput every
//! second, then what the monitor saw.

use std::time::{Duration, Instant};

use clap::Args as ClapArgs;

use nfhost::dataplane::engine::{EngineConfig, Isolation, WireConfig};
use nfhost::dataplane::r#gen::GenConfig;
use nfhost::dataplane::nf_process::current_exe;
use nfhost::dataplane::runner::{NfSpec, Runner};
use nfhost::nic::{VfId, VlanTag, WireMatch};

/// Options of `nfhost demo`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// How long to run, in seconds (0 = until interrupted).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Generated packets per second (0 = as fast as possible).
    #[arg(long, default_value_t = 200_000)]
    rate: u64,
}

/// Runs the demo.
pub fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = EngineConfig {
        wire: WireConfig::Gen(GenConfig {
            rate_pps: args.rate,
            vlans: vec![100, 300],
            flows: 64,
            frame_size: 128,
            ..Default::default()
        }),
        ..Default::default()
    };
    println!(
        "nfhost demo: emulated NIC, 64 VFs, gen wire at {} pps on VLANs 100 and 300",
        args.rate
    );
    let mut runner = Runner::start(config, current_exe()?)?;
    let chain = [VfId(0), VfId(1)];
    runner.run_chain(
        &chain,
        &[NfSpec::new("mon", "monitor"), NfSpec::new("fwd", "l2fwd")],
        Isolation::Shared,
        WireMatch {
            vlan: Some(100),
            dst: None,
        },
        Some(VlanTag { vid: 200, pcp: 0 }),
    )?;
    println!("chain edge (shared): wire VLAN 100 → vf0 monitor → vf1 l2fwd → wire VLAN 200");
    runner.run_chain(
        &[VfId(2)],
        &[NfSpec::new("solo", "l2fwd")],
        Isolation::Strict,
        WireMatch {
            vlan: Some(300),
            dst: None,
        },
        None,
    )?;
    println!("chain solo (strict): wire VLAN 300 → vf2 l2fwd → wire\n");

    let counters = runner.engine().counters().clone();
    let vfs = [VfId(0), VfId(1), VfId(2)];
    let snap = || vfs.map(|v| counters.vf(v).snapshot());
    let mut last = snap();
    let mut last_wire = counters.wire.tx_packets.get();
    let started = Instant::now();
    println!(
        "{:>5}  {:>12} {:>12} {:>12}  {:>12}  {:>10}",
        "t (s)", "vf0 rx pps", "vf1 rx pps", "vf2 rx pps", "wire out pps", "copied B"
    );
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = snap();
        let wire = counters.wire.tx_packets.get();
        let rate = |i: usize| now[i].rx_packets - last[i].rx_packets;
        let copied: u64 = now.iter().map(|s| s.copied_bytes).sum();
        println!(
            "{:>5}  {:>12} {:>12} {:>12}  {:>12}  {:>10}",
            started.elapsed().as_secs(),
            rate(0),
            rate(1),
            rate(2),
            wire - last_wire,
            copied
        );
        last = now;
        last_wire = wire;
        if args.seconds != 0 && started.elapsed() >= Duration::from_secs(args.seconds) {
            break;
        }
    }
    let view = runner.engine().view().clone();
    if let Some(report) = view.report(VfId(0)) {
        println!("\nmonitor on vf0 reports: {report}");
    }
    let sink = view.sink();
    println!(
        "wire sink: {} packets back out; latency {}",
        sink.packets,
        sink.latency.map_or("n/a".to_owned(), |l| format!(
            "min {} µs, p50 ≤ {} µs, p99 ≤ {} µs",
            l.min_us, l.p50_us, l.p99_us
        ))
    );
    runner.stop();
    Ok(())
}
