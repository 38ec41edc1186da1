//! Prometheus metrics (ARCHITECTURE.md §7): the 1 s sampler's view of the hot-path counters.
//!
//! The data path never touches this module: it bumps plain per-VF atomics
//! ([`crate::dataplane::counters`]). Once a second the service calls
//! [`Metrics::sample`], which reads the controller's [`proto::Stats`], the NF list and
//! each NF's self-report and publishes absolute values; `GET /metrics` serves
//! [`Metrics::render`].
//!
//! The recorder is local to a [`Metrics`] value, never installed as the global
//! `metrics` recorder, and has no HTTP listener of its own: the service's web server
//! serves the text, and tests build as many independent instances as they like.
//!
//! Naming follows the Prometheus conventions
//! (<https://prometheus.io/docs/practices/naming/>): base units (bytes, seconds),
//! `_total` on counters, one HELP text per family.
//!
//! Two simplifications, both deliberate:
//!
//! - A VF whose owner (NF or chain) changes is published under its new label set from
//!   then on; the old label set is not removed and stays at its last value. `rate()`
//!   over the old series drops to zero, so dashboards stay right; the price is one
//!   stale series per reassignment until the service restarts.
//! - `nfhost_nf_batch_seconds` is not one observation per batch (the NF process owns
//!   that loop, not us). Each sample observes the *mean* batch time of the last
//!   interval, `Δprocess_ns / Δbatches`, once per NF that handled a batch in it: a
//!   histogram of per-second means, enough to see an NF slowing down, not a true
//!   per-batch latency distribution.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use metrics::{
    Label, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::control::{ControlError, Controller};
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
/// IOMMU translation faults of a VF, by `reason`.
pub const DMA_FAULTS: &str = "nfhost_dma_faults_total";
/// VFs enabled on the PF, by `state`.
pub const VFS: &str = "nfhost_vfs";
/// Restarts of an NF.
pub const NF_RESTARTS: &str = "nfhost_nf_restarts_total";
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

/// Every metric family this module exports (histograms by their base name).
pub const SERIES: &[&str] = &[
    VF_RECEIVE_PACKETS,
    VF_RECEIVE_BYTES,
    VF_TRANSMIT_PACKETS,
    VF_TRANSMIT_BYTES,
    VF_DROPPED_PACKETS,
    VF_INTERRUPTS,
    VF_DMA_COPIED_BYTES,
    VF_RING_ERRORS,
    DMA_FAULTS,
    VFS,
    NF_RESTARTS,
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

/// The Prometheus registry of one nfhost instance.
#[derive(Debug)]
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Per NF (short name): the runtime figures of the previous sample.
    marks: Mutex<HashMap<String, BatchMark>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry with every family described.
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(NF_BATCH_SECONDS.to_owned()), &BATCH_BUCKETS)
            // Only refused for an empty bucket list; ours is a non-empty constant.
            .expect("BATCH_BUCKETS is not empty")
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, describe_all);
        Metrics {
            recorder,
            handle,
            marks: Mutex::new(HashMap::new()),
        }
    }

    /// Reads the controller's counters, NFs and NF reports and publishes them.
    pub fn sample(&self, controller: &Controller) -> Result<(), ControlError> {
        let stats = controller.stats(false)?;
        let nfs = controller.list_nfs();
        let reports: HashMap<String, String> = nfs
            .iter()
            .filter_map(|nf| Some((nf.name.clone(), controller.nf_report(&nf.name)?)))
            .collect();
        self.publish(&stats, &nfs, &reports);
        Ok(())
    }

    /// Publishes one sample: counters as absolute values of the sampled totals, gauges
    /// as they are, and one batch-time observation per NF that ran batches since the
    /// previous call. `reports` maps an NF's name (`nfs/fw`, as in [`proto::Nf::name`],
    /// or the short `fw`) to its latest JSON self-report.
    pub fn publish(
        &self,
        stats: &proto::Stats,
        nfs: &[proto::Nf],
        reports: &HashMap<String, String>,
    ) {
        metrics::with_local_recorder(&self.recorder, || {
            publish_vfs(stats);
            if let Some(wire) = &stats.wire {
                publish_wire(wire);
            }
            self.publish_nfs(nfs, reports);
        });
        // Histogram observations wait in a buffer until drained; drain every sample so
        // an unscraped service does not grow it.
        self.handle.run_upkeep();
    }

    /// The Prometheus text exposition format (version 0.0.4), for `GET /metrics`.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    fn marks(&self) -> MutexGuard<'_, HashMap<String, BatchMark>> {
        // The map only holds plain figures; a panic mid-update leaves a usable map.
        self.marks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish_nfs(&self, nfs: &[proto::Nf], reports: &HashMap<String, String>) {
        let mut marks = self.marks();
        for nf in nfs {
            let short = short("nfs", &nf.name);
            let labels = [Label::new("nf", short.to_owned())];
            let restarts = nf.status.as_ref().map_or(0, |s| s.restarts);
            counter!(NF_RESTARTS, labels.iter()).absolute(u64::from(restarts));

            let report = reports
                .get(&nf.name)
                .or_else(|| reports.get(short))
                .and_then(|r| runtime_mark(r));
            let Some(now) = report else { continue };
            if let Some(seconds) = marks
                .insert(short.to_owned(), now)
                .and_then(|before| mean_batch_seconds(before, now))
            {
                histogram!(NF_BATCH_SECONDS, labels.iter()).record(seconds);
            }
        }
        // Forget NFs that are gone, so a new NF of the same name starts afresh.
        marks.retain(|name, _| nfs.iter().any(|nf| short("nfs", &nf.name) == name));
    }
}

/// HELP texts and units of every family.
fn describe_all() {
    describe_counter!(
        VF_RECEIVE_PACKETS,
        Unit::Count,
        "Frames the NIC wrote into the VF's rx ring."
    );
    describe_counter!(
        VF_RECEIVE_BYTES,
        Unit::Bytes,
        "Bytes of the frames the NIC wrote into the VF's rx ring."
    );
    describe_counter!(
        VF_TRANSMIT_PACKETS,
        Unit::Count,
        "Frames the VF sent that the NIC carried on."
    );
    describe_counter!(
        VF_TRANSMIT_BYTES,
        Unit::Bytes,
        "Bytes of the frames the VF sent that the NIC carried on."
    );
    describe_counter!(
        VF_DROPPED_PACKETS,
        Unit::Count,
        "Frames the NIC dropped on the VF, by reason."
    );
    describe_counter!(
        VF_INTERRUPTS,
        Unit::Count,
        "Interrupts of the VF: delivered to the NF, coalesced into a later one, or blocked (masked or unbound)."
    );
    describe_counter!(
        VF_DMA_COPIED_BYTES,
        Unit::Bytes,
        "Bytes the NIC copied into the VF's memory from another VF's (strict chain hops)."
    );
    describe_counter!(
        VF_RING_ERRORS,
        Unit::Count,
        "Descriptors or ring indices from the VF that the NIC refused to obey."
    );
    describe_counter!(
        DMA_FAULTS,
        Unit::Count,
        "IOMMU translation faults of the VF's DMA, by reason (\"all\" while only totals are sampled)."
    );
    describe_gauge!(
        VFS,
        Unit::Count,
        "VFs enabled on the PF, free or allocated to an NF."
    );
    describe_counter!(
        NF_RESTARTS,
        Unit::Count,
        "Times the supervisor restarted the NF."
    );
    describe_histogram!(
        NF_BATCH_SECONDS,
        Unit::Seconds,
        "Mean time the NF spent processing one rx batch, one observation per NF per 1 s sample."
    );
    describe_counter!(
        WIRE_RECEIVE_PACKETS,
        Unit::Count,
        "Frames received from the wire (generated, for the gen wire)."
    );
    describe_counter!(
        WIRE_RECEIVE_BYTES,
        Unit::Bytes,
        "Bytes of the frames received from the wire."
    );
    describe_counter!(
        WIRE_TRANSMIT_PACKETS,
        Unit::Count,
        "Frames sent to the wire."
    );
    describe_counter!(
        WIRE_TRANSMIT_BYTES,
        Unit::Bytes,
        "Bytes of the frames sent to the wire."
    );
    describe_counter!(
        WIRE_DROPPED_PACKETS,
        Unit::Count,
        "Frames from the wire that went nowhere, by reason."
    );
}

fn publish_vfs(stats: &proto::Stats) {
    let mut allocated = 0u32;
    for s in &stats.vfs {
        let (pf, vf) = split_vf(&s.vf);
        let nf = short("nfs", &s.nf);
        if !nf.is_empty() {
            allocated += 1;
        }
        let labels = [
            Label::new("pf", pf.to_owned()),
            Label::new("vf", vf.to_owned()),
            Label::new("nf", nf.to_owned()),
            Label::new("chain", short("chains", &s.chain).to_owned()),
        ];
        counter!(VF_RECEIVE_PACKETS, labels.iter()).absolute(s.rx_packets);
        counter!(VF_RECEIVE_BYTES, labels.iter()).absolute(s.rx_bytes);
        counter!(VF_TRANSMIT_PACKETS, labels.iter()).absolute(s.tx_packets);
        counter!(VF_TRANSMIT_BYTES, labels.iter()).absolute(s.tx_bytes);
        counter!(VF_DMA_COPIED_BYTES, labels.iter()).absolute(s.dma_copied_bytes);
        counter!(VF_RING_ERRORS, labels.iter()).absolute(s.ring_errors);
        for (reason, n) in &s.drops {
            counter!(VF_DROPPED_PACKETS, with(&labels, "reason", reason)).absolute(*n);
        }
        for (state, n) in [
            ("delivered", s.interrupts_delivered),
            ("coalesced", s.interrupts_coalesced),
            ("blocked", s.interrupts_blocked),
        ] {
            counter!(VF_INTERRUPTS, with(&labels, "state", state)).absolute(n);
        }
        for (reason, n) in &s.dma_faults_by_reason {
            let fault_labels = [
                Label::new("pf", pf.to_owned()),
                Label::new("vf", vf.to_owned()),
                Label::new("reason", reason.clone()),
            ];
            counter!(DMA_FAULTS, fault_labels.iter()).absolute(*n);
        }
    }
    let total = stats.vfs.len() as u32;
    gauge!(VFS, "state" => "allocated").set(allocated);
    gauge!(VFS, "state" => "free").set(total - allocated);
}

fn publish_wire(w: &proto::WireStats) {
    counter!(WIRE_RECEIVE_PACKETS).absolute(w.rx_packets);
    counter!(WIRE_RECEIVE_BYTES).absolute(w.rx_bytes);
    counter!(WIRE_TRANSMIT_PACKETS).absolute(w.tx_packets);
    counter!(WIRE_TRANSMIT_BYTES).absolute(w.tx_bytes);
    for (reason, n) in &w.drops {
        counter!(WIRE_DROPPED_PACKETS, "reason" => reason.clone()).absolute(*n);
    }
}

/// `labels` plus one more.
fn with(labels: &[Label], key: &'static str, value: &str) -> Vec<Label> {
    let mut all = labels.to_vec();
    all.push(Label::new(key, value.to_owned()));
    all
}

/// `nfs/fw` → `fw`; a name without the collection prefix is returned as it is.
fn short<'a>(collection: &str, name: &'a str) -> &'a str {
    name.strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(name)
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

    /// A small parser for the text format: enough for what the exporter writes.
    fn parse(text: &str) -> (Vec<Sample>, BTreeSet<String>, BTreeMap<String, String>) {
        let mut samples = Vec::new();
        let mut help = BTreeSet::new();
        let mut types = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                help.insert(rest.split(' ').next().unwrap().to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                types.insert(name.to_owned(), kind.to_owned());
            } else {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => {
                        let body = rest.strip_suffix('}').unwrap();
                        let labels = body
                            .split("\",")
                            .filter(|p| !p.is_empty())
                            .map(|p| {
                                let (k, v) = p.split_once("=\"").unwrap();
                                (k.to_owned(), v.trim_end_matches('"').to_owned())
                            })
                            .collect();
                        (name, labels)
                    }
                    None => (series, BTreeMap::new()),
                };
                samples.push((name.to_owned(), labels, value.parse().unwrap()));
            }
        }
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
                VFS => "gauge",
                NF_BATCH_SECONDS => "histogram",
                _ => "counter",
            };
            assert_eq!(kind, want, "{name}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
        }

        let fw = [("pf", "0"), ("vf", "0"), ("nf", "fw"), ("chain", "edge")];
        let free = [("pf", "0"), ("vf", "1"), ("nf", ""), ("chain", "")];
        assert_eq!(value(&samples, VF_RECEIVE_PACKETS, &fw), 10.0);
        assert_eq!(value(&samples, VF_RECEIVE_BYTES, &fw), 640.0);
        assert_eq!(value(&samples, VF_TRANSMIT_PACKETS, &fw), 9.0);
        assert_eq!(value(&samples, VF_TRANSMIT_BYTES, &fw), 576.0);
        assert_eq!(value(&samples, VF_DMA_COPIED_BYTES, &fw), 4096.0);
        assert_eq!(value(&samples, VF_RING_ERRORS, &fw), 2.0);
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
        let fw = [("vf", "0"), ("nf", "fw")];
        assert_eq!(value(&samples, VF_RECEIVE_PACKETS, &fw), 1234.0);
    }

    #[test]
    fn a_reassigned_vf_keeps_its_old_series() {
        let m = Metrics::new();
        let mut s = stats();
        m.publish(&s, &[], &HashMap::new());
        s.vfs[0].nf = "nfs/ids".into();
        s.vfs[0].chain = String::new();
        s.vfs[0].rx_packets = 50;
        m.publish(&s, &[], &HashMap::new());
        let (samples, _, _) = parse(&m.render());
        assert_eq!(
            value(&samples, VF_RECEIVE_PACKETS, &[("vf", "0"), ("nf", "fw")]),
            10.0
        );
        let ids = [("vf", "0"), ("nf", "ids"), ("chain", "")];
        assert_eq!(value(&samples, VF_RECEIVE_PACKETS, &ids), 50.0);
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
        assert_eq!(short("nfs", "nfs/fw"), "fw");
        assert_eq!(short("chains", "edge"), "edge");
        assert_eq!(short("nfs", ""), "");
    }

    #[test]
    fn metrics_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Metrics>();
    }
}
