//! nfhost: a network-function host.
//!
//! One service owns the physical function (PF) of an SR-IOV NIC, carves it into
//! virtual functions (VFs) and runs one network function (NF) per VF. See
//! `../shared/DESIGN.md` for the architecture; this crate's modules follow its layout.
//!
//! - [`nic`]: the device model of the emulated NIC (pure, no I/O).
#![forbid(unsafe_code)]

pub mod nic;
