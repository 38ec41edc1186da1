//! `nfhost demo`: the embedded default, live. `nfhost serve` on the emulated NIC with
//! the gen wire, plus the example chain (`examples/edge.toml`: monitor → l2fwd on
//! VLAN 100), in a fresh data directory. The gRPC API, `nfctl` and the dashboard work
//! against it as against any `nfhost serve`; this command also prints per-VF
//! throughput every second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args as ClapArgs;

use nfhost::auth::Principal;
use nfhost::control::Controller;
use nfhost::dataplane::nf_process::current_exe;
use nfhost::serve::{ServeSettings, Started};

/// The example chain, built into the binary so the demo runs from anywhere.
const EXAMPLE_CHAIN: &str = include_str!("../examples/edge.toml");

/// Options of `nfhost demo`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// How long to run, in seconds (0 = until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// Generated packets per second (0 = as fast as possible).
    #[arg(long, default_value_t = 200_000)]
    rate: u64,
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    grpc: std::net::SocketAddr,
    /// Dashboard and /metrics listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: std::net::SocketAddr,
}

/// Runs the demo.
pub fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let data_dir = std::env::temp_dir().join(format!("nfhost-demo-{}", std::process::id()));
    let settings = ServeSettings {
        grpc: Some(args.grpc),
        http: Some(args.http),
        data_dir: Some(data_dir.clone()),
        vfs: Some(64),
        wire: Some("gen".into()),
        gen_rate: Some(args.rate),
        gen_size: Some(128),
        gen_vlans: Some(vec![100]),
        gen_flows: Some(64),
        ..Default::default()
    };
    let started = nfhost::serve::start(&settings, current_exe()?)?;
    let chain = nfhost_api::chain_file::parse_chain(EXAMPLE_CHAIN)?;
    let created = started
        .controller
        .create_chain(&Principal::service(), &chain, false)?;
    println!(
        "nfhost demo: emulated NIC with 64 VFs, gen wire at {} pps on VLAN 100",
        args.rate
    );
    println!(
        "chain {} ({}): wire VLAN 100 → mon (monitor) on {} → fwd (l2fwd) on {} → wire VLAN 200",
        created.name,
        if created.isolation == nfhost_api::proto::Isolation::Shared as i32 {
            "shared"
        } else {
            "strict"
        },
        created.vfs[0],
        created.vfs[1],
    );
    println!(
        "gRPC: {} (try: nfctl --server http://{} vf list)",
        args.grpc, args.grpc
    );
    println!(
        "dashboard: http://{}/   metrics: http://{}/metrics\n",
        args.http, args.http
    );

    // The printer runs until the service stops (Ctrl-C or --seconds): dropping
    // `stop_printer` tells it so.
    let (stop_printer, stopped) = std::sync::mpsc::channel::<()>();
    let printer = spawn_printer(started.controller.clone(), args.seconds, stopped);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let seconds = args.seconds;
    let result = runtime.block_on(async {
        let shutdown = async move {
            if seconds == 0 {
                tokio::signal::ctrl_c().await
            } else {
                tokio::time::sleep(Duration::from_secs(seconds) + Duration::from_millis(300)).await;
                Ok(())
            }
        };
        nfhost::serve::run(&settings, &started, shutdown).await
    });
    drop(stop_printer);
    let _ = printer.join();
    summary(&started);
    drop(runtime);
    drop(started);
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(result?)
}

fn spawn_printer(
    controller: Arc<Controller>,
    seconds: u64,
    stop: std::sync::mpsc::Receiver<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut last: Option<nfhost_api::proto::Stats> = None;
        println!(
            "{:>5}  {:<6} {:<5} {:>10} {:>10} {:>12} {:>10}",
            "t (s)", "VF", "NF", "rx pps", "tx pps", "copied B", "drops"
        );
        loop {
            // A second between rows, or less when the service stops.
            match stop.recv_timeout(Duration::from_secs(1)) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
            let Ok(stats) = controller.stats(&Principal::service(), true) else {
                return;
            };
            let t = started.elapsed().as_secs();
            for vf in &stats.vfs {
                let prev = last
                    .as_ref()
                    .and_then(|l| l.vfs.iter().find(|p| p.vf == vf.vf))
                    .cloned()
                    .unwrap_or_default();
                let drops: u64 = vf.drops.values().sum();
                println!(
                    "{:>5}  {:<6} {:<5} {:>10} {:>10} {:>12} {:>10}",
                    t,
                    format!("vf{}", vf.vf.trim_start_matches("pfs/0/vfs/")),
                    nfhost_api::names::nf_id(&vf.nf),
                    vf.rx_packets.saturating_sub(prev.rx_packets),
                    vf.tx_packets.saturating_sub(prev.tx_packets),
                    vf.dma_copied_bytes,
                    drops,
                );
            }
            last = Some(stats);
            if seconds != 0 && started.elapsed() >= Duration::from_secs(seconds) {
                return;
            }
        }
    })
}

fn summary(started: &Started) {
    if let Ok(Some(report)) = started.controller.nf_report(&Principal::service(), "mon") {
        println!("\nmonitor nfs/mon reports: {report}");
    }
    let sink = started.controller.sink_stats();
    println!(
        "wire: {} packets came back out; latency {}",
        sink.packets,
        sink.latency.map_or("n/a".to_owned(), |l| format!(
            "min {} µs, p50 ≤ {} µs, p99 ≤ {} µs",
            l.min_us, l.p50_us, l.p99_us
        ))
    );
}
