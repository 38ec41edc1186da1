//! nfhost's API schema, shared by the service and its clients (`nfctl`): the
//! generated gRPC types ([`proto`]), typed resource names ([`names`]), chain files
//! ([`chain_file`]) and the one validator of chains and NFs ([`validate`]), so a
//! client checks a request by the same rules the server enforces.
//!
//! It links no part of the server: no engine, no store, no web server.
#![forbid(unsafe_code)]

pub mod chain_file;
pub mod chain_update;
pub mod names;
pub mod proto;
pub mod validate;

pub use vf_abi::{MacAddr, ParseMacError};
