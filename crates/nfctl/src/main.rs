//! `nfctl`: the command-line client of an nfhost service, over its gRPC API
//! (`proto/nfhost/v1/nfhost.proto`).
//!
//! Arguments are checked before anything is sent: names, flags, chain and config
//! files. Usage errors exit 2 (clap); everything else that fails prints one line
//! `nfctl: <what failed>: <why>` (for a refused call, the gRPC status code, the
//! server's message and its field violations) and exits 1.
#![forbid(unsafe_code)]

use std::future::Future;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tonic::transport::{Channel, Endpoint};

mod chain;
mod fail;
mod names;
mod nf;
mod pf;
mod render;
mod telemetry;
mod vf;

use fail::Failure;

const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// Control an nfhost service: its PF and VFs, network functions, chains, telemetry.
#[derive(Debug, Parser)]
#[command(name = "nfctl", version)]
struct Cli {
    /// The nfhost gRPC endpoint [env: NFHOST_SERVER] [default: http://127.0.0.1:50051].
    #[arg(long, global = true, value_name = "URL")]
    server: Option<String>,
    /// Output format: aligned tables for people, or the API messages as JSON.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
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

/// What every command needs: where the server is and how to print.
#[derive(Debug)]
pub struct Ctx {
    pub server: String,
    pub output: Output,
}

impl Ctx {
    /// Connects to the server, so an absent server is reported as such rather than
    /// as the first call's failure.
    pub async fn connect(&self) -> Result<Channel, Failure> {
        let endpoint =
            Endpoint::from_shared(self.server.clone()).map_err(|e| Failure::BadServer {
                server: self.server.clone(),
                reason: e.to_string(),
            })?;
        endpoint
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|error| Failure::Connect {
                server: self.server.clone(),
                error,
            })
    }

    /// A refused or failed call.
    pub fn rpc(&self, what: impl Into<String>, status: tonic::Status) -> Failure {
        Failure::rpc(what, &self.server, status)
    }

    /// A refused or failed call, with what to do about it.
    pub fn rpc_hint(&self, what: String, status: tonic::Status, hint: Option<String>) -> Failure {
        match Failure::rpc(what, &self.server, status) {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Ctx {
        server: server_url(cli.server),
        output: cli.output,
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
