//! The NF's end of the attach protocol (ARCHITECTURE.md §2): [`VfClient`], a
//! blocking request/response driver in the style of vfio-user. The NF asks for its
//! VF (`Hello`), maps its UMEM for DMA, binds interrupt vectors to eventfds and
//! enables the VF, all over one Unix socket. The messages are `vf_abi`'s, the
//! transport `nfhost_sys::attach`'s.

pub mod client;

#[cfg(test)]
mod tests;

pub use client::{Attached, ClientError, Peer, PeerAnswer, VfClient};
pub use nfhost_sys::attach::{Code, ENV_VF_FD, ProtoError, pb, socketpair};
