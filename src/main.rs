//! `nfhost`: the network-function host service.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Walk the emulated NIC's device model through a chain on built-in traffic and
    /// print what its switch, IOMMU and interrupt remapping decided, per VF.
    Demo(demo_model::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo_model::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("nfhost: {err}");
            ExitCode::FAILURE
        }
    }
}
