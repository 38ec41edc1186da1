//! Prometheus metrics (ARCHITECTURE.md §7): the 1 s sampler's view of the hot-path counters.
//!
//! The data path never touches this module: it bumps plain per-VF atomics
//! ([`crate::dataplane::counters`]). Once a second the service calls
//! [`Metrics::sample`], which reads the controller's [`proto::Stats`], the NF list and
//! each NF's self-report and builds the whole exposition anew; `GET /metrics` serves
//! the last one ([`Metrics::render`]). A series is therefore exported exactly while
//! what it describes exists: a deleted NF's series are gone from the next sample on
//! (`src/web/metrics/exposition.rs` says why this is not `metrics-exporter-prometheus`).
//!
//! Naming follows the Prometheus conventions
//! (<https://prometheus.io/docs/practices/naming/>): base units (bytes, seconds),
//! `_total` on counters, one HELP text per family.
//!
//! Labels that change are not on the counters. A VF's counters carry `pf` and `vf`
//! only and count from when the VF was enabled, whoever owned it: when its NF is
//! deleted and another gets the VF, the series goes on, never back. Who owns a VF is
//! the info metric [`VF_INFO`], `nfhost_vf_info{pf,vf,nf,chain} 1`, as
//! kube-state-metrics and node_exporter do it
//! (<https://www.robustperception.io/how-to-have-labels-for-machine-roles/>); a query
//! joins on it:
//! `sum by (nf) (rate(nfhost_vf_receive_packets_total[1m]) * on (pf, vf) group_left (nf, chain) nfhost_vf_info)`.
//!
//! `nfhost_nf_batch_seconds` is not one observation per batch (the NF process owns
//! that loop, not us). Each sample observes the *mean* batch time of the last
//! interval, `Δprocess_ns / Δbatches`, once per NF that handled a batch in it: a
//! histogram of per-second means, enough to see an NF slowing down, not a true
//! per-batch latency distribution.

mod exposition;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use exposition::{Family, Histogram, Kind, Labels};

use crate::auth::Principal;
use crate::control::{ControlError, Controller};
use nfhost_api::names::{chain_id, nf_id};
use nfhost_api::proto;

/// Frames the NIC wrote into a VF's rx ring.
pub const VF_RECEIVE_PACKETS: &str = "nfhost_vf_receive_packets_total";
/// Bytes of those frames.
pub const VF_RECEIVE_BYTES: &str = "nfhost_vf_receive_bytes_total";
/// Frames a VF sent that the NIC carried on.
pub const VF_TRANSMIT_PACKETS: &str = "nfhost_vf_transmit_packets_total";
/// Bytes of those frames.
pub const VF_TRANSMIT_BYTES: &str = "nfhost_vf_transmit_bytes_total";
/// Frames the NIC dropped on a VF, by `reason`.
pub const VF_DROPPED_PACKETS: &str = "nfhost_vf_dropped_packets_total";
/// Interrupts of a VF, by `state`.
pub const VF_INTERRUPTS: &str = "nfhost_vf_interrupts_total";
/// Bytes the NIC copied into a VF's memory (strict chain hops).
pub const VF_DMA_COPIED_BYTES: &str = "nfhost_vf_dma_copied_bytes_total";
/// Descriptors or ring indices the NIC refused to obey.
pub const VF_RING_ERRORS: &str = "nfhost_vf_ring_errors_total";
/// Connections to a VF's endpoint refused (wrong secret, second connection).
pub const VF_ATTACH_REFUSED: &str = "nfhost_vf_attach_refused_total";
/// Who owns a VF: `nf` and `chain`, value 1; only VFs with an owner have one.
pub const VF_INFO: &str = "nfhost_vf_info";
/// IOMMU translation faults of a VF, by `reason`.
pub const DMA_FAULTS: &str = "nfhost_dma_faults_total";
/// VFs enabled on the PF, by `state`.
pub const VFS: &str = "nfhost_vfs";
/// Restarts of an NF.
pub const NF_RESTARTS: &str = "nfhost_nf_restarts_total";
/// Times an NF was found unresponsive (frames waiting, heartbeat still).
pub const NF_UNRESPONSIVE: &str = "nfhost_nf_unresponsive_total";
/// Per-interval mean batch processing time of an NF.
pub const NF_BATCH_SECONDS: &str = "nfhost_nf_batch_seconds";
/// Frames received from the wire.
pub const WIRE_RECEIVE_PACKETS: &str = "nfhost_wire_receive_packets_total";
/// Bytes of those frames.
pub const WIRE_RECEIVE_BYTES: &str = "nfhost_wire_receive_bytes_total";
/// Frames sent to the wire.
pub const WIRE_TRANSMIT_PACKETS: &str = "nfhost_wire_transmit_packets_total";
/// Bytes of those frames.
pub const WIRE_TRANSMIT_BYTES: &str = "nfhost_wire_transmit_bytes_total";
/// Frames from the wire that went nowhere, by `reason`.
pub const WIRE_DROPPED_PACKETS: &str = "nfhost_wire_dropped_packets_total";

/// Every metric family this module exports (histograms by their base name), in the
/// order `/metrics` lists them.
pub const SERIES: &[&str] = &[
    VF_RECEIVE_PACKETS,
    VF_RECEIVE_BYTES,
    VF_TRANSMIT_PACKETS,
    VF_TRANSMIT_BYTES,
    VF_DROPPED_PACKETS,
    VF_INTERRUPTS,
    VF_DMA_COPIED_BYTES,
    VF_RING_ERRORS,
    VF_ATTACH_REFUSED,
    VF_INFO,
    DMA_FAULTS,
    VFS,
    NF_RESTARTS,
    NF_UNRESPONSIVE,
    NF_BATCH_SECONDS,
    WIRE_RECEIVE_PACKETS,
    WIRE_RECEIVE_BYTES,
    WIRE_TRANSMIT_PACKETS,
    WIRE_TRANSMIT_BYTES,
    WIRE_DROPPED_PACKETS,
];

/// Bucket bounds of [`NF_BATCH_SECONDS`]: a batch is at most `MAX_BATCH` frames, so
/// 1 µs (a few frames, hot cache) to 10 ms (an NF in trouble).
const BATCH_BUCKETS: [f64; 13] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2,
];

/// The last runtime figures seen in one NF's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchMark {
    batches: u64,
    process_ns: u64,
}

/// What is kept of an NF between samples.
#[derive(Debug, Default)]
struct NfHistory {
    /// The runtime figures of the previous report.
    mark: Option<BatchMark>,
    /// Its batch-time histogram, from its first observation on.
    batch: Option<Histogram>,
}

#[derive(Debug, Default)]
struct State {
    /// The exposition of the last sample.
    text: String,
    /// Per NF (short name) that existed at the last sample.
    nfs: HashMap<String, NfHistory>,
}

/// The Prometheus registry of one nfhost instance. Nothing global: tests build as
/// many independent instances as they like.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

impl Metrics {
    /// An empty registry: renders nothing until the first sample.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Reads the controller's counters, NFs and NF reports and publishes them.
    pub fn sample(&self, controller: &Controller) -> Result<(), ControlError> {
        // The host's metrics: every VF and NF, read as the service itself (the
        // HTTP side lets only admins read them).
        let who = Principal::service();
        let stats = controller.stats(&who, false)?;
        let nfs = controller.list_nfs(&who);
        let reports: HashMap<String, String> = nfs
            .iter()
            .filter_map(|nf| Some((nf.name.clone(), controller.nf_report(&who, &nf.name).ok()??)))
            .collect();
        self.publish(&stats, &nfs, &reports);
        Ok(())
    }

    /// Publishes one sample, replacing the previous one whole: counters as the
    /// sampled totals, gauges as they are, and one batch-time observation per NF that
    /// ran batches since the previous call. `reports` maps an NF's name (`nfs/fw`, as
    /// in [`proto::Nf::name`], or the short `fw`) to its latest JSON self-report.
    pub fn publish(
        &self,
        stats: &proto::Stats,
        nfs: &[proto::Nf],
        reports: &HashMap<String, String>,
    ) {
        let mut state = self.state();
        let mut families = vf_families(stats);
        families.extend(nf_families(&mut state.nfs, nfs, reports));
        if let Some(wire) = &stats.wire {
            families.extend(wire_families(wire));
        }
        state.text = exposition::render(&families);
    }

    /// The Prometheus text exposition format (version 0.0.4), for `GET /metrics`.
    pub fn render(&self) -> String {
        self.state().text.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state only holds plain figures; a panic mid-update leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The per-VF families, [`VF_INFO`] and [`VFS`].
fn vf_families(stats: &proto::Stats) -> Vec<Family> {
    use Kind::Counter;
    let mut rx_packets = Family::new(
        VF_RECEIVE_PACKETS,
        Counter,
        "Frames the NIC wrote into the VF's rx ring, whoever owned the VF.",
    );
    let mut rx_bytes = Family::new(
        VF_RECEIVE_BYTES,
        Counter,
        "Bytes of the frames the NIC wrote into the VF's rx ring.",
    );
    let mut tx_packets = Family::new(
        VF_TRANSMIT_PACKETS,
        Counter,
        "Frames the VF sent that the NIC carried on.",
    );
    let mut tx_bytes = Family::new(
        VF_TRANSMIT_BYTES,
        Counter,
        "Bytes of the frames the VF sent that the NIC carried on.",
    );
    let mut dropped = Family::new(
        VF_DROPPED_PACKETS,
        Counter,
        "Frames the NIC dropped on the VF, by reason.",
    );
    let mut interrupts = Family::new(
        VF_INTERRUPTS,
        Counter,
        "Interrupts of the VF: delivered to the NF, coalesced into a later one, or blocked (masked or unbound).",
    );
    let mut dma_copied = Family::new(
        VF_DMA_COPIED_BYTES,
        Counter,
        "Bytes the NIC copied into the VF's memory from another VF's (strict chain hops).",
    );
    let mut ring_errors = Family::new(
        VF_RING_ERRORS,
        Counter,
        "Descriptors or ring indices from the VF that the NIC refused to obey.",
    );
    let mut attach_refused = Family::new(
        VF_ATTACH_REFUSED,
        Counter,
        "Connections to the VF's endpoint refused: a wrong or missing secret, or a second connection while one is attached.",
    );
    let mut info = Family::new(
        VF_INFO,
        Kind::Gauge,
        "The NF that owns the VF and its chain (empty for a standalone NF), always 1; free VFs have no series. Join per-VF series on (pf, vf) to label them: * on (pf, vf) group_left (nf, chain) nfhost_vf_info.",
    );
    let mut faults = Family::new(
        DMA_FAULTS,
        Counter,
        "IOMMU translation faults of the VF's DMA, by reason.",
    );
    let mut allocated = 0u32;
    for s in &stats.vfs {
        let (pf, vf) = split_vf(&s.vf);
        let at = || -> Labels { vec![("pf", pf.to_owned()), ("vf", vf.to_owned())] };
        rx_packets.push(at(), s.rx_packets as f64);
        rx_bytes.push(at(), s.rx_bytes as f64);
        tx_packets.push(at(), s.tx_packets as f64);
        tx_bytes.push(at(), s.tx_bytes as f64);
        dma_copied.push(at(), s.dma_copied_bytes as f64);
        ring_errors.push(at(), s.ring_errors as f64);
        attach_refused.push(at(), s.attach_refused as f64);
        for (reason, n) in sorted(&s.drops) {
            dropped.push(with(at(), "reason", reason), n as f64);
        }
        for (state, n) in [
            ("delivered", s.interrupts_delivered),
            ("coalesced", s.interrupts_coalesced),
            ("blocked", s.interrupts_blocked),
        ] {
            interrupts.push(with(at(), "state", state), n as f64);
        }
        for (reason, n) in sorted(&s.dma_faults_by_reason) {
            faults.push(with(at(), "reason", reason), n as f64);
        }
        let nf = nf_id(&s.nf);
        if !nf.is_empty() {
            allocated += 1;
            let chain = chain_id(&s.chain);
            info.push(with(with(at(), "nf", nf), "chain", chain), 1.0);
        }
    }
    let mut vfs = Family::new(
        VFS,
        Kind::Gauge,
        "VFs enabled on the PF, free or allocated to an NF.",
    );
    let total = stats.vfs.len() as u32;
    vfs.push(vec![("state", "allocated".to_owned())], allocated.into());
    vfs.push(
        vec![("state", "free".to_owned())],
        (total - allocated).into(),
    );
    vec![
        rx_packets,
        rx_bytes,
        tx_packets,
        tx_bytes,
        dropped,
        interrupts,
        dma_copied,
        ring_errors,
        attach_refused,
        info,
        faults,
        vfs,
    ]
}

/// [`NF_RESTARTS`], [`NF_UNRESPONSIVE`] and [`NF_BATCH_SECONDS`] of the NFs in `nfs`; `history` is
/// updated to hold exactly those NFs, so a deleted NF's series go with it and a new
/// NF of the same name starts afresh.
fn nf_families(
    history: &mut HashMap<String, NfHistory>,
    nfs: &[proto::Nf],
    reports: &HashMap<String, String>,
) -> [Family; 3] {
    let mut restarts = Family::new(
        NF_RESTARTS,
        Kind::Counter,
        "Times the supervisor restarted the NF.",
    );
    let mut unresponsive = Family::new(
        NF_UNRESPONSIVE,
        Kind::Counter,
        "Times the NF was found unresponsive: frames waited on its rx ring while its heartbeat stood still.",
    );
    let mut batch = Family::new(
        NF_BATCH_SECONDS,
        Kind::Histogram,
        "Mean time the NF spent processing one rx batch, one observation per NF per 1 s sample.",
    );
    history.retain(|name, _| nfs.iter().any(|nf| nf_id(&nf.name) == name));
    for nf in nfs {
        let short = nf_id(&nf.name);
        let labels = || -> Labels { vec![("nf", short.to_owned())] };
        let n = nf.status.as_ref().map_or(0, |s| s.restarts);
        restarts.push(labels(), n.into());
        let n = nf.status.as_ref().map_or(0, |s| s.unresponsive);
        unresponsive.push(labels(), n.into());

        let h = history.entry(short.to_owned()).or_default();
        let report = reports
            .get(&nf.name)
            .or_else(|| reports.get(short))
            .and_then(|r| runtime_mark(r));
        if let Some(now) = report {
            if let Some(seconds) = h.mark.replace(now).and_then(|b| mean_batch_seconds(b, now)) {
                h.batch
                    .get_or_insert_with(|| Histogram::new(&BATCH_BUCKETS))
                    .observe(seconds);
            }
        }
        if let Some(b) = &h.batch {
            batch.push_histogram(labels(), b.clone());
        }
    }
    [restarts, unresponsive, batch]
}

fn wire_families(w: &proto::WireStats) -> [Family; 5] {
    use Kind::Counter;
    let total = |name, help, n: u64| {
        let mut f = Family::new(name, Counter, help);
        f.push(Vec::new(), n as f64);
        f
    };
    let mut dropped = Family::new(
        WIRE_DROPPED_PACKETS,
        Counter,
        "Frames from the wire that went nowhere, by reason.",
    );
    for (reason, n) in sorted(&w.drops) {
        dropped.push(vec![("reason", reason.to_owned())], n as f64);
    }
    [
        total(
            WIRE_RECEIVE_PACKETS,
            "Frames received from the wire (generated, for the gen wire).",
            w.rx_packets,
        ),
        total(
            WIRE_RECEIVE_BYTES,
            "Bytes of the frames received from the wire.",
            w.rx_bytes,
        ),
        total(
            WIRE_TRANSMIT_PACKETS,
            "Frames sent to the wire.",
            w.tx_packets,
        ),
        total(
            WIRE_TRANSMIT_BYTES,
            "Bytes of the frames sent to the wire.",
            w.tx_bytes,
        ),
        dropped,
    ]
}

/// A protobuf map in key order, so `/metrics` lists series the same way each time.
fn sorted(map: &HashMap<String, u64>) -> BTreeMap<&str, u64> {
    map.iter().map(|(k, v)| (k.as_str(), *v)).collect()
}

/// `labels` plus one more.
fn with(mut labels: Labels, key: &'static str, value: &str) -> Labels {
    labels.push((key, value.to_owned()));
    labels
}

/// `pfs/0/vfs/3` → (`0`, `3`). Anything else is taken as a bare VF index on PF 0.
fn split_vf(name: &str) -> (&str, &str) {
    name.strip_prefix("pfs/")
        .and_then(|rest| rest.split_once("/vfs/"))
        .unwrap_or(("0", name))
}

/// The runtime figures of an NF report: `{"nf":…,"runtime":{"batches":…,"process_ns":…}}`
/// (written by `nf_sdk::runtime`). `None` for a report without them: it came from
/// the NF process, so it is not trusted to be well formed.
fn runtime_mark(report: &str) -> Option<BatchMark> {
    let json: serde_json::Value = serde_json::from_str(report).ok()?;
    let runtime = json.get("runtime")?;
    Some(BatchMark {
        batches: runtime.get("batches")?.as_u64()?,
        process_ns: runtime.get("process_ns")?.as_u64()?,
    })
}

/// The mean batch time between two reports, if any batch ran in between. Figures
/// that went down mean the NF process restarted and counts from zero: the new
/// figures are then the whole interval.
fn mean_batch_seconds(before: BatchMark, now: BatchMark) -> Option<f64> {
    let restarted = now.batches < before.batches || now.process_ns < before.process_ns;
    let base = if restarted {
        BatchMark {
            batches: 0,
            process_ns: 0,
        }
    } else {
        before
    };
    let batches = now.batches - base.batches;
    let ns = now.process_ns - base.process_ns;
    (batches > 0).then(|| ns as f64 / batches as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// One parsed sample line: name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// Reads the exposition with a kept parser (`prometheus-parse`): every sample
    /// (a histogram's buckets as `_bucket` samples with their `le`), the families
    /// with a HELP line, and each `# TYPE` line's kind (the parser keeps those to
    /// itself).
    fn parse(text: &str) -> (Vec<Sample>, BTreeSet<String>, BTreeMap<String, String>) {
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .expect("the exposition parses");
        let mut samples = Vec::new();
        for s in scrape.samples {
            let labels: BTreeMap<String, String> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => samples.push((s.metric, labels, v)),
                prometheus_parse::Value::Histogram(buckets) => {
                    for b in buckets {
                        let mut labels = labels.clone();
                        let le = if b.less_than.is_infinite() {
                            "+Inf".to_owned()
                        } else {
                            b.less_than.to_string()
                        };
                        labels.insert("le".into(), le);
                        samples.push((format!("{}_bucket", s.metric), labels, b.count));
                    }
                }
                prometheus_parse::Value::Summary(_) => panic!("no summaries are exported"),
            }
        }
        let help = scrape.docs.into_keys().collect();
        let types = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' '))
            .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
            .collect();
        (samples, help, types)
    }

    fn family(name: &str, types: &BTreeMap<String, String>) -> String {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if types.get(base).map(String::as_str) == Some("histogram") {
                    return base.to_owned();
                }
            }
        }
        name.to_owned()
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<_> = samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
            })
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        found[0].2
    }

    fn reasons(base: u64) -> HashMap<String, u64> {
        [
            "no_buffer",
            "ring_full",
            "spoof",
            "vlan",
            "dma_fault",
            "link_down",
            "malformed",
            "no_route",
            "unlearned",
        ]
        .iter()
        .enumerate()
        .map(|(i, r)| ((*r).to_owned(), base + i as u64))
        .collect()
    }

    fn stats() -> proto::Stats {
        proto::Stats {
            time_ms: 1,
            vfs: vec![
                proto::VfStats {
                    vf: "pfs/0/vfs/0".into(),
                    nf: "nfs/fw".into(),
                    chain: "edge".into(),
                    rx_packets: 10,
                    rx_bytes: 640,
                    tx_packets: 9,
                    tx_bytes: 576,
                    drops: reasons(100),
                    interrupts_delivered: 5,
                    interrupts_coalesced: 4,
                    interrupts_blocked: 3,
                    dma_copied_bytes: 4096,
                    attach_refused: 1,
                    ring_errors: 2,
                    dma_faults: 7,
                    dma_faults_by_reason: [
                        ("unmapped".to_owned(), 5),
                        ("permission".to_owned(), 2),
                    ]
                    .into_iter()
                    .collect(),
                },
                proto::VfStats {
                    vf: "pfs/0/vfs/1".into(),
                    drops: reasons(0),
                    ..Default::default()
                },
            ],
            wire: Some(proto::WireStats {
                rx_packets: 20,
                rx_bytes: 1280,
                tx_packets: 18,
                tx_bytes: 1152,
                drops: reasons(1000),
            }),
        }
    }

    fn nfs(restarts: u32) -> Vec<proto::Nf> {
        vec![proto::Nf {
            name: "nfs/fw".into(),
            kind: "l2fwd".into(),
            vf: "pfs/0/vfs/0".into(),
            chain: "edge".into(),
            status: Some(proto::NfStatus {
                restarts,
                unresponsive: 2,
                ..Default::default()
            }),
            ..Default::default()
        }]
    }

    fn report(batches: u64, process_ns: u64) -> HashMap<String, String> {
        HashMap::from([(
            "nfs/fw".to_owned(),
            format!(
                "{{\"nf\":null,\"runtime\":{{\"rx\":1,\"tx\":1,\"dropped\":0,\"tx_full\":0,\"batches\":{batches},\"wakeups\":1,\"process_ns\":{process_ns}}}}}"
            ),
        )])
    }

    #[test]
    fn publishes_every_series_with_labels_help_and_type() {
        let m = Metrics::new();
        m.publish(&stats(), &nfs(2), &report(100, 1_000_000));
        m.publish(&stats(), &nfs(3), &report(300, 5_000_000));
        let text = m.render();
        let (samples, help, types) = parse(&text);

        let families: BTreeSet<String> = samples.iter().map(|s| family(&s.0, &types)).collect();
        let expected: BTreeSet<String> = SERIES.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(families, expected, "{text}");
        for f in &families {
            assert!(help.contains(f), "no HELP for {f}");
            assert!(types.contains_key(f), "no TYPE for {f}");
        }
        for (name, kind) in &types {
            let want = match name.as_str() {
                VFS | VF_INFO => "gauge",
                NF_BATCH_SECONDS => "histogram",
                _ => "counter",
            };
            assert_eq!(kind, want, "{name}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
        }

        // Counters are labelled by the VF alone; who owns it is the info series.
        let fw = [("pf", "0"), ("vf", "0")];
        let free = [("pf", "0"), ("vf", "1")];
        for (name, labels, _) in samples.iter().filter(|s| s.0.starts_with("nfhost_vf_")) {
            let owner = labels.contains_key("nf") || labels.contains_key("chain");
            assert_eq!(owner, name == VF_INFO, "{name} {labels:?}");
        }
        let info = [&fw[..], &[("nf", "fw"), ("chain", "edge")]].concat();
        assert_eq!(value(&samples, VF_INFO, &info), 1.0);
        assert!(
            !samples.iter().any(|s| s.0 == VF_INFO && s.1["vf"] == "1"),
            "a free VF has no info series"
        );
        assert_eq!(value(&samples, VF_RECEIVE_PACKETS, &fw), 10.0);
        assert_eq!(value(&samples, VF_RECEIVE_BYTES, &fw), 640.0);
        assert_eq!(value(&samples, VF_TRANSMIT_PACKETS, &fw), 9.0);
        assert_eq!(value(&samples, VF_TRANSMIT_BYTES, &fw), 576.0);
        assert_eq!(value(&samples, VF_DMA_COPIED_BYTES, &fw), 4096.0);
        assert_eq!(value(&samples, VF_RING_ERRORS, &fw), 2.0);
        assert_eq!(value(&samples, VF_ATTACH_REFUSED, &fw), 1.0);
        assert_eq!(value(&samples, VF_RECEIVE_PACKETS, &free), 0.0);
        let spoof = [&fw[..], &[("reason", "spoof")]].concat();
        assert_eq!(value(&samples, VF_DROPPED_PACKETS, &spoof), 102.0);
        let no_route = [&fw[..], &[("reason", "no_route")]].concat();
        assert_eq!(value(&samples, VF_DROPPED_PACKETS, &no_route), 107.0);
        for (state, n) in [("delivered", 5.0), ("coalesced", 4.0), ("blocked", 3.0)] {
            let l = [&fw[..], &[("state", state)]].concat();
            assert_eq!(value(&samples, VF_INTERRUPTS, &l), n);
        }
        let unmapped = [("pf", "0"), ("vf", "0"), ("reason", "unmapped")];
        assert_eq!(value(&samples, DMA_FAULTS, &unmapped), 5.0);
        let permission = [("pf", "0"), ("vf", "0"), ("reason", "permission")];
        assert_eq!(value(&samples, DMA_FAULTS, &permission), 2.0);
        assert_eq!(value(&samples, VFS, &[("state", "allocated")]), 1.0);
        assert_eq!(value(&samples, VFS, &[("state", "free")]), 1.0);
        assert_eq!(value(&samples, NF_RESTARTS, &[("nf", "fw")]), 3.0);
        assert_eq!(value(&samples, NF_UNRESPONSIVE, &[("nf", "fw")]), 2.0);
        assert_eq!(value(&samples, WIRE_RECEIVE_PACKETS, &[]), 20.0);
        assert_eq!(value(&samples, WIRE_RECEIVE_BYTES, &[]), 1280.0);
        assert_eq!(value(&samples, WIRE_TRANSMIT_PACKETS, &[]), 18.0);
        assert_eq!(value(&samples, WIRE_TRANSMIT_BYTES, &[]), 1152.0);
        let vlan = [("reason", "vlan")];
        assert_eq!(value(&samples, WIRE_DROPPED_PACKETS, &vlan), 1003.0);

        // One observation: (5e6 - 1e6) ns over 200 batches = 20 µs.
        let nf = [("nf", "fw")];
        assert_eq!(value(&samples, "nfhost_nf_batch_seconds_count", &nf), 1.0);
        let sum = value(&samples, "nfhost_nf_batch_seconds_sum", &nf);
        assert!((sum - 20e-6).abs() < 1e-12, "{sum}");
        let le = [("nf", "fw"), ("le", "0.000025")];
        assert_eq!(value(&samples, "nfhost_nf_batch_seconds_bucket", &le), 1.0);
        let le = [("nf", "fw"), ("le", "0.00001")];
        assert_eq!(value(&samples, "nfhost_nf_batch_seconds_bucket", &le), 0.0);
    }

    #[test]
    fn counters_follow_the_sampled_totals() {
        let m = Metrics::new();
        let mut s = stats();
        m.publish(&s, &[], &HashMap::new());
        s.vfs[0].rx_packets = 1234;
        m.publish(&s, &[], &HashMap::new());
        let (samples, _, _) = parse(&m.render());
        assert_eq!(value(&samples, VF_RECEIVE_PACKETS, &[("vf", "0")]), 1234.0);
    }

    #[test]
    fn a_reassigned_vf_keeps_one_series_and_its_info_follows() {
        let m = Metrics::new();
        let mut s = stats();
        m.publish(&s, &[], &HashMap::new());
        s.vfs[0].nf = "nfs/ids".into();
        s.vfs[0].chain = String::new();
        s.vfs[0].rx_packets = 50;
        m.publish(&s, &[], &HashMap::new());
        let (samples, _, _) = parse(&m.render());
        // `value` asserts there is exactly one matching series.
        assert_eq!(value(&samples, VF_RECEIVE_PACKETS, &[("vf", "0")]), 50.0);
        let ids = [("vf", "0"), ("nf", "ids"), ("chain", "")];
        assert_eq!(value(&samples, VF_INFO, &ids), 1.0);
        assert_eq!(samples.iter().filter(|s| s.0 == VF_INFO).count(), 1);
    }

    #[test]
    fn a_deleted_nf_leaves_no_series() {
        let m = Metrics::new();
        m.publish(&stats(), &nfs(1), &report(100, 1_000_000));
        m.publish(&stats(), &nfs(1), &report(300, 5_000_000));
        let text = m.render();
        for name in [NF_RESTARTS, NF_BATCH_SECONDS, VF_INFO] {
            assert!(text.contains(name), "{name} before: {text}");
        }
        // The NF is deleted: its VF is free, the NF list is empty.
        let mut s = stats();
        s.vfs[0].nf = String::new();
        s.vfs[0].chain = String::new();
        m.publish(&s, &[], &HashMap::new());
        let text = m.render();
        for name in [NF_RESTARTS, NF_BATCH_SECONDS, VF_INFO] {
            assert!(!text.contains(name), "{name} after: {text}");
        }
        assert!(text.contains(VF_RECEIVE_PACKETS), "{text}");
        // One of the same name later starts a histogram afresh.
        m.publish(&stats(), &nfs(0), &report(10, 100_000));
        m.publish(&stats(), &nfs(0), &report(20, 300_000));
        let (samples, _, _) = parse(&m.render());
        let nf = [("nf", "fw")];
        assert_eq!(value(&samples, "nfhost_nf_batch_seconds_count", &nf), 1.0);
    }

    #[test]
    fn batch_time_is_a_per_interval_mean() {
        let a = BatchMark {
            batches: 10,
            process_ns: 1000,
        };
        let b = BatchMark {
            batches: 20,
            process_ns: 3000,
        };
        assert_eq!(mean_batch_seconds(a, b), Some(200e-9));
        // Idle interval: nothing to observe.
        assert_eq!(mean_batch_seconds(b, b), None);
        // The process restarted: its figures count from zero again.
        let fresh = BatchMark {
            batches: 4,
            process_ns: 400,
        };
        assert_eq!(mean_batch_seconds(b, fresh), Some(100e-9));
    }

    #[test]
    fn bad_reports_are_ignored() {
        assert_eq!(runtime_mark("not json"), None);
        assert_eq!(
            runtime_mark("{\"runtime\":{\"batches\":-1,\"process_ns\":0}}"),
            None
        );
        assert_eq!(runtime_mark("{\"nf\":{}}"), None);
        let m = Metrics::new();
        let bad = HashMap::from([("nfs/fw".to_owned(), "{".to_owned())]);
        m.publish(&stats(), &nfs(0), &bad);
        m.publish(&stats(), &nfs(0), &bad);
        assert!(!m.render().contains(NF_BATCH_SECONDS));
    }

    #[test]
    fn instances_are_independent() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.publish(&stats(), &[], &HashMap::new());
        assert!(a.render().contains(VF_RECEIVE_PACKETS));
        assert!(!b.render().contains(VF_RECEIVE_PACKETS));
    }

    #[test]
    fn names_split() {
        assert_eq!(split_vf("pfs/0/vfs/12"), ("0", "12"));
        assert_eq!(split_vf("3"), ("0", "3"));
        assert_eq!(nf_id("nfs/fw"), "fw");
        assert_eq!(chain_id("edge"), "edge");
        assert_eq!(nf_id(""), "");
    }

    #[test]
    fn metrics_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Metrics>();
    }
}
