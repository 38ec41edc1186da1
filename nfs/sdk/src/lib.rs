//! `nf-sdk`: what a network function is written against.
//!
//! - [`NetworkFunction`]: the one trait an NF implements; it gets a [`Batch`] of
//!   [`Packet`]s (views into its own packet memory: zero copy) and sets each one's
//!   [`Verdict`].
//! - [`runtime`]: attaches to the VF, sets up packet memory, and runs the receive
//!   loop: sleep on the rx interrupt, drain the rx ring in batches, `process`, post
//!   the verdicts, sleep again (ARCHITECTURE.md §3).
//! - [`VfClient`]: the NF's end of the attach protocol (ARCHITECTURE.md §2).
//! - [`checksum`]: incremental checksum updates (RFC 1624) for NFs that rewrite
//!   headers.
//!
//! An NF of your own runs on nfhost as an `exec` NF (nfhost starts your binary:
//! [`VfClient::from_env`]) or an `external` one (you start it, and it connects to
//! its VF's endpoint: [`VfClient::connect`]); either way [`runtime::run_configured`]
//! takes its configuration over the socket and runs it. The crate's README walks
//! through writing one; `examples/nf-example` is a complete one.
//!
//! The shared memory, rings and fd passing underneath are `nfhost-sys`, the
//! project's one crate with `unsafe`; this crate has none. Linux only.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod attach;
pub mod checksum;
pub mod nf;
pub mod runtime;

pub use attach::{Attached, ClientError, ProtoError, VfClient};
pub use nf::{Batch, EthernetFrame, MAX_BATCH, NetworkFunction, Packet, Verdict};
pub use nfhost_sys::{EventFd, SharedMemory};
pub use vf_abi::{FRAME_SIZE, MacAddr};
