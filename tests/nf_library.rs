//! The NF library in one chain, on the real service: `firewall → nat → lb → monitor`
//! from `examples/nf-library.toml`, fed by the gen wire aimed at the VIP. Checked
//! through the API, the NFs' reports and `/metrics`.

#[path = "common/http.rs"]
mod http;
#[path = "common/server.rs"]
mod server;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use http::get;
use server::{Server, TempDir, free_port, wait_until};

fn json(port: u16, path: &str) -> serde_json::Value {
    let (status, body) = get(port, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// `nfhost_vf_receive_packets_total` by NF name (joined from `nfhost_vf_info`).
fn received_by_nf(metrics: &str) -> BTreeMap<String, f64> {
    http::samples_with_owner(metrics, "nfhost_vf_receive_packets_total")
        .into_iter()
        .filter_map(|(labels, value)| Some((http::label(&labels, "nf")?.to_owned(), value)))
        .filter(|(nf, _)| !nf.is_empty())
        .collect()
}

#[test]
fn firewall_nat_lb_monitor_chain() {
    let data = TempDir::new("library");
    let http = free_port();
    let server = Server::start(
        &data.0,
        &[
            "--http",
            &format!("127.0.0.1:{http}"),
            "--gen-rate",
            "20000",
            "--gen-vlans",
            "100",
            "--gen-flows",
            "16",
            "--gen-dst",
            "198.51.100.10:80",
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
            "examples/nf-library.toml",
        ])
        .output()
        .expect("nfctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Traffic reaches the monitor at the end of the chain.
    wait_until("traffic at the end of the chain", 20, || {
        let (_, m) = get(http, "/metrics");
        received_by_nf(&m).get("mon").is_some_and(|n| *n > 2000.0)
    });
    std::thread::sleep(Duration::from_secs(1));

    // The firewall denied half the flows: NAT receives about half of what it did.
    let (_, metrics) = get(http, "/metrics");
    let rx = received_by_nf(&metrics);
    let (fw, nat, lb, mon) = (rx["fw"], rx["nat"], rx["lb"], rx["mon"]);
    let passed = nat / fw;
    assert!(
        (0.4..0.6).contains(&passed),
        "firewall passed {passed:.2} of frames (8 of 16 flows denied): {rx:?}"
    );
    assert!(lb <= nat && mon <= lb && mon > 0.0, "{rx:?}");
    let fw_report = json(http, "/api/v1/nfs/fw/report");
    let denied = fw_report
        .pointer("/nf/denied")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    assert!(denied > 0, "firewall report: {fw_report}");

    // What leaves: NAT-ed source, destinations spread over the three backends.
    let mon_report = json(http, "/api/v1/nfs/mon/report");
    let top = mon_report
        .pointer("/nf/top")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        top.len(),
        8,
        "the 8 allowed flows reach the monitor: {mon_report}"
    );
    // The same report through the gRPC API (GetNf's status), as nfctl prints it:
    // per-protocol counts beside the top talkers.
    let out = Command::new(server::nfctl_bin())
        .args(["--server", &server.url(), "-o", "json", "nf", "get", "mon"])
        .output()
        .expect("nfctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nf: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nf JSON");
    let grpc_report: serde_json::Value =
        serde_json::from_str(nf["status"]["report"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("GetNf status.report is not JSON ({e}): {nf}"));
    let udp = grpc_report
        .pointer("/nf/protocols")
        .and_then(serde_json::Value::as_array)
        .and_then(|p| p.iter().find(|p| p["proto"] == "udp"))
        .and_then(|p| p["packets"].as_u64());
    assert!(
        udp.is_some_and(|n| n > 0),
        "no UDP count in GetNf's report: {nf}"
    );
    let mut per_backend: BTreeMap<String, u64> = BTreeMap::new();
    for flow in &top {
        assert_eq!(flow["src"], "203.0.113.1", "not NAT-ed: {flow}");
        let sport = flow["sport"].as_u64().unwrap_or(0);
        assert!(
            (20000..30000).contains(&sport),
            "NAT port outside the pool range: {flow}"
        );
        let dst = flow["dst"].as_str().unwrap_or("").to_owned();
        assert!(
            dst.starts_with("10.0.1."),
            "not balanced to a backend: {flow}"
        );
        assert_eq!(flow["dport"], 8080, "{flow}");
        *per_backend.entry(dst).or_default() += flow["packets"].as_u64().unwrap_or(0);
    }
    assert!(
        per_backend.len() >= 2,
        "8 flows over 3 backends used only {per_backend:?}"
    );
    server.stop();
}
