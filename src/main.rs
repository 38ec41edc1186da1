//! `nfhost`: the network-function host service.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use nfhost::serve::ServeSettings;

mod bench;
mod demo;
mod demo_model;

/// nfhost runs network functions on the virtual functions of an SR-IOV NIC
/// (emulated by default).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// How log lines are written to stderr: text, or one JSON object per line.
    /// `RUST_LOG` picks what is logged (default `info`).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "NFHOST_LOG_FORMAT",
        default_value_t
    )]
    log_format: nfhost::logging::LogFormat,
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
    /// Run the service: gRPC API, desired state, NIC engine, NF supervisor.
    Serve(Box<ServeArgs>),
    /// Network-function processes.
    Nf {
        #[command(subcommand)]
        command: NfCommand,
    },
}

/// Flags of `nfhost serve`.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML file with the settings below, keys named like the flags with `_` for `-`
    /// (`data_dir = "/var/lib/nfhost"`); flags given win over it.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    #[command(flatten)]
    settings: ServeSettings,
}

#[derive(Debug, Subcommand)]
enum NfCommand {
    /// Run one NF on the VF whose socket this process inherited (started by nfhost).
    /// Its configuration comes over that socket, never on the command line.
    Run {
        /// NF kind: l2fwd, monitor, firewall, nat, lb, ratelimit.
        #[arg(long)]
        kind: String,
        /// Instance name.
        #[arg(long)]
        name: String,
        /// Drop to this uid before anything else (with --gid).
        #[arg(long, requires = "gid")]
        uid: Option<u32>,
        /// Drop to this gid, the only group (with --uid).
        #[arg(long, requires = "uid")]
        gid: Option<u32>,
    },
    /// Run a user's NF binary (an `exec` NF) on the VF whose socket this process
    /// inherited: enter the sandbox, then execute the binary, which inherits the
    /// socket and finds it in NFHOST_VF_FD (started by nfhost).
    Exec {
        /// Instance name.
        #[arg(long)]
        name: String,
        /// Drop to this uid before executing the binary (with --gid).
        #[arg(long, requires = "gid")]
        uid: Option<u32>,
        /// Drop to this gid, the only group (with --uid).
        #[arg(long, requires = "uid")]
        gid: Option<u32>,
        /// The binary and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
}

fn main() -> ExitCode {
    // The matches are kept: `serve` needs to know which flags were given.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    nfhost::logging::init(cli.log_format);
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Model(args) => demo_model::run(&args).map_err(Into::into),
        Command::Bench(args) => bench::run(&args),
        Command::Serve(args) => serve(*args, matches.subcommand_matches("serve")),
        Command::Nf {
            command:
                NfCommand::Run {
                    kind,
                    name,
                    uid,
                    gid,
                },
        } => nf_run(&kind, &name, uid.zip(gid)),
        Command::Nf {
            command:
                NfCommand::Exec {
                    name,
                    uid,
                    gid,
                    command,
                },
        } => nf_exec(&name, uid.zip(gid), &command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("nfhost: {}", nfhost::error_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// `flags`: the matches of the `serve` subcommand, which tell the flags given from
/// those left out.
fn serve(
    args: ServeArgs,
    flags: Option<&clap::ArgMatches>,
) -> Result<(), Box<dyn std::error::Error>> {
    let settings = match (&args.config, flags) {
        (None, _) => args.settings,
        (Some(path), Some(flags)) => ServeSettings::from_file(path)?.with_flags(flags)?,
        (Some(_), None) => return Err("clap gave no matches for `serve`".into()),
    };
    let exe = nfhost::dataplane::nf_process::current_exe()?;
    nfhost::serve::serve(settings, exe)?;
    Ok(())
}

/// An `exec` NF's trampoline: enter the sandbox and become the user's binary (it
/// keeps the attach socket on fd 0, the environment nfhost set, and the
/// parent-death signal, which survives exec).
fn nf_exec(
    name: &str,
    user: Option<(u32, u32)>,
    command: &[std::ffi::OsString],
) -> Result<(), Box<dyn std::error::Error>> {
    use std::os::unix::process::CommandExt;
    let user = user.map(|(uid, gid)| nfhost::dataplane::sandbox::NfUser { uid, gid });
    nfhost::dataplane::sandbox::enter(user)
        .map_err(|e| format!("NF {name} (exec): {}", nfhost::error_chain(&e)))?;
    nfhost::dataplane::nf_process::die_with_parent()?;
    let (program, args) = command.split_first().ok_or("no binary given")?;
    let error = std::process::Command::new(program).args(args).exec();
    Err(format!(
        "NF {name} (exec): executing {}: {error}",
        program.to_string_lossy()
    )
    .into())
}

/// The NF child: enter the sandbox, attach over the inherited socket, ask for the
/// config, build the NF from it, run the loop.
fn nf_run(
    kind: &str,
    name: &str,
    user: Option<(u32, u32)>,
) -> Result<(), Box<dyn std::error::Error>> {
    let user = user.map(|(uid, gid)| nfhost::dataplane::sandbox::NfUser { uid, gid });
    nfhost::dataplane::sandbox::enter(user)
        .map_err(|e| format!("NF {name} ({kind}): {}", nfhost::error_chain(&e)))?;
    nfhost::dataplane::nf_process::die_with_parent()?;
    let client = nf_sdk::VfClient::from_env()?;
    let token = std::env::var(nfhost::dataplane::nf_process::ENV_VF_TOKEN).map_err(|_| {
        format!("{name}: NFHOST_VF_TOKEN is not set; NF processes are started by nfhost")
    })?;
    let kind_owned = kind.to_owned();
    let build = move |config: &str| nfhost::nf_kinds::build(&kind_owned, config);
    nf_sdk::runtime::run_configured(client, &token, nf_sdk::runtime::Options::default(), build)
        .map_err(|e| format!("NF {name} ({kind}): {}", nfhost::error_chain(&e)))?;
    Ok(())
}
