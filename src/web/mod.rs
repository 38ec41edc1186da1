//! The dashboard (ARCHITECTURE.md §7): a read-only web UI, its JSON API and `/metrics`, served
//! by axum in the same process as the gRPC API.
//!
//! | route | what |
//! | --- | --- |
//! | `/` | the page (`assets/index.html`) |
//! | `/assets/{*path}` | the page's files, embedded in the binary, cached for a year (the page links them with a content hash) |
//! | `/metrics` | [`metrics::Metrics::render`], Prometheus text format 0.0.4 |
//! | `/api/v1/pf` | the PF |
//! | `/api/v1/vfs` | every VF, idle ones too |
//! | `/api/v1/nfs` | every NF with its status and latest self-report |
//! | `/api/v1/nfs/{name}/report` | one NF's self-report, or 404 |
//! | `/api/v1/chains` | every chain |
//! | `/api/v1/events?limit=N` | the latest events, newest last |
//! | `/api/v1/stats?active_only=B` | per-VF and wire counters |
//! | `/api/v1/stream` | server-sent events: `stats` (rates, once a second) and `event` |
//!
//! JSON is the gRPC messages as serde writes them, so field names match the proto;
//! enum fields stay numbers, with the enum's short name beside them
//! (`"state": 2, "state_name": "running"`).
//!
//! Everything is GET (and HEAD). Any other method gets 405 with `Allow: GET, HEAD`
//! before routing: changes go through the gRPC API, which validates and records
//! them.
//!
//! Controller calls block (they take the control-plane lock and talk to the engine
//! thread), so each runs under `spawn_blocking`: a slow engine never stalls a runtime
//! worker, nor the gRPC server that shares the runtime.

mod assets;
pub mod auth;
pub mod listener;
pub mod metrics;
mod stream;
mod views;

use nfhost_api::names::nf_name;
use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::auth::{Authenticator, Principal};
use crate::control::{ControlError, Controller};
use metrics::Metrics;
use views::{ChainView, EventView, NfView, VfView};

/// Events returned when `/api/v1/events` is asked without a limit.
const DEFAULT_EVENTS: usize = 50;
/// The most events one request returns.
const MAX_EVENTS: usize = 1000;

/// What every handler can reach.
#[derive(Debug, Clone)]
struct App {
    controller: Arc<Controller>,
    metrics: Arc<Metrics>,
    authenticator: Arc<Authenticator>,
}

/// The dashboard, its JSON API and `/metrics`, read-only; callers of the API and
/// `/metrics` authenticated by `authenticator` ([`auth`]).
pub fn router(
    controller: Arc<Controller>,
    metrics: Arc<Metrics>,
    authenticator: Arc<Authenticator>,
) -> Router {
    let app = App {
        controller,
        metrics,
        authenticator,
    };
    Router::new()
        .route("/", get(assets::index))
        .route("/favicon.ico", get(assets::favicon))
        .route("/assets/{*path}", get(assets::asset))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/pf", get(pf))
        .route("/api/v1/vfs", get(vfs))
        .route("/api/v1/nfs", get(nfs))
        .route("/api/v1/nfs/{name}/report", get(nf_report))
        .route("/api/v1/chains", get(chains))
        .route("/api/v1/events", get(events))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/stream", get(stream::stream))
        .fallback(not_found)
        // Run bottom-up: body size, then method, then who is asking.
        .layer(middleware::from_fn_with_state(
            app.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn(read_only))
        .layer(middleware::from_fn(auth::limit_body))
        .with_state(app)
}

/// Why a request failed.
#[derive(Debug, Error)]
enum WebError {
    /// The control plane refused or failed.
    #[error("control plane")]
    Control(#[from] ControlError),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The blocking task running the call panicked or was cancelled.
    #[error("background task")]
    Task(#[from] tokio::task::JoinError),
    /// A response could not be encoded.
    #[error("encoding JSON")]
    Json(#[from] serde_json::Error),
}

impl WebError {
    fn status(&self) -> StatusCode {
        match self {
            WebError::NotFound(_) | WebError::Control(ControlError::NotFound(_)) => {
                StatusCode::NOT_FOUND
            }
            WebError::Control(ControlError::Invalid(_)) => StatusCode::BAD_REQUEST,
            WebError::Control(ControlError::PermissionDenied(_)) => StatusCode::FORBIDDEN,
            // The engine thread is gone or busy shutting down: try again later.
            WebError::Control(ControlError::Engine(_)) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        error_response(self.status(), crate::error_chain(&self))
    }
}

/// `{"error": message}` with `status`: how the API and `/metrics` refuse.
fn error_response(status: StatusCode, message: String) -> Response {
    #[derive(Serialize)]
    struct Body {
        error: String,
    }
    let body = Body { error: message };
    let mut response = json_response(&body).unwrap_or_else(|_| body.error.into_response());
    *response.status_mut() = status;
    response
}

/// Runs a blocking controller call off the runtime's workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WebError> + Send + 'static,
) -> Result<T, WebError> {
    tokio::task::spawn_blocking(f).await?
}

/// `value` as an `application/json` response that no cache keeps.
fn json_response<T: Serialize + ?Sized>(value: &T) -> Result<Response, WebError> {
    let body = serde_json::to_vec(value)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response())
}

/// Refuses anything but GET and HEAD, whatever the path.
async fn read_only(request: Request, next: Next) -> Response {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return next.run(request).await;
    }
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "GET, HEAD")],
        "method not allowed: the dashboard is read-only; change things through the gRPC API (nfctl)\n",
    )
        .into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> WebError {
    WebError::NotFound(format!("{method} {uri}: no such page"))
}

async fn metrics_text(State(app): State<App>) -> Result<Response, WebError> {
    let text = blocking(move || Ok(app.metrics.render())).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

async fn pf(
    State(app): State<App>,
    Extension(_who): Extension<Principal>,
) -> Result<Response, WebError> {
    let pf = blocking(move || Ok(app.controller.get_pf()?)).await?;
    json_response(&pf)
}

async fn vfs(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
) -> Result<Response, WebError> {
    #[derive(Serialize)]
    struct Body {
        vfs: Vec<VfView>,
    }
    let vfs = blocking(move || Ok(app.controller.list_vfs(&who)?)).await?;
    json_response(&Body {
        vfs: vfs.into_iter().map(VfView::from).collect(),
    })
}

async fn nfs(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
) -> Result<Response, WebError> {
    #[derive(Serialize)]
    struct Body {
        nfs: Vec<NfView>,
    }
    let nfs = blocking(move || {
        let c = &app.controller;
        c.list_nfs(&who)
            .into_iter()
            .map(|nf| {
                let report = c.nf_report(&who, &nf.name)?;
                Ok(NfView::new(nf, report.as_deref()))
            })
            .collect::<Result<Vec<_>, WebError>>()
    })
    .await?;
    json_response(&Body { nfs })
}

/// `/api/v1/nfs/{name}/report`: the NF's latest self-report, as it wrote it.
async fn nf_report(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, WebError> {
    let report = blocking(move || {
        // "No such NF" (or not the caller's) and "no report yet" differ.
        app.controller
            .nf_report(&who, &name)?
            .ok_or_else(|| WebError::NotFound(format!("{} has no report yet", nf_name(&name))))
    })
    .await?;
    // The NF wrote it; pass it on only if it is the JSON it claims to be.
    let value: serde_json::Value = serde_json::from_str(&report)?;
    json_response(&value)
}

async fn chains(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
) -> Result<Response, WebError> {
    #[derive(Serialize)]
    struct Body {
        chains: Vec<ChainView>,
    }
    let chains = blocking(move || Ok(app.controller.list_chains(&who))).await?;
    json_response(&Body {
        chains: chains.into_iter().map(ChainView::from).collect(),
    })
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    limit: Option<usize>,
}

async fn events(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Query(query): Query<EventsQuery>,
) -> Result<Response, WebError> {
    #[derive(Serialize)]
    struct Body {
        events: Vec<EventView>,
    }
    let limit = query.limit.unwrap_or(DEFAULT_EVENTS).min(MAX_EVENTS);
    let events = blocking(move || Ok(app.controller.events(&who, limit)?)).await?;
    json_response(&Body {
        events: events.into_iter().map(EventView::from).collect(),
    })
}

#[derive(Debug, Deserialize)]
struct StatsQuery {
    #[serde(default)]
    active_only: bool,
}

async fn stats(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Query(query): Query<StatsQuery>,
) -> Result<Response, WebError> {
    let stats = blocking(move || Ok(app.controller.stats(&who, query.active_only)?)).await?;
    json_response(&stats)
}
