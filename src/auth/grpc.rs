//! The gRPC side: an interceptor in front of every nfhost service that puts the
//! caller's [`Principal`] into the request's extensions, or answers
//! `UNAUTHENTICATED`.

use std::sync::Arc;

use tonic::{Request, Status};

use super::authenticator::Authenticator;
use super::principal::Principal;
use super::tls::common_name;

/// Authenticates each call (tonic [`Interceptor`](tonic::service::Interceptor)).
#[derive(Debug, Clone)]
pub struct Authenticate {
    authenticator: Arc<Authenticator>,
}

impl Authenticate {
    /// Calls authenticated by `authenticator`.
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Authenticate { authenticator }
    }
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let cn = request
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|c| common_name(c)));
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let principal = self
            .authenticator
            .authenticate(authorization, cn.as_ref().map(|c| c.as_deref()))
            .map_err(|why| {
                tracing::warn!(
                    peer = ?request.remote_addr(),
                    reason = %why,
                    "gRPC call refused: not authenticated"
                );
                Status::unauthenticated(why.to_string())
            })?;
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

/// The caller of a request that passed [`Authenticate`].
pub fn caller<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::internal("the call reached a handler without authentication"))
}
