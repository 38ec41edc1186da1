//! `nfctl`: the command-line client of an nfhost service, over its gRPC API
//! (`proto/nfhost/v1/nfhost.proto`).
//!
//! Arguments are checked before anything is sent: names, flags, chain and config
//! files. Usage errors exit 2 (clap); everything else that fails prints one line
//! `nfctl: <what failed>: <why>` (for a refused call, the gRPC status code, the
//! server's message and its field violations) and exits 1.
//!
//! How nfctl reaches the server (global flags, see [`link::LinkArgs`]):
//! - `--server URL` (or `NFHOST_SERVER`): `https://` is always TLS, with the URL's
//!   host as the name the server's certificate must have, and never falls back to
//!   cleartext; `http://` (or a bare `host:port`) is cleartext.
//! - `--ca FILE`: PEM CA certificate(s) to trust instead of the system's roots.
//! - `--cert FILE --key FILE`: a PEM client certificate and its key, for mutual TLS;
//!   one without the other is a usage error. TLS flags with `http://` are refused.
//! - `--token-file FILE` (its first line), else `NFHOST_TOKEN`: a bearer token, sent
//!   with every call as `authorization: Bearer TOKEN` and never printed. Over
//!   `http://` it is refused unless the server is 127.0.0.0/8, ::1 or localhost.
//!
//! A call refused as UNAUTHENTICATED says how to give credentials.
#![forbid(unsafe_code)]

use std::future::Future;
use std::io::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};

mod auth;
mod chain;
mod fail;
mod link;
mod names;
mod nf;
mod pf;
mod render;
mod telemetry;
mod tls;
mod vf;

use fail::Failure;
use link::{Conn, Link, LinkArgs};

/// Control an nfhost service: its PF and VFs, network functions, chains, telemetry.
#[derive(Debug, Parser)]
#[command(name = "nfctl", version)]
struct Cli {
    /// Output format: aligned tables for people, or the API messages as JSON.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    link: LinkArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The physical function: show it, set its VF count.
    Pf {
        #[command(subcommand)]
        command: pf::PfCommand,
    },
    /// Virtual functions: list, show, configure, reset.
    Vf {
        #[command(subcommand)]
        command: vf::VfCommand,
    },
    /// Network functions: create, list, show, delete.
    Nf {
        #[command(subcommand)]
        command: nf::NfCommand,
    },
    /// Chains of NFs: apply a chain file, list, show, delete.
    Chain {
        #[command(subcommand)]
        command: chain::ChainCommand,
    },
    /// Per-VF counters: packets, rates, drops, copied bytes.
    Stats(telemetry::StatsArgs),
    /// Recent events (DMA faults, NF exits and restarts, throttling); --watch follows.
    Events(telemetry::EventsArgs),
}

/// What every command needs: how to reach the server and how to print.
#[derive(Debug)]
pub struct Ctx {
    pub link: Link,
    pub output: Output,
}

impl Ctx {
    /// Connects to the server (TLS handshake included), so an absent or untrusted
    /// server is reported as such rather than as the first call's failure. Every
    /// generated client takes the result: `PfServiceClient::new(ctx.connect().await?)`.
    pub async fn connect(&self) -> Result<Conn, Failure> {
        self.link.connect().await
    }

    /// A refused or failed call.
    pub fn rpc(&self, what: impl Into<String>, status: tonic::Status) -> Failure {
        Failure::rpc(what, self.link.server(), status)
    }

    /// A refused or failed call, with what to do about it.
    pub fn rpc_hint(&self, what: String, status: tonic::Status, hint: Option<String>) -> Failure {
        match Failure::rpc(what, self.link.server(), status) {
            Failure::Rpc {
                what,
                status,
                server,
                ..
            } => Failure::Rpc {
                what,
                status,
                hint,
                server,
            },
            other => other,
        }
    }

    /// Writes `text` to stdout as it is.
    pub fn print(&self, text: &str) -> Result<(), Failure> {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(Failure::Stdout)
    }

    /// Writes `message` as pretty JSON.
    pub fn json<T: serde::Serialize>(&self, message: &T) -> Result<(), Failure> {
        let text = serde_json::to_string_pretty(message)
            .map_err(|e| Failure::Protocol(format!("cannot write the answer as JSON: {e}")))?;
        self.print(&(text + "\n"))
    }

    /// `message` as JSON, or as `table` renders it.
    pub fn show<T: serde::Serialize>(
        &self,
        message: &T,
        table: impl FnOnce() -> String,
    ) -> Result<(), Failure> {
        match self.output {
            Output::Json => self.json(message),
            Output::Table => self.print(&table()),
        }
    }
}

/// Every item of a paged list (AIP-158): `fetch(token)` returns a page and the next
/// token, empty on the last page.
pub async fn all_pages<T, F, Fut>(ctx: &Ctx, what: &str, mut fetch: F) -> Result<Vec<T>, Failure>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), tonic::Status>>,
{
    let mut items = Vec::new();
    let mut token = String::new();
    let mut seen = std::collections::HashSet::new();
    loop {
        let (page, next) = fetch(token).await.map_err(|s| ctx.rpc(what, s))?;
        items.extend(page);
        if next.is_empty() {
            return Ok(items);
        }
        // A server that hands back a token twice would keep nfctl here forever.
        if !seen.insert(next.clone()) {
            return Err(Failure::Protocol(format!(
                "{what}: the server repeated page token {next:?}"
            )));
        }
        token = next;
    }
}

async fn run(ctx: &Ctx, command: Command) -> Result<(), Failure> {
    match command {
        Command::Pf { command } => pf::run(ctx, command).await,
        Command::Vf { command } => vf::run(ctx, command).await,
        Command::Nf { command } => nf::run(ctx, command).await,
        Command::Chain { command } => chain::run(ctx, command).await,
        Command::Stats(args) => telemetry::stats(ctx, args).await,
        Command::Events(args) => telemetry::events(ctx, args).await,
    }
}

/// A file `name` holding `text`, in a scratch directory of this test process.
#[cfg(test)]
fn scratch_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nfctl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.link.cert.is_some() != cli.link.key.is_some() {
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--cert and --key go together: give both for mutual TLS, or neither",
            )
            .exit();
    }
    let ctx = match Link::new(&cli.link) {
        Ok(link) => Ctx {
            link,
            output: cli.output,
        },
        Err(e) => {
            eprintln!("{}", Failure::Link(e).report());
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nfctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&ctx, cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) if f.is_closed_stdout() => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("{}", f.report());
            ExitCode::FAILURE
        }
    }
}
