//! Fuzzes the monitor NF's packet path: arbitrary bytes as one received frame, processed
//! by the NF exactly as the runtime hands it a batch. Any panic is a bug.
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use nf_sdk::{Batch, NetworkFunction, Packet};

/// One NF for the whole run, so state (flow tables, buckets) is fuzzed too.
static NF: Mutex<Option<nf_monitor::Monitor>> = Mutex::new(None);

const CONFIG: &str = r#"{"max_flows":64,"top":5}"#;

fuzz_target!(|data: &[u8]| {
    let mut guard = NF.lock().unwrap_or_else(|e| e.into_inner());
    let nf = guard.get_or_insert_with(|| {
        nf_monitor::Monitor::from_config(CONFIG).expect("fuzz config is valid")
    });
    let mut buf = [0u8; 2048];
    let len = data.len().min(buf.len());
    buf[..len].copy_from_slice(&data[..len]);
    let vlan = data.first().map_or(0, |b| u16::from(*b & 1) * 100);
    let mut packets = [Packet::new(&mut buf, len, vlan)];
    let mut batch = Batch::new(&mut packets);
    nf.process(&mut batch);
});
