//! `nfctl pf`: the physical function.

use clap::Subcommand;
use nfhost_api::proto::{self, pf_service_client::PfServiceClient};

use crate::fail::Failure;
use crate::names::PF;
use crate::render::{fields, or_dash, up_down};
use crate::{Ctx, Output};

#[derive(Debug, Subcommand)]
pub enum PfCommand {
    /// Show the PF: MAC, link, VF counts, uplink.
    Get,
    /// Set the number of VFs (sriov_numvfs). Changing a non-zero count needs 0 first.
    SetVfs {
        /// How many VFs, up to the PF's total.
        count: u32,
        /// Check the change with the server; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(ctx: &Ctx, command: PfCommand) -> Result<(), Failure> {
    let mut client = PfServiceClient::new(ctx.connect().await?);
    match command {
        PfCommand::Get => {
            let pf = client
                .get_pf(proto::GetPfRequest { name: PF.into() })
                .await
                .map_err(|s| ctx.rpc(format!("get {PF}"), s))?
                .into_inner();
            ctx.show(&pf, || view(&pf))
        }
        PfCommand::SetVfs { count, dry_run } => {
            let what = if dry_run {
                format!("validate setting {PF} to {count} VFs")
            } else {
                format!("set {PF} to {count} VFs")
            };
            let pf = client
                .set_vf_count(proto::SetVfCountRequest {
                    name: PF.into(),
                    num_vfs: count,
                    validate_only: dry_run,
                })
                .await
                .map_err(|s| {
                    let hint = (s.code() == tonic::Code::FailedPrecondition).then(|| {
                        "to change a non-zero count, delete the NFs and chains using VFs, \
                         then `nfctl pf set-vfs 0`, then set the new count"
                            .to_owned()
                    });
                    ctx.rpc_hint(what, s, hint)
                })?
                .into_inner();
            if ctx.output == Output::Json {
                return ctx.json(&pf);
            }
            let head = if dry_run {
                format!("{PF}: {count} VFs is valid (dry run, nothing changed)\n")
            } else {
                format!("{PF}: {} VFs\n", pf.num_vfs)
            };
            ctx.print(&(head + &view(&pf)))
        }
    }
}

fn view(pf: &proto::Pf) -> String {
    fields(&[
        ("Name", pf.name.clone()),
        ("MAC", or_dash(&pf.mac)),
        ("Link", up_down(pf.link_up)),
        ("VFs", format!("{} of {} total", pf.num_vfs, pf.total_vfs)),
        (
            "Assigned",
            format!(
                "{} (free {})",
                pf.assigned_vfs,
                pf.num_vfs.saturating_sub(pf.assigned_vfs)
            ),
        ),
        ("Wire", {
            // An `afxdp:` link says how the kernel moves its frames.
            let links = if pf.wire_links.iter().any(|l| !l.xdp_mode.is_empty()) {
                pf.wire_links
                    .iter()
                    .map(|l| match l.xdp_mode.as_str() {
                        "" => l.link.clone(),
                        mode => format!("{} ({mode})", l.link),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                pf.wire.clone()
            };
            match pf.wire_mtu {
                0 => or_dash(&links),
                mtu => format!("{links}, MTU {mtu}"),
            }
        }),
    ])
}
