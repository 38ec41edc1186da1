//! `nfhost bench`: the real engine and real NF processes on the traffic wire, as fast as
//! the machine goes, with 64-byte frames. Prints packets per second through one NF
//! and through 3-NF chains (shared, with the NFs feeding each other directly and,
//! beside it, with every hop handed over by the engine; and strict), the NIC's copied
//! bytes per packet, CPU
//! seconds per million packets, and the CPU use of idle attached NFs; DPDK's memif NF
//! on the same machine beside the 1-NF figure ([`dpdk`]); then the demo chain at fixed
//! offered loads, at 200 kpps beside 60 idle NFs, and at 200 kpps with the engine
//! handing every hop over ([`load_points`]).

mod dpdk;
mod load_points;

use std::time::{Duration, Instant};

use clap::Args as ClapArgs;

use nfhost::dataplane::counters::Counters;
use nfhost::dataplane::engine::{ChainEgress, EngineConfig, Isolation, WireConfig};
use nfhost::dataplane::r#gen::GenConfig;
use nfhost::dataplane::nf_process::{current_exe, process_cpu_time};
use nfhost::dataplane::runner::{NfSpec, Runner};
use nfhost::nic::{VfId, WireMatch};

/// Options of `nfhost bench`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Length of each measurement, in seconds.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// NF kind used for every hop.
    #[arg(long, default_value = "l2fwd")]
    kind: String,
}

/// One throughput measurement.
#[derive(Debug, Default, Clone, Copy)]
struct Run {
    mpps: f64,
    copied_per_packet: f64,
    cpu_seconds_per_mpkt: f64,
    delivered: u64,
    generated: u64,
}

fn wire_tx(c: &Counters) -> u64 {
    c.wire.tx_packets.get()
}

fn copied(c: &Counters, vfs: &[VfId]) -> u64 {
    vfs.iter().map(|v| c.vf(*v).copied_bytes.get()).sum()
}

fn cpu_now(runner: &Runner) -> Duration {
    let own = process_cpu_time(std::process::id()).unwrap_or_default();
    runner
        .processes()
        .filter_map(|(_, p)| p.cpu_time())
        .fold(own, |a, b| a + b)
}

fn measure_chain(
    hops: usize,
    isolation: Isolation,
    kind: &str,
    seconds: f64,
) -> Result<Run, Box<dyn std::error::Error>> {
    measure(
        hops,
        isolation,
        &NfSpec::new("hop", kind),
        GenConfig::default(),
        seconds,
        true,
    )
}

/// The config each kind is measured with alone: representative work, traffic passes.
fn bench_config(kind: &str) -> (String, GenConfig) {
    let traffic = GenConfig::default();
    match kind {
        // 1000 rules that traffic does not hit, then allow: every packet is looked up.
        "firewall" => {
            let rules: Vec<String> = (0..999)
                .map(|i| format!(r#"{{"action":"deny","proto":"tcp","dport":"{}"}}"#, 10_000 + i))
                .collect();
            (format!(r#"{{"default":"allow","rules":[{}]}}"#, rules.join(",")), traffic)
        }
        "nat" => (
            r#"{"inside":"10.0.0.0/8","pool":["203.0.113.1"],"port_range":"1024-65535"}"#.into(),
            traffic,
        ),
        "lb" => (
            r#"{"vip":"198.51.100.10:80","proto":"udp","backends":[{"addr":"10.0.1.1:8080"},{"addr":"10.0.1.2:8080"},{"addr":"10.0.1.3:8080"}]}"#.into(),
            GenConfig {
                dst: Some(([198, 51, 100, 10], 80)),
                ..traffic
            },
        ),
        // Far above what the machine can send: the policer does its work, drops nothing.
        "ratelimit" => (r#"{"rate":{"pps":1000000000},"burst":1000000}"#.into(), traffic),
        _ => (String::new(), traffic),
    }
}

/// One path at saturation; `direct_hops` as the engine's (ARCHITECTURE.md §4).
fn measure(
    hops: usize,
    isolation: Isolation,
    spec: &NfSpec,
    traffic: GenConfig,
    seconds: f64,
    direct_hops: bool,
) -> Result<Run, Box<dyn std::error::Error>> {
    let config = EngineConfig {
        num_vfs: 8,
        wire: WireConfig::Gen(traffic),
        direct_hops,
        ..Default::default()
    };
    let mut runner = Runner::start(config, current_exe()?)?;
    let vfs: Vec<VfId> = (0..hops as u16).map(VfId).collect();
    let nfs: Vec<NfSpec> = (0..hops)
        .map(|i| NfSpec {
            name: format!("{}{i}", spec.name),
            ..spec.clone()
        })
        .collect();
    let every_frame = WireMatch {
        vlan: None,
        dst: None,
    };
    runner.run_chain(
        &vfs,
        &nfs,
        isolation,
        every_frame,
        ChainEgress::OneWay(None),
    )?;
    let counters = runner.engine().counters().clone();
    std::thread::sleep(Duration::from_millis(500));
    let (p0, c0, g0, cpu0, t0) = (
        wire_tx(&counters),
        copied(&counters, &vfs),
        counters.wire.rx_packets.get(),
        cpu_now(&runner),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (p1, c1, g1, cpu1, t1) = (
        wire_tx(&counters),
        copied(&counters, &vfs),
        counters.wire.rx_packets.get(),
        cpu_now(&runner),
        Instant::now(),
    );
    runner.stop();
    let packets = (p1 - p0) as f64;
    let wall = (t1 - t0).as_secs_f64();
    Ok(Run {
        mpps: packets / wall / 1e6,
        copied_per_packet: if packets > 0.0 {
            (c1 - c0) as f64 / packets
        } else {
            0.0
        },
        cpu_seconds_per_mpkt: if packets > 0.0 {
            (cpu1 - cpu0).as_secs_f64() / (packets / 1e6)
        } else {
            0.0
        },
        delivered: p1 - p0,
        generated: g1 - g0,
    })
}

/// CPU use, in percent of one core, of `n` attached NFs with no traffic.
fn measure_idle(n: u16, kind: &str, seconds: f64) -> Result<f64, Box<dyn std::error::Error>> {
    let config = EngineConfig {
        num_vfs: n,
        wire: WireConfig::None,
        ..Default::default()
    };
    let mut runner = Runner::start(config, current_exe()?)?;
    for i in 0..n {
        runner.run_nf(VfId(i), &NfSpec::new(&format!("idle{i}"), kind))?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let nf_cpu = |r: &Runner| -> Duration { r.processes().filter_map(|(_, p)| p.cpu_time()).sum() };
    let (c0, t0) = (nf_cpu(&runner), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (c1, t1) = (nf_cpu(&runner), Instant::now());
    runner.stop();
    Ok((c1 - c0).as_secs_f64() / (t1 - t0).as_secs_f64() * 100.0)
}

/// Runs every measurement and prints them.
pub fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    if !(0.1..=600.0).contains(&args.seconds) {
        return Err(format!("--seconds {} is out of range 0.1-600", args.seconds).into());
    }
    let log = |what: &str| {
        if !args.json {
            eprintln!("bench: {what} ({:.1} s)…", args.seconds);
        }
    };
    log("1 NF");
    let single = measure_chain(1, Isolation::Strict, &args.kind, args.seconds)?;
    // The peer, right after: DPDK's memif NF on the same machine in the same run.
    let (dpdk, on_vf) = match nfhost::testpmd::find() {
        Some(exe) => {
            log("DPDK testpmd as a memif NF");
            let dpdk = dpdk::measure(&exe, args.seconds);
            log("DPDK testpmd as a memif NF on an nfhost VF");
            (
                Some(dpdk),
                Some(dpdk::measure_on_nfhost(&exe, args.seconds)),
            )
        }
        None => (None, None),
    };
    let json_mpps = |r: &Option<Result<f64, String>>| match r {
        Some(Ok(mpps)) => format!("{mpps:.3}"),
        _ => "null".to_owned(),
    };
    let (dpdk_mpps, on_vf_mpps) = (json_mpps(&dpdk), json_mpps(&on_vf));
    log("3-NF chain, shared");
    let shared = measure_chain(3, Isolation::Shared, &args.kind, args.seconds)?;
    log("3-NF chain, shared, every hop handed over by the engine");
    let shared_engine = measure(
        3,
        Isolation::Shared,
        &NfSpec::new("hop", &args.kind),
        GenConfig::default(),
        args.seconds,
        false,
    )?;
    log("3-NF chain, strict");
    let strict = measure_chain(3, Isolation::Strict, &args.kind, args.seconds)?;
    let idle_seconds = args.seconds.max(5.0);
    if !args.json {
        eprintln!("bench: 8 idle NFs ({idle_seconds:.1} s)…");
    }
    let idle = measure_idle(8, &args.kind, idle_seconds)?;
    let mut per_nf = Vec::new();
    for kind in nfhost::nf_kinds::KINDS {
        log(&format!("{kind} alone"));
        let (config, traffic) = bench_config(kind);
        let spec = NfSpec {
            name: (*kind).to_owned(),
            kind: (*kind).to_owned(),
            config,
            binary: None,
        };
        per_nf.push((
            *kind,
            measure(1, Isolation::Strict, &spec, traffic, args.seconds, true)?,
        ));
    }
    let mut points = Vec::new();
    for rate in load_points::RATES {
        log(&format!("demo chain at {rate} pps"));
        points.push(load_points::measure(rate, 0, true, args.seconds)?);
    }
    // The same 200 kpps beside a crowd of idle NFs: the engine should not notice them.
    let crowd = load_points::CROWD;
    log(&format!("demo chain at 200000 pps beside {crowd} idle NFs"));
    points.push(load_points::measure(200_000, crowd, true, args.seconds)?);
    // And 200 kpps with every hop handed over by the engine, for comparison.
    log("demo chain at 200000 pps, hops by the engine");
    points.push(load_points::measure(200_000, 0, false, args.seconds)?);
    let points_json: Vec<String> = points.iter().map(load_points::LoadPoint::json).collect();
    let per_nf_json: Vec<String> = per_nf
        .iter()
        .map(|(k, r)| format!("\"{k}\":{:.3}", r.mpps))
        .collect();

    if args.json {
        println!(
            "{{\"frame_bytes\":64,\"seconds\":{},\"single_nf_mpps\":{:.3},\"chain3_shared_mpps\":{:.3},\"chain3_strict_mpps\":{:.3},\"chain3_shared_engine_hop_mpps\":{:.3},\"copied_bytes_per_packet_shared\":{:.2},\"copied_bytes_per_packet_strict\":{:.2},\"cpu_seconds_per_mpkt\":{:.3},\"idle_cpu_percent\":{:.3},\"nf_mpps\":{{{}}},\"dpdk_memif_nf_mpps\":{},\"dpdk_memif_nf_on_vf_mpps\":{},\"load_points\":[{}]}}",
            args.seconds,
            single.mpps,
            shared.mpps,
            strict.mpps,
            shared_engine.mpps,
            shared.copied_per_packet,
            strict.copied_per_packet,
            single.cpu_seconds_per_mpkt,
            idle,
            per_nf_json.join(","),
            dpdk_mpps,
            on_vf_mpps,
            points_json.join(",")
        );
        return Ok(());
    }
    println!(
        "nfhost bench: 64-byte frames, gen wire as fast as possible, NF kind {}",
        args.kind
    );
    println!(
        "{:<22} {:>10} {:>14} {:>16} {:>12}",
        "path", "Mpps", "copied B/pkt", "CPU s / Mpkt", "delivered"
    );
    for (name, r) in [
        ("1 NF", single),
        ("3-NF chain, shared", shared),
        ("  hops by the engine", shared_engine),
        ("3-NF chain, strict", strict),
    ] {
        println!(
            "{:<22} {:>10.3} {:>14.2} {:>16.3} {:>11.1}%",
            name,
            r.mpps,
            r.copied_per_packet,
            r.cpu_seconds_per_mpkt,
            if r.generated > 0 {
                r.delivered as f64 / r.generated as f64 * 100.0
            } else {
                0.0
            }
        );
    }
    match &dpdk {
        Some(Ok(mpps)) => println!(
            "DPDK memif NF (testpmd macswap, testpmd flowgen generator): {mpps:.3} Mpps; 1 NF / DPDK = {:.2}",
            single.mpps / mpps
        ),
        Some(Err(e)) => println!("DPDK memif NF: not measured: {e}"),
        None => println!(
            "DPDK memif NF: not measured: dpdk-testpmd not found (Debian: dpdk-dev, librte-net-memif23)"
        ),
    }
    match (&on_vf, &dpdk) {
        (Some(Ok(on_vf)), Some(Ok(mpps))) => println!(
            "the same testpmd NF on an nfhost VF (memif client, gen wire): {on_vf:.3} Mpps; / testpmd-to-testpmd = {:.2}",
            on_vf / mpps
        ),
        (Some(Ok(on_vf)), _) => println!(
            "the same testpmd NF on an nfhost VF (memif client, gen wire): {on_vf:.3} Mpps"
        ),
        (Some(Err(e)), _) => println!("testpmd on an nfhost VF: not measured: {e}"),
        (None, _) => {}
    }
    println!("8 idle NFs: {idle:.3}% of one core together (over {idle_seconds:.1} s)");
    println!("\neach NF alone (64-byte frames, representative config):");
    for (kind, r) in &per_nf {
        println!(
            "  {kind:<10} {:>8.3} Mpps  {:>8.3} CPU s / Mpkt",
            r.mpps, r.cpu_seconds_per_mpkt
        );
    }
    print!("{}", load_points::table(&points, args.seconds));
    Ok(())
}
