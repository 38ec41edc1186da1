//! nfhost: a network-function host.
//!
//! One service owns the physical function (PF) of an SR-IOV NIC, carves it into
//! virtual functions (VFs) and runs one network function (NF) per VF. See
//! `../shared/DESIGN.md` for the architecture; this crate's modules follow its layout.
//!
//! - [`nic`]: the device model of the emulated NIC (pure, no I/O).
//! - [`dataplane`]: the NIC engine thread, the `gen` wire, NF processes.
//! - [`nf_kinds`]: the NF kinds an NF process can run.
//!
//! This crate has no `unsafe`: shared memory, rings and fds live in `nf-sdk`.
#![forbid(unsafe_code)]

pub mod dataplane;
pub mod nf_kinds;
pub mod nic;
