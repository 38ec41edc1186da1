//! `nfctl nf`: network functions on their own VF.

use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use nfhost_api::chain_file::config_from_toml;
use nfhost_api::proto::{self, nf_service_client::NfServiceClient};

use crate::fail::Failure;
use crate::names::{self, short};
use crate::render::{Align, Table, fields, nf_state, or_dash, restart_policy};
use crate::{Ctx, Output, all_pages};

#[derive(Debug, Subcommand)]
pub enum NfCommand {
    /// Start an NF on a VF of its own.
    Create {
        /// `fw` or `nfs/fw`: lowercase letters, digits and '-', starting with a letter.
        #[arg(value_parser = names::nf)]
        name: String,
        /// NF kind: l2fwd, monitor, …
        #[arg(long)]
        kind: String,
        /// The NF's configuration: a JSON or TOML file (TOML is sent as JSON).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The VF to run on, `3` or `pfs/0/vfs/3`; nfhost picks a free one if omitted.
        #[arg(long, value_parser = names::vf)]
        vf: Option<String>,
        /// What to do when it exits [default: the server's, always].
        #[arg(long, value_enum)]
        restart: Option<Restart>,
        /// Check the NF with the server; start nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List the NFs and their state.
    List,
    /// Show one NF.
    Get {
        /// `fw` or `nfs/fw`.
        #[arg(value_parser = names::nf)]
        name: String,
    },
    /// Stop an NF and free its VF. An NF of a chain goes with its chain.
    Delete {
        /// `fw` or `nfs/fw`.
        #[arg(value_parser = names::nf)]
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Restart {
    /// Whenever it exits.
    Always,
    /// After a non-zero exit or a signal.
    OnFailure,
    /// Never.
    Never,
}

impl From<Restart> for proto::RestartPolicy {
    fn from(r: Restart) -> Self {
        match r {
            Restart::Always => Self::Always,
            Restart::OnFailure => Self::OnFailure,
            Restart::Never => Self::Never,
        }
    }
}

/// The JSON text of a config file: `.json` is JSON, `.toml` is TOML, anything else is
/// JSON if it starts with `{` and TOML otherwise. Either way it must be an object.
fn load_config(path: &Path) -> Result<String, Failure> {
    let fail = |why: String| Failure::Invalid(format!("config file {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let is_json = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => true,
        Some("toml") => false,
        _ => text.trim_start().starts_with('{'),
    };
    if is_json {
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| fail(format!("not JSON: {e}")))?;
        if !value.is_object() {
            return Err(fail("must be a JSON object".into()));
        }
        Ok(value.to_string())
    } else {
        config_from_toml(&text).map_err(|e| fail(format!("not TOML: {e}")))
    }
}

pub async fn run(ctx: &Ctx, command: NfCommand) -> Result<(), Failure> {
    match command {
        NfCommand::Create {
            name,
            kind,
            config,
            vf,
            restart,
            dry_run,
        } => {
            if kind.trim().is_empty() {
                return Err(Failure::Invalid(format!(
                    "nf create {name}: --kind must not be empty"
                )));
            }
            let config = match &config {
                Some(path) => load_config(path)?,
                None => String::new(),
            };
            let request = proto::CreateNfRequest {
                nf: Some(proto::Nf {
                    name: name.clone(),
                    kind,
                    config,
                    vf: vf.unwrap_or_default(),
                    restart_policy: restart
                        .map_or(proto::RestartPolicy::Unspecified, Into::into)
                        .into(),
                    ..Default::default()
                }),
                validate_only: dry_run,
            };
            let mut client = NfServiceClient::new(ctx.connect().await?);
            let nf = client
                .create_nf(request)
                .await
                .map_err(|s| {
                    let hint = (s.code() == tonic::Code::AlreadyExists).then(|| {
                        format!(
                            "to replace it, delete it first: `nfctl nf delete {}`",
                            short(&name)
                        )
                    });
                    let what = if dry_run { "validate" } else { "create" };
                    ctx.rpc_hint(format!("{what} {name}"), s, hint)
                })?
                .into_inner();
            if ctx.output == Output::Json {
                return ctx.json(&nf);
            }
            let head = if dry_run {
                format!("{name}: valid (dry run, nothing started)\n")
            } else {
                format!("{}: created on {}\n", nf.name, or_dash(&nf.vf))
            };
            ctx.print(&(head + &view(&nf)))
        }
        NfCommand::List => {
            let client = NfServiceClient::new(ctx.connect().await?);
            let nfs = all_pages(ctx, "list NFs", |token| {
                let mut c = client.clone();
                async move {
                    let r = c
                        .list_nfs(proto::ListNfsRequest {
                            page_size: 0,
                            page_token: token,
                        })
                        .await?
                        .into_inner();
                    Ok((r.nfs, r.next_page_token))
                }
            })
            .await?;
            ctx.show(&nfs, || list(&nfs))
        }
        NfCommand::Get { name } => {
            let mut client = NfServiceClient::new(ctx.connect().await?);
            let nf = client
                .get_nf(proto::GetNfRequest { name: name.clone() })
                .await
                .map_err(|s| ctx.rpc(format!("get {name}"), s))?
                .into_inner();
            ctx.show(&nf, || view(&nf))
        }
        NfCommand::Delete { name } => {
            let mut client = NfServiceClient::new(ctx.connect().await?);
            let r = client
                .delete_nf(proto::DeleteNfRequest { name: name.clone() })
                .await
                .map_err(|s| ctx.rpc(format!("delete {name}"), s))?
                .into_inner();
            ctx.show(&r, || format!("{name}: deleted\n"))
        }
    }
}

fn list(nfs: &[proto::Nf]) -> String {
    if nfs.is_empty() {
        return "no NFs\n".into();
    }
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("KIND", Align::Left),
        ("VF", Align::Right),
        ("CHAIN", Align::Left),
        ("RESTART", Align::Left),
        ("RESTARTS", Align::Right),
        ("PID", Align::Right),
        ("STATE", Align::Left),
    ]);
    for nf in nfs {
        let status = nf.status.as_ref();
        t.row(vec![
            short(&nf.name).to_owned(),
            nf.kind.clone(),
            short(&nf.vf).to_owned(),
            short(&nf.chain).to_owned(),
            restart_policy(nf.restart_policy),
            status.map_or(0, |s| s.restarts).to_string(),
            match status.map_or(0, |s| s.pid) {
                0 => "-".into(),
                pid => pid.to_string(),
            },
            nf_state(status),
        ]);
    }
    t.render()
}

fn view(nf: &proto::Nf) -> String {
    let status = nf.status.as_ref();
    fields(&[
        ("Name", nf.name.clone()),
        ("Kind", nf.kind.clone()),
        ("VF", or_dash(&nf.vf)),
        ("Chain", or_dash(&nf.chain)),
        ("Tenant", or_dash(&nf.tenant)),
        (
            "Config",
            if nf.config.is_empty() {
                "defaults".into()
            } else {
                nf.config.clone()
            },
        ),
        ("Restart", restart_policy(nf.restart_policy)),
        ("State", nf_state(status)),
        (
            "PID",
            match status.map_or(0, |s| s.pid) {
                0 => "-".into(),
                pid => pid.to_string(),
            },
        ),
        ("Restarts", status.map_or(0, |s| s.restarts).to_string()),
        (
            "Last exit",
            or_dash(status.map_or("", |s| s.last_exit.as_str())),
        ),
        ("Report", or_dash(status.map_or("", |s| s.report.as_str()))),
    ])
}
