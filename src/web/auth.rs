//! Who calls the dashboard's API and `/metrics`: the same principals, tokens and
//! client certificates as the gRPC API
//! ([`Authenticator`](crate::auth::Authenticator)). The page and its assets are
//! public; `/api/v1/*` needs a principal (a tenant sees only its own objects),
//! `/metrics` an admin. Without `--auth` every caller is an admin.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::{App, error_response};
use crate::auth::Principal;

/// The most a request body may be: every route is GET, so a body is a mistake
/// or an attack.
pub const MAX_BODY: u64 = 64 * 1024;

/// The verified client certificate of the connection a request came on, as the
/// listener found it: `None` without one, `Some(None)` for one without a CN.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificate(pub Option<Option<String>>);

/// Whether `path` needs a principal.
fn protected(path: &str) -> bool {
    path == "/metrics" || path.starts_with("/api/")
}

/// Puts the caller's [`Principal`] into the request, or answers 401 (no or bad
/// credentials) or 403 (`/metrics` for a tenant).
pub(super) async fn authenticate(
    State(app): State<App>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    if !protected(&path) {
        return next.run(request).await;
    }
    let cn = request
        .extensions()
        .get::<PeerCertificate>()
        .and_then(|p| p.0.clone());
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let who = match app
        .authenticator
        .authenticate(authorization, cn.as_ref().map(|c| c.as_deref()))
    {
        Ok(who) => who,
        Err(why) => {
            tracing::warn!(path, reason = %why, "HTTP request refused: not authenticated");
            let mut response = error_response(StatusCode::UNAUTHORIZED, why.to_string());
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"nfhost\""),
            );
            return response;
        }
    };
    if path == "/metrics" && !who.is_admin() {
        return error_response(
            StatusCode::FORBIDDEN,
            format!("permission denied: /metrics is for admins; {who} may not"),
        );
    }
    request.extensions_mut().insert::<Principal>(who);
    next.run(request).await
}

/// Answers 413 to a request whose body is over [`MAX_BODY`]: at once when its
/// `Content-Length` says so, else (a chunked body) once that much has come.
pub(super) async fn limit_body(request: Request, next: Next) -> Response {
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {MAX_BODY} bytes"),
        )
    };
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n > MAX_BODY) {
        return too_large();
    }
    if length.is_none() && request.headers().contains_key(header::TRANSFER_ENCODING) {
        // No route reads a body: take it here, up to the limit.
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY as usize).await else {
            return too_large();
        };
        return next
            .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
            .await;
    }
    next.run(request).await
}
