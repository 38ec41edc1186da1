//! `nfctl vf`: the virtual functions and their admin settings.

use clap::{Args, Subcommand, ValueEnum};
use nfhost_api::MacAddr;
use nfhost_api::proto::{self, vf_service_client::VfServiceClient};

use crate::fail::Failure;
use crate::names::{self, PF, short};
use crate::render::{Align, Table, fields, link_state, on_off, or_dash, rate, up_down, vlan};
use crate::{Ctx, Output, all_pages};

#[derive(Debug, Subcommand)]
pub enum VfCommand {
    /// List the VFs: settings, link and owner.
    List,
    /// Show one VF.
    Get {
        /// `3` or `pfs/0/vfs/3`.
        #[arg(value_parser = names::vf)]
        vf: String,
    },
    /// Change a VF's settings. Only the settings given are written.
    Set(SetArgs),
    /// Reset a VF (function-level reset): DMA stopped, rings drained.
    Reset {
        /// `3` or `pfs/0/vfs/3`.
        #[arg(value_parser = names::vf)]
        vf: String,
    },
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// `3` or `pfs/0/vfs/3`.
    #[arg(value_parser = names::vf)]
    vf: String,
    /// MAC address, like 02:00:00:00:00:03.
    #[arg(long, value_parser = mac)]
    mac: Option<String>,
    /// Port VLAN id, 1-4094; 0 removes it.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=4094))]
    vlan: Option<u32>,
    /// 802.1p priority for the port VLAN, 0-7.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=7))]
    qos: Option<u32>,
    /// Drop frames whose source MAC is not the VF's.
    #[arg(long, value_enum)]
    spoofchk: Option<Toggle>,
    /// Let the VF change its MAC and use promiscuous modes.
    #[arg(long, value_enum)]
    trust: Option<Toggle>,
    /// The VF's link: follow the PF's (auto), always up, always down.
    #[arg(long, value_enum)]
    link_state: Option<LinkStateArg>,
    /// Guaranteed TX rate, Mbit/s; 0 for none.
    #[arg(long, value_name = "MBIT")]
    min_tx_rate: Option<u32>,
    /// TX rate limit, Mbit/s; 0 for unlimited.
    #[arg(long, value_name = "MBIT")]
    max_tx_rate: Option<u32>,
    /// MTU in bytes.
    #[arg(long)]
    mtu: Option<u32>,
    /// Check the change with the server; change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Toggle {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LinkStateArg {
    Auto,
    Enable,
    Disable,
}

impl From<LinkStateArg> for proto::LinkState {
    fn from(s: LinkStateArg) -> Self {
        match s {
            LinkStateArg::Auto => Self::Auto,
            LinkStateArg::Enable => Self::Enable,
            LinkStateArg::Disable => Self::Disable,
        }
    }
}

fn mac(arg: &str) -> Result<String, String> {
    arg.parse::<MacAddr>()
        .map(|mac| mac.to_string())
        .map_err(|_| "not a MAC address; write six hex pairs, like 02:00:00:00:00:03".into())
}

impl SetArgs {
    /// The VF with the given settings and the mask naming them, in the proto's order.
    fn update(&self) -> Result<proto::UpdateVfRequest, Failure> {
        let mut vf = proto::Vf {
            name: self.vf.clone(),
            ..Default::default()
        };
        let mut mask = Vec::new();
        if let Some(m) = &self.mac {
            vf.mac.clone_from(m);
            mask.push("mac");
        }
        if let Some(v) = self.vlan {
            vf.vlan = v;
            mask.push("vlan");
        }
        if let Some(q) = self.qos {
            vf.qos = q;
            mask.push("qos");
        }
        if let Some(t) = self.spoofchk {
            vf.spoof_check = t == Toggle::On;
            mask.push("spoof_check");
        }
        if let Some(t) = self.trust {
            vf.trust = t == Toggle::On;
            mask.push("trust");
        }
        if let Some(s) = self.link_state {
            vf.link_state = proto::LinkState::from(s).into();
            mask.push("link_state");
        }
        if let Some(r) = self.min_tx_rate {
            vf.min_tx_rate = r;
            mask.push("min_tx_rate");
        }
        if let Some(r) = self.max_tx_rate {
            vf.max_tx_rate = r;
            mask.push("max_tx_rate");
        }
        if let Some(m) = self.mtu {
            vf.mtu = m;
            mask.push("mtu");
        }
        if mask.is_empty() {
            return Err(Failure::Invalid(format!(
                "vf set {}: nothing to set; give at least one of --mac, --vlan, --qos, \
                 --spoofchk, --trust, --link-state, --min-tx-rate, --max-tx-rate, --mtu",
                self.vf
            )));
        }
        Ok(proto::UpdateVfRequest {
            vf: Some(vf),
            update_mask: mask.into_iter().map(String::from).collect(),
            validate_only: self.dry_run,
        })
    }
}

pub async fn run(ctx: &Ctx, command: VfCommand) -> Result<(), Failure> {
    match command {
        VfCommand::List => {
            let client = VfServiceClient::new(ctx.connect().await?);
            let vfs = all_pages(ctx, "list VFs", |token| {
                let mut c = client.clone();
                async move {
                    let r = c
                        .list_vfs(proto::ListVfsRequest {
                            parent: PF.into(),
                            page_size: 0,
                            page_token: token,
                        })
                        .await?
                        .into_inner();
                    Ok((r.vfs, r.next_page_token))
                }
            })
            .await?;
            ctx.show(&vfs, || list(&vfs))
        }
        VfCommand::Get { vf } => {
            let mut client = VfServiceClient::new(ctx.connect().await?);
            let vf = client
                .get_vf(proto::GetVfRequest { name: vf.clone() })
                .await
                .map_err(|s| ctx.rpc(format!("get {vf}"), s))?
                .into_inner();
            ctx.show(&vf, || view(&vf))
        }
        VfCommand::Set(args) => {
            // Checked before connecting: "nothing to set" needs no server.
            let request = args.update()?;
            let mask = request.update_mask.join(", ");
            let what = if args.dry_run {
                format!("validate update of {}", args.vf)
            } else {
                format!("update {}", args.vf)
            };
            let mut client = VfServiceClient::new(ctx.connect().await?);
            let vf = client
                .update_vf(request)
                .await
                .map_err(|s| ctx.rpc(what, s))?
                .into_inner();
            if ctx.output == Output::Json {
                return ctx.json(&vf);
            }
            let head = if args.dry_run {
                format!(
                    "{}: setting {mask} is valid (dry run, nothing changed)\n",
                    args.vf
                )
            } else {
                format!("{}: set {mask}\n", vf.name)
            };
            ctx.print(&(head + &view(&vf)))
        }
        VfCommand::Reset { vf } => {
            let mut client = VfServiceClient::new(ctx.connect().await?);
            let reset = client
                .reset_vf(proto::ResetVfRequest { name: vf.clone() })
                .await
                .map_err(|s| ctx.rpc(format!("reset {vf}"), s))?
                .into_inner();
            ctx.show(&reset, || format!("{}: reset\n", reset.name))
        }
    }
}

fn list(vfs: &[proto::Vf]) -> String {
    if vfs.is_empty() {
        return "no VFs; create some with `nfctl pf set-vfs N`\n".into();
    }
    let mut t = Table::new(&[
        ("VF", Align::Right),
        ("MAC", Align::Left),
        ("VLAN", Align::Right),
        ("QOS", Align::Right),
        ("SPOOFCHK", Align::Left),
        ("TRUST", Align::Left),
        ("LINK-STATE", Align::Left),
        ("LINK", Align::Left),
        ("MIN-TX", Align::Right),
        ("MAX-TX", Align::Right),
        ("MTU", Align::Right),
        ("NF", Align::Left),
        ("CHAIN", Align::Left),
    ]);
    for vf in vfs {
        t.row(vec![
            short(&vf.name).to_owned(),
            or_dash(&vf.mac),
            vlan(vf.vlan),
            vf.qos.to_string(),
            on_off(vf.spoof_check),
            on_off(vf.trust),
            link_state(vf.link_state),
            up_down(vf.link_up),
            rate(vf.min_tx_rate, "-"),
            rate(vf.max_tx_rate, "-"),
            vf.mtu.to_string(),
            short(&vf.owner).to_owned(),
            short(&vf.chain).to_owned(),
        ]);
    }
    t.render()
}

fn view(vf: &proto::Vf) -> String {
    fields(&[
        ("Name", vf.name.clone()),
        ("Index", vf.index.to_string()),
        ("MAC", or_dash(&vf.mac)),
        (
            "VLAN",
            if vf.vlan == 0 {
                "none".into()
            } else {
                vf.vlan.to_string()
            },
        ),
        ("QoS", vf.qos.to_string()),
        ("Spoof check", on_off(vf.spoof_check)),
        ("Trust", on_off(vf.trust)),
        ("Link state", link_state(vf.link_state)),
        ("Link", up_down(vf.link_up)),
        ("Min TX rate", rate(vf.min_tx_rate, "none")),
        ("Max TX rate", rate(vf.max_tx_rate, "unlimited")),
        ("MTU", vf.mtu.to_string()),
        (
            "Owner",
            if vf.owner.is_empty() {
                "free".into()
            } else {
                vf.owner.clone()
            },
        ),
        ("Chain", or_dash(&vf.chain)),
    ])
}
