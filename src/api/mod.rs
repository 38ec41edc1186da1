//! The gRPC API (tonic): generated types and the service handlers.

pub mod proto;
pub mod service;
