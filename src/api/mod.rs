//! The gRPC API's service handlers (tonic), thin over the controller. The types
//! they serve are the API schema's, in `nfhost-api`.

pub mod limits;
pub mod service;
