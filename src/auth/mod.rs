//! Who may call, and how they prove it (ARCHITECTURE.md §5, "Tenants").
//!
//! | module | job |
//! |---|---|
//! | [`principal`] | a caller: admin or tenant, and a tenant's quotas |
//! | [`principals`] | the `--auth` file: principals by the SHA-256 of their tokens |
//! | [`authenticator`] | credentials (a bearer token, a client certificate's CN) to a principal |
//! | [`grpc`] | the interceptor in front of the gRPC services |
//! | [`tls`] | the TLS files, for tonic and for the dashboard, and client certificates' CNs |
//! | [`listen`] | which listen addresses need authentication |
//!
//! What each principal may do is the control plane's decision: every request
//! method of [`crate::control::Controller`] takes the caller.

pub mod authenticator;
pub mod grpc;
pub mod listen;
pub mod principal;
pub mod principals;
pub mod tls;

pub use authenticator::{Authenticator, Unauthenticated};
pub use principal::{Principal, Quota, Role};
