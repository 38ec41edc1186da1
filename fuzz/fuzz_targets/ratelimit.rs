//! Fuzzes the ratelimit NF's packet path: arbitrary bytes as one received frame, processed
//! by the NF exactly as the runtime hands it a batch. Any panic is a bug.
#![no_main]

const CONFIG: &str = r#"{"rate":{"pps":1000},"burst":10,"per_flow":{"key":"5tuple","rate":{"pps":100},"burst":5,"max_flows":64}}"#;

nf_testkit::fuzz_nf!(nf_ratelimit::Ratelimit, CONFIG);
