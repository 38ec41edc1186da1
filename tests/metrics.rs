//! The Prometheus exposition and the files in `dashboards/`: the Grafana dashboard
//! only queries metrics nfhost exports, and `promtool` accepts both the rendered
//! metrics and the scrape config.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nfhost::web::metrics::{Metrics, SERIES, VF_INFO};
use nfhost_api::proto;

const REASONS: [&str; 12] = [
    "no_buffer",
    "ring_full",
    "spoof",
    "vlan",
    "dma_fault",
    "link_down",
    "malformed",
    "no_route",
    "oversize",
    "wire_busy",
    "overrun",
    "unlearned",
];

fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn drops(base: u64) -> HashMap<String, u64> {
    REASONS
        .iter()
        .zip(base..)
        .map(|(r, n)| ((*r).to_owned(), n))
        .collect()
}

/// A `Metrics` after two samples with every label populated: an owned VF of a
/// chain, a free VF, wire drops, and an NF whose report shows batches in between.
fn sampled() -> Metrics {
    let stats = |scale: u64| proto::Stats {
        time_ms: 1_700_000_000_000,
        vfs: vec![
            proto::VfStats {
                vf: "pfs/0/vfs/0".into(),
                nf: "nfs/fw".into(),
                chain: "chains/edge".into(),
                rx_packets: 100 * scale,
                rx_bytes: 6400 * scale,
                tx_packets: 99 * scale,
                tx_bytes: 6336 * scale,
                drops: drops(scale),
                interrupts_delivered: 10 * scale,
                interrupts_coalesced: 5 * scale,
                interrupts_blocked: scale,
                dma_copied_bytes: 4096 * scale,
                ring_errors: scale,
                attach_refused: scale,
                dma_faults: scale,
                dma_faults_by_reason: [("unmapped".to_owned(), scale)].into_iter().collect(),
            },
            proto::VfStats {
                vf: "pfs/0/vfs/1".into(),
                drops: drops(0),
                ..Default::default()
            },
        ],
        wire: Some(proto::WireStats {
            rx_packets: 200 * scale,
            rx_bytes: 12800 * scale,
            tx_packets: 190 * scale,
            tx_bytes: 12160 * scale,
            drops: drops(scale),
        }),
    };
    let nfs = vec![proto::Nf {
        name: "nfs/fw".into(),
        kind: "l2fwd".into(),
        vf: "pfs/0/vfs/0".into(),
        chain: "edge".into(),
        status: Some(proto::NfStatus {
            state: proto::NfState::Running as i32,
            restarts: 1,
            ..Default::default()
        }),
        ..Default::default()
    }];
    let report = |batches: u64, ns: u64| {
        HashMap::from([(
            "nfs/fw".to_owned(),
            format!(
                r#"{{"nf":null,"runtime":{{"rx":0,"tx":0,"dropped":0,"tx_full":0,"batches":{batches},"wakeups":0,"process_ns":{ns}}}}}"#
            ),
        )])
    };
    let m = Metrics::new();
    m.publish(&stats(1), &nfs, &report(10, 50_000));
    m.publish(&stats(2), &nfs, &report(30, 450_000));
    m
}

/// Metric family names in a text exposition (histogram series by their base name).
fn exported_families(text: &str) -> BTreeSet<String> {
    let histograms: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" histogram"))
        .collect();
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap_or(l))
        .map(|name| base_name(name, &histograms).to_owned())
        .collect()
}

fn base_name<'a>(name: &'a str, histograms: &BTreeSet<&str>) -> &'a str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s).filter(|b| histograms.contains(b)))
        .unwrap_or(name)
}

/// Every `nfhost_…` token in a PromQL expression.
fn metric_tokens(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("nfhost_") {
        // Part of a longer identifier (`my_nfhost_x`) is not a metric name of ours.
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push(tail[..len].to_owned());
        }
        rest = &tail[len..];
    }
    out
}

/// Every panel, rows' nested panels included.
fn all_panels(panels: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in panels {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(all_panels(inner));
        }
    }
    out
}

#[test]
fn dashboard_queries_only_exported_metrics() {
    let path = dashboards().join("grafana/nfhost.json");
    let dash: serde_json::Value = serde_json::from_str(&read(&path)).expect("dashboard is JSON");
    assert_eq!(dash["uid"], "nfhost");
    assert_eq!(dash["schemaVersion"], 39);
    let panels = all_panels(dash["panels"].as_array().expect("dashboard has panels"));
    assert!(!panels.is_empty());

    let text = sampled().render();
    let exported = exported_families(&text);
    let listed: BTreeSet<String> = SERIES.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(exported, listed, "SERIES and the rendered families differ");
    let histograms: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" histogram"))
        .collect();

    let mut used = BTreeSet::new();
    let mut check = |where_: &str, expr: &str| {
        let tokens = metric_tokens(expr);
        assert!(!tokens.is_empty(), "{where_}: no nfhost metric in {expr:?}");
        for t in tokens {
            let name = base_name(&t, &histograms);
            assert!(
                exported.contains(name),
                "{where_}: {t} in {expr:?} is not exported by nfhost (exported: {exported:?})"
            );
            used.insert(name.to_owned());
        }
    };
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("?");
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {title:?}: no targets"));
        assert!(!targets.is_empty(), "panel {title:?}: no targets");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?}: target without expr"));
            check(&format!("panel {title:?}"), expr);
            // Per-VF counters carry no `nf`/`chain` label (they stay one series when a
            // VF changes owner): a panel showing an NF or chain joins the info metric.
            let legend = t["legendFormat"].as_str().unwrap_or_default();
            let per_vf = metric_tokens(expr)
                .iter()
                .any(|m| m.starts_with("nfhost_vf_") && m != VF_INFO);
            if per_vf && (legend.contains("{{nf}}") || legend.contains("{{chain}}")) {
                assert!(
                    expr.contains("on (pf, vf) group_left") && expr.contains(VF_INFO),
                    "panel {title:?}: {expr:?} shows nf/chain without joining {VF_INFO}"
                );
            }
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap_or_default();
            check(&format!("variable {}", v["name"]), q);
        }
    }
    assert!(
        dash["templating"]["list"]
            .as_array()
            .is_some_and(|l| l.iter().any(|v| v["name"] == "vf")),
        "no $vf variable"
    );
    // The panels the issue asks for are there: throughput, drops, interrupts,
    // DMA faults, restarts, the chain end-to-end rate.
    for name in [
        "nfhost_vf_receive_packets_total",
        "nfhost_vf_receive_bytes_total",
        "nfhost_vf_dropped_packets_total",
        "nfhost_vf_interrupts_total",
        "nfhost_dma_faults_total",
        "nfhost_nf_restarts_total",
        "nfhost_wire_transmit_packets_total",
        VF_INFO,
    ] {
        assert!(used.contains(name), "no panel shows {name}");
    }
}

fn promtool() -> Command {
    match Command::new("promtool").arg("--version").output() {
        Ok(o) if o.status.success() => Command::new("promtool"),
        _ => panic!(
            "promtool not found on PATH: install it with `apt-get install prometheus` \
             (Debian's package ships promtool)"
        ),
    }
}

/// Runs promtool; any output line is a failure (`check metrics` reports lint
/// problems on stdout while still exiting 0 for some of them).
fn run_promtool(mut cmd: Command, stdin: Option<&str>) -> (bool, String) {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("promtool starts");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin piped");
        pipe.write_all(text.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn promtool_accepts_the_rendered_metrics() {
    let text = sampled().render();
    let mut cmd = promtool();
    cmd.args(["check", "metrics"]);
    let (ok, out) = run_promtool(cmd, Some(&text));
    let problems: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        ok && problems.is_empty(),
        "promtool check metrics: {problems:#?}\n--- input ---\n{text}"
    );
}

/// Every `expr` of the dashboard, with Grafana's `$vf` replaced by a regex that
/// matches any VF.
fn dashboard_exprs() -> Vec<String> {
    let dash: serde_json::Value =
        serde_json::from_str(&read(&dashboards().join("grafana/nfhost.json"))).expect("JSON");
    all_panels(dash["panels"].as_array().expect("panels"))
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| Some(t["expr"].as_str()?.replace("$vf", ".*")))
        .collect()
}

#[test]
fn promtool_parses_every_dashboard_query() {
    let exprs = dashboard_exprs();
    assert!(exprs.len() > 10, "{exprs:?}");
    // Each query as a recording rule: `promtool check rules` parses it with
    // Prometheus' own PromQL parser (joins and all).
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let quoted = serde_json::to_string(e).expect("a string");
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = std::env::temp_dir().join(format!("nfhost-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("dashboard.rules.yml");
    std::fs::write(&path, &rules).expect("write rules");
    let mut cmd = promtool();
    cmd.args(["check", "rules"]).arg(&path);
    let (ok, out) = run_promtool(cmd, None);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "promtool check rules: {out}\n--- rules ---\n{rules}");
}

#[test]
fn promtool_accepts_the_scrape_config() {
    let path = dashboards().join("prometheus.yml");
    let config = read(&path);
    assert!(config.contains("job_name: nfhost"), "{config}");
    assert!(config.contains("nfhost:8080"), "{config}");
    assert!(
        config.contains("credentials_file:"),
        "nfhost's /metrics needs an admin token: {config}"
    );
    let mut cmd = promtool();
    // --syntax-only: the token file it names exists only in the compose demo's
    // containers.
    cmd.args(["check", "config", "--syntax-only"]).arg(&path);
    let (ok, out) = run_promtool(cmd, None);
    assert!(ok, "promtool check config: {out}");
}

#[test]
fn grafana_provisioning_points_at_prometheus_and_the_dashboard() {
    let ds = read(&dashboards().join("grafana/provisioning/datasources/prometheus.yml"));
    assert!(ds.contains("name: Prometheus"), "{ds}");
    assert!(ds.contains("url: http://prometheus:9090"), "{ds}");
    let provider = read(&dashboards().join("grafana/provisioning/dashboards/nfhost.yml"));
    assert!(provider.contains("type: file"), "{provider}");
    assert!(
        provider.contains("path: /var/lib/grafana/dashboards"),
        "{provider}"
    );
}

#[test]
fn metric_tokens_are_found() {
    assert_eq!(
        metric_tokens(r#"8 * sum by (vf) (rate(nfhost_vf_receive_bytes_total{vf=~"$vf"}[1m]))"#),
        ["nfhost_vf_receive_bytes_total"]
    );
    assert_eq!(
        metric_tokens("rate(nfhost_a_sum[5m]) / rate(nfhost_a_count[5m]) + not_nfhost_b"),
        ["nfhost_a_sum", "nfhost_a_count"]
    );
}
