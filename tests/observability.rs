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

use http::{LabelSet, get, label, samples, vf_owners};
use server::{Server, TempDir, free_port, wait_until};

/// Runs `nfctl --server URL ARGS…` and asserts it succeeded.
fn nfctl(server: &Server, args: &[&str]) {
    let out = Command::new(server::nfctl_bin())
        .args(["--server", &server.url()])
        .args(args)
        .output()
        .expect("nfctl");
    assert!(
        out.status.success(),
        "nfctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// VF → NF owning it, from `nfhost_vf_info` in a scrape (PF 0 is the only PF).
fn owners(text: &str) -> BTreeMap<String, String> {
    vf_owners(text)
        .into_iter()
        .map(|((_, vf), (nf, _))| (vf, nf))
        .collect()
}

/// VF → value of a per-VF counter, with the VF's NF joined from `nfhost_vf_info`
/// (empty for a free VF), as a dashboard query does.
fn by_vf(text: &str, metric: &str) -> BTreeMap<String, (f64, String)> {
    let owners = owners(text);
    samples(text, metric)
        .into_iter()
        .filter_map(|(labels, v)| {
            let vf = label(&labels, "vf")?.to_owned();
            let nf = owners.get(&vf).cloned().unwrap_or_default();
            Some((vf, (v, nf)))
        })
        .collect()
}

/// `application/x-www-form-urlencoded` for a query parameter.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

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
    nfctl(&server, &["chain", "apply", "examples/edge.toml"]);
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
    // The dashboard's own per-VF query: the counters joined with nfhost_vf_info.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("dashboards/grafana/nfhost.json").expect("dashboard"),
    )
    .expect("JSON");
    let expr = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .find(|p| p["title"] == "VF transmit (packets/s)")
        .and_then(|p| p["targets"][0]["expr"].as_str())
        .expect("the VF transmit panel")
        .replace("$vf", ".*");
    assert!(expr.contains("nfhost_vf_info"), "{expr}");
    let query = format!("/api/v1/query?query={}", urlencode(&expr));
    let result = std::panic::catch_unwind(|| {
        wait_until(
            "Prometheus to see a non-zero rate for the chain",
            30,
            || {
                // Until Prometheus listens there is nothing to ask.
                if TcpStream::connect(("127.0.0.1", prom_port)).is_err() {
                    return false;
                }
                let (status, body) = get(prom_port, &query);
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

#[test]
fn a_deleted_nfs_series_go_and_its_vf_counts_on_under_a_new_owner() {
    let data = TempDir::new("reassign");
    let http = free_port();
    let server = start_with_chain(&data, http);
    let scrape = || {
        let (status, body) = get(http, "/metrics");
        assert_eq!(status, 200);
        body
    };
    // The monitor's VF has received frames.
    let mut held = None;
    wait_until("the monitor's VF to receive", 15, || {
        let text = scrape();
        held = by_vf(&text, "nfhost_vf_receive_packets_total")
            .into_iter()
            .find(|(_, (rx, nf))| nf == "mon" && *rx > 0.0)
            .map(|(vf, (rx, _))| (vf, rx));
        held.is_some()
    });
    let (vf, rx_before) = held.expect("found");
    let text = scrape();
    assert!(
        samples(&text, "nfhost_nf_restarts_total")
            .keys()
            .any(|l| label(l, "nf") == Some("mon")),
        "{text}"
    );

    // Deleting the chain deletes its NFs: their series leave /metrics.
    nfctl(&server, &["chain", "delete", "edge"]);
    let gone = |text: &str| {
        let of_chain = |l: &LabelSet| matches!(label(l, "nf"), Some("mon" | "fwd"));
        [
            "nfhost_vf_info",
            "nfhost_nf_restarts_total",
            "nfhost_nf_batch_seconds_count",
        ]
        .iter()
        .all(|m| !samples(text, m).keys().any(of_chain))
    };
    wait_until("the chain's NF series to leave /metrics", 10, || {
        gone(&scrape())
    });
    let text = scrape();
    assert!(owners(&text).is_empty(), "no VF has an owner: {text}");

    // Another NF gets the same VF: the VF's counter goes on from where it was.
    nfctl(
        &server,
        &["nf", "create", "solo", "--kind", "l2fwd", "--vf", &vf],
    );
    wait_until("the new owner in nfhost_vf_info", 10, || {
        owners(&scrape()).get(&vf).map(String::as_str) == Some("solo")
    });
    let text = scrape();
    let rx = samples(&text, "nfhost_vf_receive_packets_total");
    assert_eq!(rx.len(), 8, "one series per VF: {rx:?}");
    let of_vf: Vec<f64> = rx
        .iter()
        .filter(|(l, _)| label(l, "vf") == Some(vf.as_str()))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(of_vf.len(), 1, "vf {vf}: {rx:?}");
    assert!(
        of_vf[0] >= rx_before,
        "vf {vf}'s rx went back from {rx_before} to {}",
        of_vf[0]
    );
    for l in rx.keys() {
        assert_eq!(label(l, "nf"), None, "counters carry no nf label: {l:?}");
    }
    assert!(gone(&text), "{text}");
    server.stop();
}

/// With `--auth`, a real Prometheus scrapes `/metrics` with an admin's token from
/// its `credentials_file`; a tenant's token is refused (the target is down).
#[test]
fn a_real_prometheus_scrapes_with_an_admin_token_and_not_with_a_tenants() {
    let data = TempDir::new("prometheus-auth");
    let admin = "prometheus-scrape-token-5d2f";
    let tenant = "tenant-scrape-token-91ab";
    let digest = nfhost::auth::principals::token_digest_hex;
    let principals = data.0.join("principals.toml");
    std::fs::write(
        &principals,
        format!(
            "[[admin]]\nname = \"prometheus\"\ntoken_sha256 = \"{}\"\n[[tenant]]\nname = \"blue\"\ntoken_sha256 = \"{}\"\n",
            digest(admin.as_bytes()),
            digest(tenant.as_bytes())
        ),
    )
    .expect("principals");
    for (file, token) in [("admin.token", admin), ("tenant.token", tenant)] {
        std::fs::write(data.0.join(file), token).expect("token file");
    }
    let http = free_port();
    let server = Server::start(
        &data.0.join("state"),
        &[
            "--auth",
            principals.to_str().expect("utf-8"),
            "--http",
            &format!("127.0.0.1:{http}"),
            "--wire",
            "none",
            "--vfs",
            "4",
        ],
    );
    let prom_port = free_port();
    let config = data.0.join("prometheus.yml");
    let job = |name: &str, file: &str| {
        format!(
            "  - job_name: {name}\n    authorization:\n      type: Bearer\n      credentials_file: {}\n    static_configs:\n      - targets: ['127.0.0.1:{http}']\n",
            data.0.join(file).display()
        )
    };
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
            job("admin", "admin.token"),
            job("tenant", "tenant.token")
        ),
    )
    .expect("config");
    let mut prometheus = Command::new(tool("prometheus"))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            data.0.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    let result = std::panic::catch_unwind(|| {
        wait_until("Prometheus to scrape both jobs", 30, || {
            if TcpStream::connect(("127.0.0.1", prom_port)).is_err() {
                return false;
            }
            let (status, body) = get(prom_port, "/api/v1/query?query=up");
            if status != 200 {
                return false;
            }
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let up = |job: &str| {
                v["data"]["result"]
                    .as_array()
                    .and_then(|r| r.iter().find(|s| s["metric"]["job"] == job))
                    .and_then(|s| s["value"][1].as_str())
                    .map(str::to_owned)
            };
            up("admin").as_deref() == Some("1") && up("tenant").as_deref() == Some("0")
        });
        // What the admin's scrapes brought in: nfhost's own series.
        let (_, body) = get(prom_port, "/api/v1/query?query=nfhost_vfs");
        assert!(body.contains("nfhost_vfs"), "{body}");
    });
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    server.stop();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
