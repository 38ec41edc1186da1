//! The demo chain at fixed offered loads: what a host pays at each rate, not only
//! flat out. For each rate, a fresh engine runs the README's demo chain
//! (`examples/edge.toml`: monitor → l2fwd, `shared`, wire VLAN 100 → 200, 128-byte
//! frames over 64 flows), paced by the `gen` wire, and the bench reads over the
//! measurement window: the CPU of this process (the engine and the generator),
//! the CPU of each NF process, the frames dropped anywhere (wire and VFs), and the
//! wire-to-wire latency the sink measured.

use std::time::{Duration, Instant};

use nfhost::dataplane::counters::Counters;
use nfhost::dataplane::engine::{ChainEgress, EngineConfig, Isolation, WireConfig};
use nfhost::dataplane::r#gen::GenConfig;
use nfhost::dataplane::nf_process::{current_exe, process_cpu_time};
use nfhost::dataplane::runner::{NfSpec, Runner};
use nfhost::nic::{VfId, VlanTag, WireMatch};

/// The offered loads, packets per second.
pub const RATES: [u64; 3] = [20_000, 200_000, 1_000_000];
/// Idle NFs attached beside the chain for the crowded load point (the PF's 64 VFs,
/// less the chain's two and two spare).
pub const CROWD: u16 = 60;

/// One offered load through the demo chain.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadPoint {
    /// Offered, packets per second.
    pub rate_pps: u64,
    /// Idle NFs attached beside the chain (no traffic reaches them).
    pub idle_nfs: u16,
    /// Whether the chain's NFs fed each other directly (else the engine handed
    /// every frame over).
    pub direct_hops: bool,
    /// Frames the generator sent in the window.
    pub offered: u64,
    /// Frames that came back out to the wire in the window.
    pub delivered: u64,
    /// Frames dropped in the window, for any reason, on the wire or a VF.
    pub dropped: u64,
    /// This process (engine thread, generator, sink), percent of one core.
    pub engine_cpu_percent: f64,
    /// Each NF process in hop order, percent of one core.
    pub nf_cpu_percent: Vec<f64>,
    /// Wire-to-wire latency since the chain came up (log2-bucket estimates: at
    /// most twice the true value).
    pub p50_us: u64,
    /// As `p50_us`.
    pub p99_us: u64,
}

impl LoadPoint {
    /// The JSON object `nfhost bench --json` prints under `load_points`.
    pub fn json(&self) -> String {
        let nf: Vec<String> = self
            .nf_cpu_percent
            .iter()
            .map(|c| format!("{c:.2}"))
            .collect();
        format!(
            "{{\"rate_pps\":{},\"idle_nfs\":{},\"direct_hops\":{},\"offered\":{},\"delivered\":{},\"dropped\":{},\"engine_cpu_percent\":{:.2},\"nf_cpu_percent\":[{}],\"p50_us\":{},\"p99_us\":{}}}",
            self.rate_pps,
            self.idle_nfs,
            self.direct_hops,
            self.offered,
            self.delivered,
            self.dropped,
            self.engine_cpu_percent,
            nf.join(","),
            self.p50_us,
            self.p99_us
        )
    }
}

fn drops(c: &Counters, vfs: &[VfId]) -> u64 {
    c.wire.total_drops()
        + vfs
            .iter()
            .map(|v| c.vf(*v).snapshot().total_drops())
            .sum::<u64>()
}

/// Runs the demo chain at `rate_pps`, beside `idle_nfs` attached NFs that get no
/// traffic, its NFs feeding each other directly or not (`direct_hops`), and
/// measures `seconds` of it.
pub fn measure(
    rate_pps: u64,
    idle_nfs: u16,
    direct_hops: bool,
    seconds: f64,
) -> Result<LoadPoint, Box<dyn std::error::Error>> {
    let traffic = GenConfig {
        rate_pps,
        frame_size: 128,
        vlans: vec![100],
        flows: 64,
        ..GenConfig::default()
    };
    let dst = traffic.dst_mac;
    let config = EngineConfig {
        num_vfs: (idle_nfs + 4).max(8),
        wire: WireConfig::Gen(traffic),
        direct_hops,
        ..Default::default()
    };
    let mut runner = Runner::start(config, current_exe()?)?;
    let vfs = [VfId(0), VfId(1)];
    for i in 0..idle_nfs {
        runner.run_nf(VfId(4 + i), &NfSpec::new(&format!("idle{i}"), "l2fwd"))?;
    }
    let nfs = [
        NfSpec {
            name: "mon".into(),
            kind: "monitor".into(),
            config: r#"{"top":5}"#.into(),
            binary: None,
        },
        NfSpec::new("fwd", "l2fwd"),
    ];
    runner.run_chain(
        &vfs,
        &nfs,
        Isolation::Shared,
        WireMatch {
            vlan: Some(100),
            dst: Some(dst),
        },
        ChainEgress::OneWay(Some(VlanTag { vid: 200, pcp: 0 })),
    )?;
    let counters = runner.engine().counters().clone();
    let nf_cpu = |r: &Runner| -> Vec<Duration> {
        r.processes()
            .filter(|(vf, _)| vfs.contains(vf))
            .map(|(_, p)| p.cpu_time().unwrap_or_default())
            .collect()
    };
    let own = || process_cpu_time(std::process::id()).unwrap_or_default();
    // Generated, delivered, dropped, own CPU, each NF's CPU, when.
    let sample = |r: &Runner| {
        (
            counters.wire.rx_packets.get(),
            counters.wire.tx_packets.get(),
            drops(&counters, &vfs),
            own(),
            nf_cpu(r),
            Instant::now(),
        )
    };
    // Attach and first batches settle first.
    std::thread::sleep(Duration::from_millis(500));
    let (g0, d0, x0, e0, n0, t0) = sample(&runner);
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (g1, d1, x1, e1, n1, t1) = sample(&runner);
    let latency = runner.engine().view().sink().latency;
    runner.stop();
    let wall = (t1 - t0).as_secs_f64();
    let percent = |d: Duration| d.as_secs_f64() / wall * 100.0;
    Ok(LoadPoint {
        rate_pps,
        idle_nfs,
        direct_hops,
        offered: g1 - g0,
        delivered: d1 - d0,
        dropped: x1 - x0,
        engine_cpu_percent: percent(e1.saturating_sub(e0)),
        nf_cpu_percent: n1
            .iter()
            .zip(&n0)
            .map(|(b, a)| percent(b.saturating_sub(*a)))
            .collect(),
        p50_us: latency.map_or(0, |l| l.p50_us),
        p99_us: latency.map_or(0, |l| l.p99_us),
    })
}

/// The table `nfhost bench` prints for the load points.
pub fn table(points: &[LoadPoint], seconds: f64) -> String {
    let mut out = format!(
        "\ndemo chain (monitor -> l2fwd, shared, 128-byte frames) at fixed offered loads, {seconds:.1} s each (idle: NFs attached beside it without traffic; hops: the NFs feed each other directly, or the engine hands every frame over):\n"
    );
    out += &format!(
        "{:>10} {:>5} {:>7} {:>10} {:>10} {:>9} {:>12} {:>16} {:>8} {:>8}\n",
        "offered/s",
        "idle",
        "hops",
        "sent",
        "delivered",
        "dropped",
        "engine CPU%",
        "NF CPU% (hops)",
        "p50 µs",
        "p99 µs"
    );
    for p in points {
        let nf: Vec<String> = p.nf_cpu_percent.iter().map(|c| format!("{c:.1}")).collect();
        out += &format!(
            "{:>10} {:>5} {:>7} {:>10} {:>10} {:>9} {:>12.1} {:>16} {:>8} {:>8}\n",
            p.rate_pps,
            p.idle_nfs,
            if p.direct_hops { "direct" } else { "engine" },
            p.offered,
            p.delivered,
            p.dropped,
            p.engine_cpu_percent,
            nf.join(" / "),
            p.p50_us,
            p.p99_us
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_point_is_the_documented_json() {
        let p = LoadPoint {
            rate_pps: 200_000,
            idle_nfs: 60,
            direct_hops: false,
            offered: 600_000,
            delivered: 599_990,
            dropped: 10,
            engine_cpu_percent: 18.25,
            nf_cpu_percent: vec![4.5, 3.25],
            p50_us: 31,
            p99_us: 127,
        };
        let v: serde_json::Value = serde_json::from_str(&p.json()).expect("JSON");
        assert_eq!(v["rate_pps"], 200_000);
        assert_eq!(v["idle_nfs"], 60);
        assert_eq!(v["direct_hops"], false);
        assert_eq!(v["engine_cpu_percent"], 18.25);
        assert_eq!(v["nf_cpu_percent"], serde_json::json!([4.5, 3.25]));
        assert_eq!(v["dropped"], 10);
        assert_eq!(
            (v["p50_us"].as_u64(), v["p99_us"].as_u64()),
            (Some(31), Some(127))
        );
        let table = table(&[p], 3.0);
        assert!(table.contains("4.5 / 3.2"), "{table}");
        assert!(table.contains(" engine "), "{table}");
    }
}
