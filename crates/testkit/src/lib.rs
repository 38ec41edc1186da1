//! What the NF test suites and fuzz targets share, so that each writes it once:
//!
//! - [`MAC_A`], [`MAC_B`] and frame builders (TCP, UDP, ICMP echo, plain IP,
//!   ARP, LLDP, VLAN tags), built with etherparse so that headers and
//!   checksums are right without this crate computing them;
//! - the batch harness ([`run`], [`run_with`], [`run_tagged_with`]): frames
//!   through an NF the way the runtime hands them over;
//! - [`fuzz_nf!`]: a whole fuzz target in one line.
//!
//! Dev-only: a `[dev-dependencies]` entry of the NF crates and a dependency of
//! the fuzz crate, never of anything shipped.
#![forbid(unsafe_code)]

mod frames;
mod fuzz;
mod harness;

pub use frames::{
    MAC_A, MAC_B, TcpStep, arp_request, echo4, echo6, ip4, lldp, tagged, tcp4, tcp4_with, tcp6,
    tcp6_with, udp4, udp6,
};
pub use fuzz::{fuzz_one, fuzz_vlan};
pub use harness::{FRAME, run, run_tagged_with, run_with};
