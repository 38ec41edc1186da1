//! The VF contract between nfhost's NIC engine and a network function: the one
//! place where both sides read what a VF is (the DPDK `memif.h` habit: a contract
//! between two programs has one source of truth).
#![forbid(unsafe_code)]

mod mac;

pub use mac::{MacAddr, ParseMacError};
