//! Fuzzes the firewall NF's packet path: arbitrary bytes as one received frame, processed
//! by the NF exactly as the runtime hands it a batch. Any panic is a bug.
#![no_main]

const CONFIG: &str = r#"{"default":"allow","rules":[{"action":"deny","proto":"udp","sport":"1024-1031"},{"action":"allow","src":"10.0.0.0/8","proto":"tcp","dport":"80"},{"action":"deny","dst":"2001:db8::/32"},{"action":"deny","vlan":100}]}"#;

nf_testkit::fuzz_nf!(nf_firewall::Firewall, CONFIG);
