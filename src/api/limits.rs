//! Size limits of the gRPC API, and the status an over-size request gets.
//!
//! A request is at most [`MAX_REQUEST`] bytes (tonic's default, said here so that
//! it is one decision); an NF's config at most [`vf_abi::attach::MAX_CONFIG`]
//! (checked by the validator, `INVALID_ARGUMENT` naming the limit); a list page at
//! most [`MAX_PAGE`] bytes, so that any page fits any client's default 4 MiB.
//!
//! tonic answers a request over its decoding limit with `OUT_OF_RANGE`; the gRPC
//! status code table (grpc/doc/statuscodes.md) says a message larger than the
//! limit is `RESOURCE_EXHAUSTED`, which is what clients retry or report as such.
//! [`OversizeIsExhausted`] rewrites that one answer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use http_body_util::combinators::MapFrame;

/// Largest request message the server decodes.
pub const MAX_REQUEST: usize = 4 << 20;
/// Largest list page, encoded; a page always holds at least one item.
pub const MAX_PAGE: usize = 2 << 20;

/// What tonic says when a message is over its limit.
const TOO_LARGE: &str = "message length too large";
/// `OUT_OF_RANGE` and `RESOURCE_EXHAUSTED` as `grpc-status` values.
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

/// Wraps the gRPC routes: an `OUT_OF_RANGE` answer for an over-size message
/// becomes `RESOURCE_EXHAUSTED`, message kept, whether the status travels in the
/// headers (a trailers-only answer) or in the trailers.
#[derive(Debug, Clone)]
pub struct OversizeIsExhausted<S>(pub S);

/// A response body whose trailers are rewritten.
type Rewritten<B> =
    MapFrame<B, fn(Frame<<B as http_body::Body>::Data>) -> Frame<<B as http_body::Body>::Data>>;

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for OversizeIsExhausted<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: http_body::Body,
{
    type Response = Response<Rewritten<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let answer = self.0.call(request);
        Box::pin(async move {
            let (mut parts, body) = answer.await?.into_parts();
            rewrite(&mut parts.headers);
            let frames: fn(Frame<ResBody::Data>) -> Frame<ResBody::Data> = rewrite_trailers;
            Ok(Response::from_parts(parts, body.map_frame(frames)))
        })
    }
}

/// The rewrite on a body's trailers frame; data frames pass untouched.
fn rewrite_trailers<D>(mut frame: Frame<D>) -> Frame<D> {
    if let Some(trailers) = frame.trailers_mut() {
        rewrite(trailers);
    }
    frame
}

/// The rewrite itself, on headers or trailers.
fn rewrite(headers: &mut axum::http::HeaderMap) {
    let oversize = headers
        .get("grpc-status")
        .is_some_and(|s| s == OUT_OF_RANGE)
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            // The message is percent-encoded (the gRPC HTTP/2 protocol).
            .is_some_and(|m| m.replace("%20", " ").contains(TOO_LARGE));
    if oversize {
        headers.insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(status: &'static str, message: &'static str) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static(status));
        h.insert("grpc-message", HeaderValue::from_static(message));
        h
    }

    #[test]
    fn only_the_oversize_answer_is_rewritten() {
        let mut h = headers(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found%205000000%20bytes",
        );
        rewrite(&mut h);
        assert_eq!(h["grpc-status"], "8");
        let mut other = headers("11", "page_token out of range");
        rewrite(&mut other);
        assert_eq!(other["grpc-status"], "11");
        let mut ok = headers("0", "");
        rewrite(&mut ok);
        assert_eq!(ok["grpc-status"], "0");
    }
}
