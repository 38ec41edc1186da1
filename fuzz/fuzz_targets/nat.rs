//! Fuzzes the nat NF's packet path: arbitrary bytes as one received frame, processed
//! by the NF exactly as the runtime hands it a batch. Any panic is a bug.
#![no_main]

const CONFIG: &str = r#"{"inside":"10.0.0.0/8","pool":["203.0.113.1"],"port_range":"1024-1100","forwards":[{"proto":"tcp","outside_port":8080,"inside":"10.0.0.5:80"}]}"#;

nf_testkit::fuzz_nf!(nf_nat::Nat, CONFIG);
