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
        /// NF kind: a built-in one (l2fwd, monitor, firewall, nat, lb, ratelimit);
        /// `exec`, a binary of yours built on nf-sdk (give --path, and its arguments
        /// after `--`); or `external`, a process started elsewhere that attaches at
        /// the NF's endpoint with its secret (see `nfctl nf get`).
        #[arg(long)]
        kind: String,
        /// For `--kind exec`: the absolute path of the binary.
        #[arg(long, value_name = "PATH")]
        path: Option<String>,
        /// For `--kind exec`: an environment variable, `NAME=VALUE`; repeatable.
        #[arg(long, value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// For `--kind exec`: the binary's arguments.
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
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

/// What an `exec` NF runs, from `--path`, `--env` and the arguments after `--`;
/// they are refused for any other kind.
fn exec_spec(
    name: &str,
    kind: &str,
    path: Option<String>,
    env: &[String],
    args: Vec<String>,
) -> Result<Option<proto::ExecSpec>, Failure> {
    if kind != "exec" {
        if path.is_some() || !env.is_empty() || !args.is_empty() {
            return Err(Failure::Invalid(format!(
                "nf create {name}: --path, --env and arguments are for --kind exec only"
            )));
        }
        return Ok(None);
    }
    let Some(path) = path else {
        return Err(Failure::Invalid(format!(
            "nf create {name}: --kind exec needs --path, the absolute path of the binary"
        )));
    };
    let env = env
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    Failure::Invalid(format!(
                        "nf create {name}: --env {pair:?} is not NAME=VALUE"
                    ))
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(proto::ExecSpec { path, args, env }))
}

pub async fn run(ctx: &Ctx, command: NfCommand) -> Result<(), Failure> {
    match command {
        NfCommand::Create {
            name,
            kind,
            path,
            env,
            args,
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
            let exec = exec_spec(&name, &kind, path, &env, args)?;
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
                    exec,
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
    ]) + &attach_view(nf)
}

/// An exec NF's binary, and an external NF's endpoint: where and how to attach.
fn attach_view(nf: &proto::Nf) -> String {
    let mut rows = Vec::new();
    if let Some(exec) = &nf.exec {
        let mut command = exec.path.clone();
        for arg in &exec.args {
            command.push(' ');
            command.push_str(arg);
        }
        rows.push(("Exec", command));
    }
    if let Some(e) = &nf.endpoint {
        rows.push(("Socket", e.socket.clone()));
        rows.push(("Memif socket", or_dash(&e.memif_socket)));
        rows.push(("Secret", e.secret.clone()));
        rows.push(("MAC", e.mac.clone()));
    }
    if rows.is_empty() {
        String::new()
    } else {
        fields(&rows)
    }
}
