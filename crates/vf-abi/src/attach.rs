//! The attach protocol's messages (`proto/nfhost/vf/v1/attach.proto`) and its
//! fixed numbers: how an NF asks for its VF, maps its UMEM, binds its vectors.
//! The transport (a `SOCK_SEQPACKET` socket, protobuf framing, fds by
//! `SCM_RIGHTS`) is in `nfhost-sys`; the NF's driver in `nf-sdk`.

/// Types generated from `proto/nfhost/vf/v1/attach.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/nfhost.vf.v1.rs"));
}

/// Largest packet, length prefix included, either side may send.
pub const MAX_PACKET: usize = 64 * 1024;

/// Largest NF configuration, in bytes: what the API accepts, what the engine
/// sends in a `Config` memfd, and what an NF reads from one.
pub const MAX_CONFIG: usize = 1 << 20;

/// Environment variable holding the number of the attach socket a child NF
/// process inherits.
pub const ENV_VF_FD: &str = "NFHOST_VF_FD";

/// Environment variable holding the attach token of a child NF process, which it
/// presents in `Hello`.
pub const ENV_VF_TOKEN: &str = "NFHOST_VF_TOKEN";
