//! Fuzzes the monitor NF's packet path: arbitrary bytes as one received frame, processed
//! by the NF exactly as the runtime hands it a batch. Any panic is a bug.
#![no_main]

const CONFIG: &str = r#"{"max_flows":64,"top":5}"#;

nf_testkit::fuzz_nf!(nf_monitor::Monitor, CONFIG);
