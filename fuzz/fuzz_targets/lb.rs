//! Fuzzes the lb NF's packet path: arbitrary bytes as one received frame, processed
//! by the NF exactly as the runtime hands it a batch. Any panic is a bug.
#![no_main]

const CONFIG: &str = r#"{"vip":"198.51.100.10:80","proto":"tcp","table_size":251,"backends":[{"addr":"10.0.1.1:8080","weight":1},{"addr":"10.0.1.2:8080","weight":3}]}"#;

nf_testkit::fuzz_nf!(nf_lb::Lb, CONFIG);
