//! `nfhost`: the network-function host service.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod demo;
mod demo_model;

/// nfhost runs network functions on the virtual functions of an SR-IOV NIC
/// (emulated by default).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the embedded default: emulated NIC, gen wire, a chain of real NF processes;
    /// prints per-VF throughput every second.
    Demo(demo::Args),
    /// Walk the device model alone (switch, IOMMU, interrupt remapping) through a
    /// chain and print what it decided, per VF.
    Model(demo_model::Args),
    /// Measure the data path: real engine, real NF processes, the gen wire.
    Bench(bench::Args),
    /// Network-function processes.
    Nf {
        #[command(subcommand)]
        command: NfCommand,
    },
}

#[derive(Debug, Subcommand)]
enum NfCommand {
    /// Run one NF on the VF whose socket this process inherited (started by nfhost).
    Run {
        /// NF kind: l2fwd, monitor.
        #[arg(long)]
        kind: String,
        /// Instance name.
        #[arg(long)]
        name: String,
        /// The NF's JSON configuration (empty for defaults).
        #[arg(long, default_value = "")]
        config: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Model(args) => demo_model::run(&args).map_err(Into::into),
        Command::Bench(args) => bench::run(&args),
        Command::Nf {
            command: NfCommand::Run { kind, name, config },
        } => nf_run(&kind, &name, &config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("nfhost: {}", chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The NF child: build the NF, attach over the inherited socket, run the loop.
fn nf_run(kind: &str, name: &str, config: &str) -> Result<(), Box<dyn std::error::Error>> {
    let nf = nfhost::nf_kinds::build(kind, config)?;
    let client = nf_sdk::VfClient::from_env()?;
    let token = std::env::var(nfhost::dataplane::nf_process::ENV_VF_TOKEN).map_err(|_| {
        format!("{name}: NFHOST_VF_TOKEN is not set; NF processes are started by nfhost")
    })?;
    nf_sdk::runtime::run(nf, client, &token, nf_sdk::runtime::Options::default())
        .map_err(|e| format!("NF {name} ({kind}): {}", chain(&e)))?;
    Ok(())
}
