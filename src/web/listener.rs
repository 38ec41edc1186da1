//! The dashboard's accept loop: HTTP/1.1 over TCP, or over TLS (rustls) when the
//! service has a certificate, with `TCP_NODELAY` on every connection and the
//! verified client certificate (mutual TLS) handed to each request as a
//! [`PeerCertificate`]. Stops accepting when told to; connections in flight
//! are then closed as their responses end ([`GracefulShutdown`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use super::auth::PeerCertificate;
use crate::auth::tls::common_name;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` completes, then waits for the
/// connections in flight to finish their responses.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of fds or similar: say so, and give the system a moment.
                    tracing::warn!(error = %e, "dashboard: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match acceptor {
                None => connection(stream, PeerCertificate::default(), router, watcher).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    let tls = match handshake {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "dashboard: TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(%peer, "dashboard: TLS handshake timed out");
                            return;
                        }
                    };
                    let cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(|c| common_name(c));
                    connection(tls, PeerCertificate(cert), router, watcher).await;
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves one connection's requests.
async fn connection<S>(stream: S, peer: PeerCertificate, router: Router, watcher: Watcher)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = router.map_request(move |mut request: axum::extract::Request| {
        request.extensions_mut().insert(peer.clone());
        request
    });
    let connection = hyper::server::conn::http1::Builder::new()
        // A client gets this long to send a request's head (slowloris).
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.map_request(
                |r: hyper::Request<hyper::body::Incoming>| r.map(axum::body::Body::new),
            )),
        );
    let _ = watcher.watch(connection).await;
}
