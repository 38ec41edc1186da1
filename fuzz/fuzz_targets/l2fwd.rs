//! Fuzzes the l2fwd NF's packet path: arbitrary bytes as one received frame, processed
//! by the NF exactly as the runtime hands it a batch. Any panic is a bug.
#![no_main]

const CONFIG: &str = r#""#;

nf_testkit::fuzz_nf!(nf_l2fwd::L2Fwd, CONFIG);
