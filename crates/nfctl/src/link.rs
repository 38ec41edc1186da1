//! The link to the server: its URL, TLS or cleartext by the URL's scheme, and the
//! bearer token, all checked before anything is sent.
//!
//! `https://` is always TLS and never falls back to cleartext. `http://` is
//! cleartext, so TLS files with it are refused, and so is a token unless the server
//! is on this machine (a bearer token is a password: RFC 6750 §5.3 wants TLS).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tonic::codegen::http::Uri;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::auth::{Auth, Token, TokenError};
use crate::fail::Failure;
use crate::tls::{PemError, TlsFiles};

const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// What every generated client is made over: `XServiceClient::new(conn)`. It puts
/// the token, if any, on every call.
pub type Conn = InterceptedService<Channel, Auth>;

/// The global flags that say how to reach the server.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection")]
pub struct LinkArgs {
    /// The nfhost gRPC endpoint, http:// or https:// [env: NFHOST_SERVER] [default: http://127.0.0.1:50051].
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// PEM CA certificate(s) to trust for the server's certificate, instead of the system's roots (https:// only).
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS; needs --key (https:// only).
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// File whose first line is the bearer token sent with every call; without it, the token is NFHOST_TOKEN's value, if set. Over http:// only to 127.0.0.1, ::1 or localhost.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// Why the server cannot be reached as asked; nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// `--server` does not parse, or is neither http:// nor https://.
    #[error("--server {server:?} is not a usable URL: {reason}")]
    BadServer {
        /// As given.
        server: String,
        /// Why.
        reason: String,
    },
    /// TLS files with a cleartext URL.
    #[error("TLS options given ({flags}) but the server URL is {server}: use https://")]
    TlsOverHttp {
        /// The TLS flags given.
        flags: String,
        /// The server URL.
        server: String,
    },
    /// A token with a cleartext URL to another machine.
    #[error(
        "a bearer token must not cross the network in cleartext, and the server URL is {server}: use https:// (http:// takes a token only to 127.0.0.1, ::1 or localhost)"
    )]
    TokenOverHttp {
        /// The server URL.
        server: String,
    },
    /// The token could not be had.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A TLS file cannot be used.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// tonic refused the TLS settings (a key that is not the certificate's, a host
    /// that cannot be a server name, no system roots).
    #[error("cannot set up TLS for {server}")]
    Tls {
        /// The server URL.
        server: String,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
}

/// A checked way to the server; connecting is the only thing left to do.
#[derive(Debug)]
pub struct Link {
    server: String,
    endpoint: Endpoint,
    auth: Auth,
}

impl Link {
    /// Reads and checks what `args` names, against the server URL it gives.
    pub fn new(args: &LinkArgs) -> Result<Link, LinkError> {
        let server = server_url(args.server.clone());
        let bad = |reason: String| LinkError::BadServer {
            server: server.clone(),
            reason,
        };
        let uri: Uri = server.parse().map_err(|e| bad(format!("{e}")))?;
        let host = uri.host().ok_or_else(|| bad("it has no host".into()))?;
        let tls = uri.scheme_str() == Some("https");
        if !tls && uri.scheme_str() != Some("http") {
            return Err(bad("it must start with http:// or https://".into()));
        }
        let files = TlsFiles {
            ca: args.ca.as_deref(),
            identity: args.cert.as_deref().zip(args.key.as_deref()),
        };
        if !tls && files.any() {
            return Err(LinkError::TlsOverHttp {
                flags: files.flags(),
                server,
            });
        }
        let token = Token::find(args.token_file.as_deref())?;
        if token.is_some() && !tls && !is_loopback(host) {
            return Err(LinkError::TokenOverHttp { server });
        }
        let mut endpoint = Endpoint::from(uri.clone()).connect_timeout(Duration::from_secs(5));
        if tls {
            endpoint =
                endpoint
                    .tls_config(files.config(host)?)
                    .map_err(|source| LinkError::Tls {
                        server: server.clone(),
                        source,
                    })?;
        }
        Ok(Link {
            server,
            endpoint,
            auth: Auth::new(token),
        })
    }

    /// The server URL, as reports show it.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Connects (and for https://, does the TLS handshake), so an absent or
    /// untrusted server is reported as such rather than as the first call's failure.
    pub async fn connect(&self) -> Result<Conn, Failure> {
        let channel = self
            .endpoint
            .connect()
            .await
            .map_err(|error| Failure::Connect {
                server: self.server.clone(),
                error,
            })?;
        Ok(InterceptedService::new(channel, self.auth.clone()))
    }
}

/// `--server`, else `NFHOST_SERVER`, else the default; `host:port` gets `http://`.
fn server_url(flag: Option<String>) -> String {
    let url = flag
        .or_else(|| {
            std::env::var("NFHOST_SERVER")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    if url.contains("://") {
        url
    } else {
        format!("http://{url}")
    }
}

/// True for a host that names this machine: 127.0.0.0/8, ::1 (also as
/// ::ffff:127.x.y.z) or `localhost` (RFC 6761 §6.3 keeps it on loopback).
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_this_machine_only() {
        for host in [
            "127.0.0.1",
            "127.1.2.3",
            "[::1]",
            "localhost",
            "LocalHost",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "192.0.2.1",
            "10.0.0.1",
            "0.0.0.0",
            "[::]",
            "[2001:db8::1]",
            "localhost.example",
            "example.com",
            "128.0.0.1",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    fn args(server: &str) -> LinkArgs {
        LinkArgs {
            server: Some(server.into()),
            ca: None,
            cert: None,
            key: None,
            token_file: None,
        }
    }

    #[test]
    fn a_url_must_be_http_or_https_with_a_host() {
        for server in ["ftp://example.com", "http://", "http://exa mple"] {
            let e = Link::new(&args(server)).expect_err(server);
            assert!(matches!(e, LinkError::BadServer { .. }), "{server}: {e:?}");
        }
        assert!(Link::new(&args("127.0.0.1:50051")).is_ok());
    }

    #[test]
    fn tls_files_with_http_are_refused() {
        let mut a = args("http://127.0.0.1:1");
        a.ca = Some("/nonexistent/ca.pem".into());
        let e = Link::new(&a).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "TLS options given (--ca) but the server URL is http://127.0.0.1:1: use https://"
        );
    }
}
