//! nfhost: a network-function host.
//!
//! One service owns the physical function (PF) of an SR-IOV NIC, carves it into
//! virtual functions (VFs) and runs one network function (NF) per VF. See
//! `docs/ARCHITECTURE.md` for the architecture; this crate's modules follow its layout
//! (§8), beside the crates under `crates/` and `nfs/`.
//!
//! - [`nic`]: the device model of the emulated NIC (pure, no I/O).
//! - [`dataplane`]: the NIC engine thread, the `gen` wire, NF processes.
//! - [`nf_kinds`]: the NF kinds an NF process can run.
//! - [`store`]: the desired state in sled, loaded on start and reconciled.
//! - [`control`]: the controller: validation, reconciler, NF supervisor.
//! - [`api`]: the gRPC API's handlers (tonic), thin over the controller; the API
//!   schema itself (types, names, chain files, validator) is the `nfhost-api` crate.
//! - [`serve`]: `nfhost serve`, the service.
//! - [`k8s`]: nfhost as the kubelet's device plugin for a pool of VFs.
//! - [`testpmd`]: driving DPDK's testpmd, the bench's peer and a memif client.
//!
//! This crate has no `unsafe`: shared memory, rings and fds live in `nf-sdk`.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod control;
pub mod dataplane;
pub mod k8s;
pub mod logging;
pub mod nf_kinds;
pub mod nic;
pub mod serve;
pub mod store;
pub mod testpmd;
pub mod web;

/// An error and its causes on one line: `outer: inner: root`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
