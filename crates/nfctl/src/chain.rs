//! `nfctl chain`: chains of NFs, applied from chain files.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use nfhost_api::chain_file::load_chain;
use nfhost_api::proto::{self, NfUpdateOutcome, chain_service_client::ChainServiceClient};

use crate::fail::Failure;
use crate::names::{self, short};
use crate::render::{Align, Table, classifier, egress, fields, isolation, or_dash, restart_policy};
use crate::{Ctx, Output, all_pages};

#[derive(Debug, Subcommand)]
pub enum ChainCommand {
    /// Create the chain a chain file describes (see examples/edge.toml), or, if it
    /// exists, update it in place: NFs whose config changed restart on their own VFs,
    /// the others keep running. Other changes (hops, kinds, classifier, egress,
    /// isolation) are refused: delete and re-create the chain for those.
    Apply {
        /// The chain file (TOML).
        file: PathBuf,
        /// Check the chain with the server; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List the chains.
    List,
    /// Show one chain, hop by hop.
    Get {
        /// `edge` or `chains/edge`.
        #[arg(value_parser = names::chain)]
        name: String,
    },
    /// Delete a chain whole: its NFs stopped, VFs reset and freed, steering removed.
    Delete {
        /// `edge` or `chains/edge`.
        #[arg(value_parser = names::chain)]
        name: String,
    },
}

pub async fn run(ctx: &Ctx, command: ChainCommand) -> Result<(), Failure> {
    match command {
        ChainCommand::Apply { file, dry_run } => apply(ctx, &file, dry_run).await,
        ChainCommand::List => {
            let client = ChainServiceClient::new(ctx.connect().await?);
            let chains = all_pages(ctx, "list chains", |token| {
                let mut c = client.clone();
                async move {
                    let r = c
                        .list_chains(proto::ListChainsRequest {
                            page_size: 0,
                            page_token: token,
                        })
                        .await?
                        .into_inner();
                    Ok((r.chains, r.next_page_token))
                }
            })
            .await?;
            ctx.show(&chains, || list(&chains))
        }
        ChainCommand::Get { name } => {
            let mut client = ChainServiceClient::new(ctx.connect().await?);
            let chain = client
                .get_chain(proto::GetChainRequest { name: name.clone() })
                .await
                .map_err(|s| ctx.rpc(format!("get {name}"), s))?
                .into_inner();
            ctx.show(&chain, || view(&chain))
        }
        ChainCommand::Delete { name } => {
            let mut client = ChainServiceClient::new(ctx.connect().await?);
            let r = client
                .delete_chain(proto::DeleteChainRequest { name: name.clone() })
                .await
                .map_err(|s| ctx.rpc(format!("delete {name}"), s))?
                .into_inner();
            ctx.show(&r, || format!("{name}: deleted\n"))
        }
    }
}

/// Creates the chain a file describes, or updates it in place if it exists (its NFs'
/// configs and restart policy; the server refuses anything else), and says which.
async fn apply(ctx: &Ctx, file: &Path, dry_run: bool) -> Result<(), Failure> {
    let chain = load_chain(file)
        .map_err(|e| Failure::Invalid(format!("chain file {}: {e}", file.display())))?;
    let name = chain.name.clone();
    let mut client = ChainServiceClient::new(ctx.connect().await?);
    let stored = match client
        .get_chain(proto::GetChainRequest { name: name.clone() })
        .await
    {
        Ok(r) => Some(r.into_inner()),
        Err(s) if s.code() == tonic::Code::NotFound => None,
        // A tenant is told PERMISSION_DENIED for a name that is nobody's as for
        // another tenant's (AIP-211): create it, and the server tells which.
        Err(s) if s.code() == tonic::Code::PermissionDenied => None,
        Err(s) => return Err(ctx.rpc(format!("get {name}"), s)),
    };
    let Some(stored) = stored else {
        let created = client
            .create_chain(proto::CreateChainRequest {
                chain: Some(chain),
                validate_only: dry_run,
            })
            .await
            .map_err(|s| {
                let hint = (s.code() == tonic::Code::AlreadyExists).then(|| {
                    format!(
                        "if {name} was created meanwhile, apply again to update it: `nfctl chain apply {}`",
                        file.display()
                    )
                });
                let what = if dry_run { "validate" } else { "create" };
                ctx.rpc_hint(format!("{what} {name}"), s, hint)
            })?
            .into_inner();
        if ctx.output == Output::Json {
            return ctx.json(&created);
        }
        let head = if dry_run {
            format!("{name}: valid (dry run, nothing created)\n")
        } else {
            format!("{}: created\n", created.name)
        };
        return ctx.print(&(head + &view(&created)));
    };
    let response = client
        .update_chain(proto::UpdateChainRequest {
            chain: Some(chain),
            update_mask: Vec::new(),
            validate_only: dry_run,
            allow_missing: false,
        })
        .await
        .map_err(|s| {
            let hint = (s.code() == tonic::Code::FailedPrecondition).then(|| {
                format!(
                    "to change more than NF configs and the restart policy: \
                     `nfctl chain delete {}`, then `nfctl chain apply {}`",
                    short(&name),
                    file.display()
                )
            });
            let what = if dry_run {
                "validate update of"
            } else {
                "update"
            };
            ctx.rpc_hint(format!("{what} {name}"), s, hint)
        })?
        .into_inner();
    if ctx.output == Output::Json {
        return ctx.json(&response);
    }
    let updated = response.chain.clone().unwrap_or_default();
    let policy_changed = stored.restart_policy != updated.restart_policy;
    let changed = policy_changed
        || response
            .nfs
            .iter()
            .any(|nf| nf.outcome != NfUpdateOutcome::Unchanged as i32);
    let head = match (changed, dry_run) {
        (false, _) => format!("{}: unchanged\n", updated.name),
        (true, true) => format!(
            "{}: valid (dry run, nothing changed): would {}\n",
            updated.name,
            describe(&response, policy_changed, true)
        ),
        (true, false) => format!(
            "{}: updated: {}\n",
            updated.name,
            describe(&response, policy_changed, false)
        ),
    };
    ctx.print(&(head + &view(&updated)))
}

/// What an update did to each NF, as the server says, for a person: `mon
/// reconfigured in place (same process); fwd unchanged`, `nat reconfigured
/// (restarted on pfs/0/vfs/2: …)`, or ahead of a dry run `reconfigure mon (in place,
/// or a restart on …); keep fwd`.
fn describe(response: &proto::UpdateChainResponse, policy_changed: bool, ahead: bool) -> String {
    let chain = response.chain.clone().unwrap_or_default();
    let mut parts: Vec<String> = response
        .nfs
        .iter()
        .map(|nf| {
            let name = short(&nf.nf);
            let hop = chain.nfs.iter().position(|hop| hop.name == name);
            let vf = hop
                .and_then(|i| chain.vfs.get(i))
                .map_or("its VF", String::as_str);
            match (NfUpdateOutcome::try_from(nf.outcome), ahead) {
                (Ok(NfUpdateOutcome::Reconfigure), _) => format!(
                    "reconfigure {name} (in place, or a restart on {vf} if its kind cannot)"
                ),
                (Ok(NfUpdateOutcome::Unchanged), true) => format!("keep {name}"),
                (Ok(NfUpdateOutcome::Unchanged), false) => format!("{name} unchanged"),
                (Ok(NfUpdateOutcome::InPlace), _) => {
                    format!("{name} reconfigured in place (same process)")
                }
                (Ok(NfUpdateOutcome::Restarted), _) if nf.reason.is_empty() => {
                    format!("{name} reconfigured (restarted on {vf})")
                }
                (Ok(NfUpdateOutcome::Restarted), _) => {
                    format!("{name} reconfigured (restarted on {vf}: {})", nf.reason)
                }
                (Ok(NfUpdateOutcome::Created), _) => format!("{name} created on {vf}"),
                (Ok(NfUpdateOutcome::Unspecified) | Err(_), _) => format!("{name} updated"),
            }
        })
        .collect();
    if policy_changed {
        let policy = restart_policy(chain.restart_policy);
        parts.push(if ahead {
            format!("set the restart policy to {policy}")
        } else {
            format!("restart policy now {policy}")
        });
    }
    parts.join("; ")
}

/// `mon → fwd`.
fn hops(chain: &proto::Chain) -> String {
    chain
        .nfs
        .iter()
        .map(|nf| nf.name.as_str())
        .collect::<Vec<_>>()
        .join(" → ")
}

/// `wire → mon → fwd → wire`, and for a two-way chain both directions with their
/// VLANs: `vlan 100 ⇄ mon ⇄ fwd ⇄ vlan 200`.
fn path(chain: &proto::Chain) -> String {
    let vlans = (
        chain.classifier.as_ref().map_or(0, |c| c.vlan),
        chain
            .egress
            .as_ref()
            .filter(|e| e.two_way)
            .map_or(0, |e| e.vlan),
    );
    match vlans {
        (a, b) if a != 0 && b != 0 => {
            let nfs: Vec<&str> = chain.nfs.iter().map(|nf| nf.name.as_str()).collect();
            format!("vlan {a} ⇄ {} ⇄ vlan {b}", nfs.join(" ⇄ "))
        }
        _ => format!("wire → {} → wire", hops(chain)),
    }
}

fn list(chains: &[proto::Chain]) -> String {
    if chains.is_empty() {
        return "no chains\n".into();
    }
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("ISOLATION", Align::Left),
        ("CLASSIFIER", Align::Left),
        ("EGRESS", Align::Left),
        ("RESTART", Align::Left),
        ("VFS", Align::Left),
        ("NFS", Align::Left),
    ]);
    for c in chains {
        t.row(vec![
            short(&c.name).to_owned(),
            isolation(c.isolation),
            classifier(c.classifier.as_ref()),
            egress(c.egress.as_ref()),
            restart_policy(c.restart_policy),
            if c.vfs.is_empty() {
                "-".into()
            } else {
                c.vfs.iter().map(|v| short(v)).collect::<Vec<_>>().join(",")
            },
            hops(c),
        ]);
    }
    t.render()
}

fn view(chain: &proto::Chain) -> String {
    let mut out = fields(&[
        ("Name", chain.name.clone()),
        ("Tenant", or_dash(&chain.tenant)),
        ("Isolation", isolation(chain.isolation)),
        ("Classifier", classifier(chain.classifier.as_ref())),
        ("Egress", egress(chain.egress.as_ref())),
        ("Restart", restart_policy(chain.restart_policy)),
        ("Path", path(chain)),
    ]);
    let mut t = Table::new(&[
        ("HOP", Align::Right),
        ("NF", Align::Left),
        ("KIND", Align::Left),
        ("VF", Align::Left),
        ("CONFIG", Align::Left),
    ]);
    for (i, nf) in chain.nfs.iter().enumerate() {
        t.row(vec![
            i.to_string(),
            nf.name.clone(),
            nf.kind.clone(),
            or_dash(chain.vfs.get(i).map_or("", String::as_str)),
            if nf.config.is_empty() {
                "defaults".into()
            } else {
                nf.config.clone()
            },
        ]);
    }
    out.push('\n');
    out.push_str(&t.render());
    out
}
