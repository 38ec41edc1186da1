//! What can go wrong in a command, and how it is told to a person: one line
//! `nfctl: <what failed>: <details>`, then indented lines for field violations and a
//! hint when there is something to do about it.

use std::error::Error;
use std::fmt::Write as _;

use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::auth::TOKEN_ENV;
use crate::link::LinkError;
use crate::tls;

/// A command failed.
#[derive(Debug)]
pub enum Failure {
    /// Something given on the command line or in a file is wrong; nothing was sent.
    Invalid(String),
    /// The server cannot be reached as asked (URL, TLS files, token); nothing was sent.
    Link(LinkError),
    /// No connection to the server.
    Connect {
        /// The server URL.
        server: String,
        /// What the transport said.
        error: tonic::transport::Error,
    },
    /// The server refused or failed a call.
    Rpc {
        /// What nfctl was doing: `get pfs/0/vfs/3`.
        what: String,
        /// The server's answer.
        status: Status,
        /// What to do about it, when nfctl knows.
        hint: Option<String>,
        /// The server URL, for the "is it running" hint on UNAVAILABLE.
        server: String,
    },
    /// The server's answer does not make sense.
    Protocol(String),
    /// Writing to stdout failed.
    Stdout(std::io::Error),
}

impl Failure {
    /// A failed call; `what` says what nfctl was doing.
    pub fn rpc(what: impl Into<String>, server: &str, status: Status) -> Self {
        Self::Rpc {
            what: what.into(),
            status,
            hint: None,
            server: server.to_owned(),
        }
    }

    /// True when stdout was closed by the reader (`nfctl … | head`), which is not a
    /// failure worth a message.
    pub fn is_closed_stdout(&self) -> bool {
        matches!(self, Self::Stdout(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// The text for stderr, without the trailing newline.
    pub fn report(&self) -> String {
        match self {
            Self::Invalid(message) | Self::Protocol(message) => format!("nfctl: {message}"),
            Self::Link(error) => format!("nfctl: {}", causes(error)),
            Self::Connect { server, error }
                if server.starts_with("https://") && tls::is_handshake_failure(error) =>
            {
                format!(
                    "nfctl: TLS handshake with nfhost at {server} failed: {}\n{}",
                    causes(error),
                    tls_hint()
                )
            }
            Self::Connect { server, error } => {
                let refused = sources(error)
                    .filter_map(|e| e.downcast_ref::<std::io::Error>())
                    .any(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
                if refused {
                    format!(
                        "nfctl: cannot connect to nfhost at {server}: connection refused\n{}",
                        server_hint()
                    )
                } else {
                    format!(
                        "nfctl: cannot connect to nfhost at {server}: {}\n{}",
                        causes(error),
                        server_hint()
                    )
                }
            }
            Self::Rpc {
                what,
                status,
                hint,
                server,
            } => {
                let mut text = format!(
                    "nfctl: {what}: {}: {}",
                    code_name(status.code()),
                    status.message()
                );
                let local = transport_causes(status);
                if let Some(causes) = &local {
                    let _ = write!(text, ": {causes}");
                }
                if let Some(bad) = status.get_details_bad_request() {
                    for v in bad.field_violations {
                        let _ = write!(text, "\n  {}: {}", v.field, v.description);
                    }
                }
                if let Some(hint) = hint {
                    let _ = write!(text, "\n  {hint}");
                }
                if status.code() == Code::Unauthenticated {
                    let _ = write!(text, "\n  {}", auth_hint());
                }
                // TLS 1.3 lets a server refuse a client's certificate (or its
                // absence) only after the client's handshake is done: the first
                // call is what fails (RFC 8446 §4.4.2.4).
                if local.is_some() && server.starts_with("https://") {
                    let _ = write!(text, "\n  {}", client_cert_hint());
                }
                if status.code() == Code::Unavailable {
                    let _ = write!(
                        text,
                        "\n  is nfhost running at {server}?\n{}",
                        server_hint()
                    );
                }
                text
            }
            Self::Stdout(e) => format!("nfctl: writing the output failed: {e}"),
        }
    }
}

fn server_hint() -> &'static str {
    "  start it with `nfhost serve`, or point nfctl at it with --server URL (or NFHOST_SERVER)"
}

fn tls_hint() -> &'static str {
    "  does the server speak TLS there? Its certificate must name the URL's host and be signed by the CA of --ca (or a system root)"
}

fn client_cert_hint() -> &'static str {
    "if the server wants a client certificate, give one it trusts with --cert/--key"
}

fn auth_hint() -> String {
    format!(
        "give a token with --token-file or {TOKEN_ENV}, or a client certificate with --cert/--key"
    )
}

/// `error` and its causes.
pub fn sources<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |e: &&'a (dyn Error + 'static)| (*e).source())
}

/// What went wrong on nfctl's side of a failed call (the connection broke, TLS
/// failed), when the status comes from tonic's transport rather than the server;
/// on one line, without what the status message already says.
fn transport_causes(status: &Status) -> Option<String> {
    let transport = status
        .source()
        .filter(|e| e.is::<tonic::transport::Error>())?;
    let mut parts = cause_list(transport);
    parts.retain(|c| c != status.message());
    (!parts.is_empty()).then(|| parts.join(": "))
}

/// The causes of a transport error on one line, without the layers that only say
/// "transport error" or repeat their cause.
fn causes(error: &(dyn Error + 'static)) -> String {
    cause_list(error).join(": ")
}

/// The parts of [`causes`].
fn cause_list(error: &(dyn Error + 'static)) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    for e in sources(error) {
        let text = e.to_string();
        if text != "transport error" && !parts.contains(&text) {
            parts.push(text);
        }
    }
    parts
}

/// The canonical name of a gRPC status code, as the API's docs write it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
