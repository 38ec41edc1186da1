//! The generated gRPC types and services of `proto/nfhost/v1/nfhost.proto`.
#![allow(missing_docs, clippy::all, clippy::pedantic)]
#![allow(missing_debug_implementations)]

tonic::include_proto!("nfhost.v1");

/// The encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("nfhost_descriptor");
