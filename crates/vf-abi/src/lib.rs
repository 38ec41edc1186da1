//! The VF contract between nfhost's NIC engine and a network function, in one
//! place that both sides build on (the habit of DPDK's `memif.h`: a contract
//! between two programs has one source of truth):
//!
//! - [`bar`]: the BAR's register page, its offsets and the ABI version;
//! - [`ring`]: the ring layout (AF_XDP style), the descriptor, its flags and the
//!   UMEM frame size;
//! - [`attach`]: the attach protocol's messages and fixed numbers;
//! - [`memif`]: the memif protocol (DPDK's and VPP's), the VF's second face;
//! - [`MacAddr`]: the VF's address.
//!
//! Plain definitions: no I/O, no shared memory. The code that drives the rings and
//! the BAR over shared memory is `nfhost-sys`.
#![forbid(unsafe_code)]

pub mod attach;
pub mod bar;
mod mac;
pub mod memif;
pub mod ring;

pub use bar::{ABI_VERSION, IrqVector};
pub use mac::{MacAddr, ParseMacError};
pub use ring::{COMPLETION_ERROR, Desc, FRAME_SIZE, TX_REFLECT};
