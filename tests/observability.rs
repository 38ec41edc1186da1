//! Observability against the real service: `/metrics` scraped and parsed, checked by
//! `promtool`, and scraped by a real Prometheus server whose `rate()` sees the chain.
//!
//! Needs Debian's `prometheus` package (`promtool`, `prometheus`); `scripts/test.sh`
//! installs it. Without it these tests fail and say so: they are never skipped.

#[path = "common/http.rs"]
mod http;
#[path = "common/server.rs"]
mod server;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::{get, label, samples};
use server::{Server, TempDir, free_port, wait_until};

fn start_with_chain(data: &TempDir, http: u16) -> Server {
    let server = Server::start(
        &data.0,
        &[
            "--http",
            &format!("127.0.0.1:{http}"),
            "--gen-rate",
            "20000",
            "--gen-vlans",
            "100",
            "--vfs",
            "8",
        ],
    );
    let out = Command::new(server::nfctl_bin())
        .args([
            "--server",
            &server.url(),
            "chain",
            "apply",
            "examples/edge.toml",
        ])
        .output()
        .expect("nfctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server
}

fn tool(name: &str) -> String {
    let found = Command::new("which")
        .arg(name)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{name} is not installed: run scripts/test.sh (it installs Debian's prometheus package) or apt-get install prometheus"
    );
    name.to_owned()
}

#[test]
fn metrics_rise_for_the_chain_stay_zero_for_free_vfs_and_pass_promtool() {
    let data = TempDir::new("metrics");
    let http = free_port();
    let server = start_with_chain(&data, http);
    let scrape = || {
        let (status, body) = get(http, "/metrics");
        assert_eq!(status, 200);
        body
    };
    let by_vf = |text: &str, metric: &str| -> BTreeMap<String, (f64, String)> {
        samples(text, metric)
            .into_iter()
            .filter_map(|(labels, v)| {
                Some((
                    label(&labels, "vf")?.to_owned(),
                    (v, label(&labels, "nf").unwrap_or("").to_owned()),
                ))
            })
            .collect()
    };
    wait_until("the chain's counters in /metrics", 15, || {
        by_vf(&scrape(), "nfhost_vf_transmit_packets_total")
            .values()
            .any(|(v, nf)| nf == "fwd" && *v > 0.0)
    });
    let first = scrape();
    std::thread::sleep(Duration::from_millis(2500));
    let second = scrape();
    for metric in [
        "nfhost_vf_receive_packets_total",
        "nfhost_vf_transmit_packets_total",
    ] {
        let (a, b) = (by_vf(&first, metric), by_vf(&second, metric));
        assert_eq!(b.len(), 8, "{metric}: one series per VF, got {b:?}");
        for (vf, (after, nf)) in &b {
            let before = a.get(vf).map_or(0.0, |x| x.0);
            if nf == "mon" || nf == "fwd" {
                assert!(
                    after > &before,
                    "{metric} vf{vf} ({nf}) did not rise: {before} -> {after}"
                );
            } else {
                assert_eq!(*after, 0.0, "{metric} of free vf{vf} is not 0");
            }
        }
    }
    // promtool: every series well formed, with HELP and TYPE; no lint complaint.
    let mut check = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(second.as_bytes())
        .expect("feed");
    let out = check.wait_with_output().expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
    server.stop();
}

#[test]
fn a_real_prometheus_sees_the_chain_rate() {
    let data = TempDir::new("prometheus");
    let http = free_port();
    let server = start_with_chain(&data, http);
    let prom_port = free_port();
    let config = data.0.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: nfhost\n    static_configs:\n      - targets: ['127.0.0.1:{http}']\n"
        ),
    )
    .expect("config");
    let tsdb = data.0.join("tsdb");
    let mut prometheus = Command::new(tool("prometheus"))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    let query = "/api/v1/query?query=rate(nfhost_vf_transmit_packets_total%5B5s%5D)";
    let result = std::panic::catch_unwind(|| {
        wait_until(
            "Prometheus to see a non-zero rate for the chain",
            30,
            || {
                // Until Prometheus listens there is nothing to ask.
                if TcpStream::connect(("127.0.0.1", prom_port)).is_err() {
                    return false;
                }
                let (status, body) = get(prom_port, query);
                if status != 200 {
                    return false;
                }
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let results = v["data"]["result"].as_array().cloned().unwrap_or_default();
                let rate = |nf: &str| {
                    results
                        .iter()
                        .find(|r| r["metric"]["nf"] == nf)
                        .and_then(|r| r["value"][1].as_str())
                        .and_then(|x| x.parse::<f64>().ok())
                        .unwrap_or(0.0)
                };
                rate("mon") > 0.0 && rate("fwd") > 0.0
            },
        );
    });
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    server.stop();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
