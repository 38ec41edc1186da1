//! `nfctl stats` and `nfctl events`.

use std::collections::HashMap;
use std::io::IsTerminal as _;

use clap::Args;
use nfhost_api::proto::{self, telemetry_service_client::TelemetryServiceClient};

use crate::fail::Failure;
use crate::names::short;
use crate::render::{Align, Table, bytes, event_kind, per_second, time};
use crate::{Ctx, Output};

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Keep printing, with packet rates between samples, until interrupted.
    #[arg(long)]
    watch: bool,
    /// Time between samples when watching, 100-60000 ms [default: the server's, 1000].
    #[arg(long, value_parser = clap::value_parser!(u32).range(100..=60_000))]
    interval_ms: Option<u32>,
    /// Every VF, not only those that carried traffic or have an owner.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// After the recent events, print new ones as they happen, until interrupted.
    #[arg(long)]
    watch: bool,
    /// How many recent events, 1-1000 [default: the server's, 100].
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1000))]
    limit: Option<i32>,
}

/// Packet counters of the previous sample, by VF (and `wire`), for rates.
#[derive(Debug, Default)]
struct Previous {
    time_ms: i64,
    packets: HashMap<String, (u64, u64)>,
}

pub async fn stats(ctx: &Ctx, args: StatsArgs) -> Result<(), Failure> {
    let mut client = TelemetryServiceClient::new(ctx.connect().await?);
    let active_only = !args.all;
    if !args.watch {
        let stats = client
            .get_stats(proto::GetStatsRequest { active_only })
            .await
            .map_err(|s| ctx.rpc("get stats", s))?
            .into_inner();
        return ctx.show(&stats, || stats_table(&stats, None));
    }
    let mut stream = client
        .watch_stats(proto::WatchStatsRequest {
            interval_ms: args.interval_ms.unwrap_or(0),
            active_only,
        })
        .await
        .map_err(|s| ctx.rpc("watch stats", s))?
        .into_inner();
    // Redraw in place on a terminal; append when piped, so a log keeps every sample.
    let redraw = std::io::stdout().is_terminal();
    let mut previous: Option<Previous> = None;
    loop {
        let Some(stats) = stream
            .message()
            .await
            .map_err(|s| ctx.rpc("watch stats", s))?
        else {
            return Err(Failure::Protocol(
                "watch stats: the server ended the stream".into(),
            ));
        };
        if ctx.output == Output::Json {
            ctx.json(&stats)?;
        } else {
            let table = stats_table(&stats, previous.as_ref());
            let clear = if redraw { "\x1b[H\x1b[2J" } else { "" };
            let gap = if redraw || previous.is_none() {
                ""
            } else {
                "\n"
            };
            ctx.print(&format!("{clear}{gap}{}\n{table}", time(stats.time_ms)))?;
        }
        previous = Some(sample(&stats));
    }
}

fn sample(stats: &proto::Stats) -> Previous {
    let mut packets: HashMap<String, (u64, u64)> = stats
        .vfs
        .iter()
        .map(|v| (v.vf.clone(), (v.rx_packets, v.tx_packets)))
        .collect();
    if let Some(w) = &stats.wire {
        packets.insert("wire".into(), (w.rx_packets, w.tx_packets));
    }
    Previous {
        time_ms: stats.time_ms,
        packets,
    }
}

/// Packets per second from `before` to `now` over `ms`; `-` without a usable
/// previous sample (the first one, or a counter that went back after a reset).
fn pps(before: Option<u64>, now: u64, ms: i64) -> String {
    match before {
        Some(b) if now >= b && ms > 0 => per_second((now - b) as f64 * 1000.0 / ms as f64),
        _ => "-".into(),
    }
}

fn stats_table(stats: &proto::Stats, previous: Option<&Previous>) -> String {
    let mut t = Table::new(&[
        ("VF", Align::Right),
        ("NF", Align::Left),
        ("CHAIN", Align::Left),
        ("RX-PPS", Align::Right),
        ("TX-PPS", Align::Right),
        ("RX-PKTS", Align::Right),
        ("TX-PKTS", Align::Right),
        ("DROPS", Align::Right),
        ("COPIED", Align::Right),
    ]);
    let ms = previous.map_or(0, |p| stats.time_ms.saturating_sub(p.time_ms));
    let before = |key: &str| previous.and_then(|p| p.packets.get(key).copied());
    let mut row =
        |key: &str, name: &str, nf: &str, chain: &str, rx, tx, drops: u64, copied: String| {
            let b = before(key);
            t.row(vec![
                name.to_owned(),
                short(nf).to_owned(),
                short(chain).to_owned(),
                pps(b.map(|b| b.0), rx, ms),
                pps(b.map(|b| b.1), tx, ms),
                rx.to_string(),
                tx.to_string(),
                drops.to_string(),
                copied,
            ]);
        };
    if let Some(w) = &stats.wire {
        row(
            "wire",
            "wire",
            "",
            "",
            w.rx_packets,
            w.tx_packets,
            w.drops.values().sum(),
            "-".into(),
        );
    }
    for v in &stats.vfs {
        row(
            &v.vf,
            short(&v.vf),
            &v.nf,
            &v.chain,
            v.rx_packets,
            v.tx_packets,
            v.drops.values().sum(),
            bytes(v.dma_copied_bytes),
        );
    }
    t.render()
}

fn events_table() -> Table {
    Table::new(&[
        ("SEQ", Align::Right),
        ("TIME", Align::Left),
        ("KIND", Align::Left),
        ("VF", Align::Right),
        ("NF", Align::Left),
        ("BY", Align::Left),
        ("MESSAGE", Align::Left),
    ])
}

fn event_row(e: &proto::Event) -> Vec<String> {
    let mut message = e.message.clone();
    if let Some(f) = &e.dma_fault {
        let detail = format!(
            "{} iova {:#x} len {}: {}",
            f.access, f.iova, f.len, f.reason
        );
        message = if message.is_empty() {
            detail
        } else {
            format!("{message} ({detail})")
        };
    }
    vec![
        e.seq.to_string(),
        time(e.time_ms),
        event_kind(e.kind),
        short(&e.vf).to_owned(),
        short(&e.nf).to_owned(),
        // The principal whose request it records; `-` for what nfhost did itself.
        if e.principal.is_empty() {
            "-".to_owned()
        } else {
            e.principal.clone()
        },
        message,
    ]
}

pub async fn events(ctx: &Ctx, args: EventsArgs) -> Result<(), Failure> {
    let mut client = TelemetryServiceClient::new(ctx.connect().await?);
    // Subscribe before listing, so nothing falls between the two; what both bring
    // is printed once, by sequence number.
    let mut stream = if args.watch {
        Some(
            client
                .watch_events(proto::WatchEventsRequest { replay: false })
                .await
                .map_err(|s| ctx.rpc("watch events", s))?
                .into_inner(),
        )
    } else {
        None
    };
    let recent = client
        .list_events(proto::ListEventsRequest {
            limit: args.limit.unwrap_or(0),
        })
        .await
        .map_err(|s| ctx.rpc("list events", s))?
        .into_inner()
        .events;
    let Some(stream) = stream.as_mut() else {
        return ctx.show(&recent, || {
            if recent.is_empty() {
                return "no events\n".into();
            }
            let mut t = events_table();
            for e in &recent {
                t.row(event_row(e));
            }
            t.render()
        });
    };

    // Streaming: columns get fixed widths up front, as later rows are not known.
    let table = events_table();
    let widths = [6, 24, 19, 3, 12, 0];
    if ctx.output == Output::Table {
        ctx.print(&format!("{}\n", table.header_line(&widths)))?;
    }
    let mut last_seq = None;
    let mut emit = |e: &proto::Event| -> Result<(), Failure> {
        if last_seq.is_some_and(|last| e.seq <= last) {
            return Ok(());
        }
        last_seq = Some(e.seq);
        match ctx.output {
            Output::Json => ctx.json(e),
            Output::Table => ctx.print(&format!("{}\n", table.line(&widths, &event_row(e)))),
        }
    };
    for e in &recent {
        emit(e)?;
    }
    loop {
        match stream
            .message()
            .await
            .map_err(|s| ctx.rpc("watch events", s))?
        {
            Some(e) => emit(&e)?,
            None => {
                return Err(Failure::Protocol(
                    "watch events: the server ended the stream".into(),
                ));
            }
        }
    }
}
