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
    Serve(ServeArgs),
    /// Network-function processes.
    Nf {
        #[command(subcommand)]
        command: NfCommand,
    },
}

/// Flags of `nfhost serve` (each may also be set in the `--config` TOML file).
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML file with the same settings (flags win).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long)]
    grpc: Option<std::net::SocketAddr>,
    /// Dashboard and /metrics listen address [default: 127.0.0.1:8080].
    #[arg(long)]
    http: Option<std::net::SocketAddr>,
    /// Where desired state lives [default: ./nfhost-data].
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// VFs to enable when no count is stored [default: 64].
    #[arg(long)]
    vfs: Option<u16>,
    /// The uplink: gen, none, or host interfaces: tap:NAME (a TAP device nfhost
    /// opens or creates) and afpacket:IFNAME (an existing interface), each
    /// optionally @VLAN to make it an access port of that VLAN, comma-separated
    /// [default: gen].
    #[arg(long)]
    wire: Option<String>,
    /// MTU of a host wire's links [default: 1500, at most 2030].
    #[arg(long)]
    mtu: Option<u16>,
    /// Generated packets per second, 0 = flat out [default: 100000].
    #[arg(long)]
    gen_rate: Option<u64>,
    /// Generated frame size in bytes, FCS included [default: 64].
    #[arg(long)]
    gen_size: Option<usize>,
    /// Comma-separated VLANs to generate on [default: untagged].
    #[arg(long, value_delimiter = ',')]
    gen_vlans: Option<Vec<u16>>,
    /// Distinct flows [default: 1024].
    #[arg(long)]
    gen_flows: Option<u32>,
    /// One destination ADDR:PORT for every generated flow, e.g. a load balancer's VIP.
    #[arg(long)]
    gen_dst: Option<std::net::SocketAddrV4>,
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
    nfhost::logging::init(cli.log_format);
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Model(args) => demo_model::run(&args).map_err(Into::into),
        Command::Bench(args) => bench::run(&args),
        Command::Serve(args) => serve(args),
        Command::Nf {
            command: NfCommand::Run { kind, name, config },
        } => nf_run(&kind, &name, &config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("nfhost: {}", nfhost::error_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    use nfhost::serve::ServeSettings;
    let flags = ServeSettings {
        grpc: args.grpc,
        http: args.http,
        data_dir: args.data_dir,
        vfs: args.vfs,
        wire: args.wire,
        mtu: args.mtu,
        gen_rate: args.gen_rate,
        gen_size: args.gen_size,
        gen_vlans: args.gen_vlans,
        gen_flows: args.gen_flows,
        gen_dst: args.gen_dst,
    };
    let file = match &args.config {
        Some(path) => ServeSettings::from_file(path)?,
        None => ServeSettings::default(),
    };
    let exe = nfhost::dataplane::nf_process::current_exe()?;
    nfhost::serve::serve(flags.or(file), exe)?;
    Ok(())
}

/// The NF child: build the NF, attach over the inherited socket, run the loop.
fn nf_run(kind: &str, name: &str, config: &str) -> Result<(), Box<dyn std::error::Error>> {
    nfhost::dataplane::nf_process::die_with_parent()?;
    let nf = nfhost::nf_kinds::build(kind, config)?;
    let client = nf_sdk::VfClient::from_env()?;
    let token = std::env::var(nfhost::dataplane::nf_process::ENV_VF_TOKEN).map_err(|_| {
        format!("{name}: NFHOST_VF_TOKEN is not set; NF processes are started by nfhost")
    })?;
    nf_sdk::runtime::run(nf, client, &token, nf_sdk::runtime::Options::default())
        .map_err(|e| format!("NF {name} ({kind}): {}", nfhost::error_chain(&e)))?;
    Ok(())
}
