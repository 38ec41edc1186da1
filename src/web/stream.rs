//! `/api/v1/stream`: the dashboard's live feed, as server-sent events
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html>).
//!
//! - `stats`, once a second: per-VF and wire rates, computed here from two counter
//!   samples so every viewer sees the same figures and the page does no arithmetic
//!   on counters that may reset (a VF reset zeroes them: the rate is then 0, not a
//!   huge negative).
//! - `event`, as it happens: a control-plane event (NF started, DMA fault, ...), the
//!   same JSON as `/api/v1/events`.
//! - `lagged`: the connection fell behind the event broadcast and `{"missed": N}`
//!   events were skipped; the page reloads the list.
//!
//! Each connection samples on its own: a dashboard has a handful of viewers, and a
//! sample is one read of plain atomics. The feed stops when the client goes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::App;
use super::views::EventView;
use crate::auth::Principal;
use crate::control::{Controller, sees_event};
use nfhost_api::names::parse_vf;
use nfhost_api::proto;

/// How often `stats` is sent.
pub(super) const INTERVAL: Duration = Duration::from_secs(1);

/// Rates of one VF over the last interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct VfRates {
    /// `pfs/0/vfs/N`.
    pub vf: String,
    /// N.
    pub index: u16,
    /// The owner NF, `nfs/NAME`, or empty.
    pub nf: String,
    /// The owner NF's chain, `chains/NAME`, or empty.
    pub chain: String,
    pub rx_pps: f64,
    pub tx_pps: f64,
    /// Bits per second of frame bytes.
    pub rx_bps: f64,
    pub tx_bps: f64,
    /// Drops of every reason, per second.
    pub drops_per_s: f64,
    /// Bytes the NIC copied for this VF (DMA between isolated domains), in total.
    pub copied_bytes: u64,
    /// The same, per second.
    pub copied_bytes_per_s: f64,
    /// Totals, for the table.
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub drops: u64,
    pub dma_faults: u64,
}

/// Rates of the wire (the PF's uplink) over the last interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(super) struct WireRates {
    pub rx_pps: f64,
    pub tx_pps: f64,
    pub rx_bps: f64,
    pub tx_bps: f64,
    pub drops_per_s: f64,
}

/// One `stats` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Frame {
    /// When the later sample was taken, Unix milliseconds.
    pub t: i64,
    /// The time between the two samples, milliseconds.
    pub interval_ms: u64,
    /// Every VF, idle ones too, in index order.
    pub vfs: Vec<VfRates>,
    pub wire: WireRates,
}

/// The per-second rate of a counter that went from `before` to `now` in `secs`.
/// A counter that went down was reset in between: no rate can be told, so 0.
fn per_s(before: u64, now: u64, secs: f64) -> f64 {
    let delta = now.saturating_sub(before) as f64 / secs;
    // One decimal is more than a viewer reads and keeps the JSON short.
    (delta * 10.0).round() / 10.0
}

fn drop_total(drops: &HashMap<String, u64>) -> u64 {
    drops.values().sum()
}

/// The rates between two samples taken `elapsed` apart.
pub(super) fn rates(before: &proto::Stats, now: &proto::Stats, elapsed: Duration) -> Frame {
    // A zero interval would divide by zero; a real one is never below a millisecond.
    let secs = elapsed.as_secs_f64().max(1e-3);
    let previous: HashMap<&str, &proto::VfStats> =
        before.vfs.iter().map(|v| (v.vf.as_str(), v)).collect();
    let empty = proto::VfStats::default();
    let vfs = now
        .vfs
        .iter()
        .map(|v| {
            // A VF that was not there before (VFs were re-enabled) starts at zero.
            let b = previous.get(v.vf.as_str()).copied().unwrap_or(&empty);
            let drops = drop_total(&v.drops);
            VfRates {
                vf: v.vf.clone(),
                index: parse_vf(&v.vf).unwrap_or(u16::MAX),
                nf: v.nf.clone(),
                chain: v.chain.clone(),
                rx_pps: per_s(b.rx_packets, v.rx_packets, secs),
                tx_pps: per_s(b.tx_packets, v.tx_packets, secs),
                rx_bps: per_s(
                    b.rx_bytes.saturating_mul(8),
                    v.rx_bytes.saturating_mul(8),
                    secs,
                ),
                tx_bps: per_s(
                    b.tx_bytes.saturating_mul(8),
                    v.tx_bytes.saturating_mul(8),
                    secs,
                ),
                drops_per_s: per_s(drop_total(&b.drops), drops, secs),
                copied_bytes: v.dma_copied_bytes,
                copied_bytes_per_s: per_s(b.dma_copied_bytes, v.dma_copied_bytes, secs),
                rx_packets: v.rx_packets,
                tx_packets: v.tx_packets,
                drops,
                dma_faults: v.dma_faults,
            }
        })
        .collect();
    let wire = match (&before.wire, &now.wire) {
        (Some(b), Some(w)) => WireRates {
            rx_pps: per_s(b.rx_packets, w.rx_packets, secs),
            tx_pps: per_s(b.tx_packets, w.tx_packets, secs),
            rx_bps: per_s(
                b.rx_bytes.saturating_mul(8),
                w.rx_bytes.saturating_mul(8),
                secs,
            ),
            tx_bps: per_s(
                b.tx_bytes.saturating_mul(8),
                w.tx_bytes.saturating_mul(8),
                secs,
            ),
            drops_per_s: per_s(drop_total(&b.drops), drop_total(&w.drops), secs),
        },
        _ => WireRates::default(),
    };
    Frame {
        t: now.time_ms,
        interval_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        vfs,
        wire,
    }
}

/// `GET /api/v1/stream`.
pub(super) async fn stream(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
) -> impl IntoResponse {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(pump(app.controller, who, tx));
    // Proxies close connections that say nothing; stats speak every second, but a
    // stalled engine would leave the line quiet.
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default())
}

/// Feeds one connection of `who` (its VFs' rates, its events) until it closes.
async fn pump(
    controller: Arc<Controller>,
    who: Principal,
    tx: mpsc::Sender<Result<Event, Infallible>>,
) {
    // Subscribing only clones a broadcast receiver: no lock, nothing that blocks.
    let mut events = controller.subscribe();
    let mut events_open = true;
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: Option<(Instant, proto::Stats)> = None;
    loop {
        let event = tokio::select! {
            () = tx.closed() => return,
            _ = ticker.tick() => {
                let c = controller.clone();
                let who = who.clone();
                let sample = tokio::task::spawn_blocking(move || {
                    c.stats(&who, false).map(|s| (Instant::now(), s))
                })
                .await;
                // A failed sample (engine busy or stopping) is skipped; the next
                // one measures over the longer interval.
                let Ok(Ok((at, stats))) = sample else { continue };
                let frame = previous
                    .as_ref()
                    .map(|(then, before)| rates(before, &stats, at - *then));
                previous = Some((at, stats));
                match frame {
                    Some(frame) => sse_event("stats", &frame),
                    None => continue,
                }
            }
            received = events.recv(), if events_open => match received {
                Ok(e) if sees_event(&who, &e) => sse_event("event", &EventView::from(e)),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    sse_event("lagged", &serde_json::json!({ "missed": missed }))
                }
                Err(broadcast::error::RecvError::Closed) => {
                    events_open = false;
                    continue;
                }
            },
        };
        // Serialising these types cannot fail (no maps with non-string keys).
        let Ok(event) = event else { continue };
        if tx.send(Ok(event)).await.is_err() {
            return;
        }
    }
}

/// A named event whose data is `value` as one line of JSON.
fn sse_event(name: &str, value: &impl Serialize) -> Result<Event, serde_json::Error> {
    Ok(Event::default()
        .event(name)
        .data(serde_json::to_string(value)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vf(i: u16, rx: u64, tx: u64, drops: u64, copied: u64) -> proto::VfStats {
        proto::VfStats {
            vf: nfhost_api::names::vf_name(i),
            nf: "nfs/mon".into(),
            chain: "chains/edge".into(),
            rx_packets: rx,
            rx_bytes: rx * 60,
            tx_packets: tx,
            tx_bytes: tx * 60,
            drops: [("no_buffer".to_owned(), drops)].into(),
            dma_copied_bytes: copied,
            ..Default::default()
        }
    }

    fn stats(time_ms: i64, vfs: Vec<proto::VfStats>, wire_rx: u64) -> proto::Stats {
        proto::Stats {
            time_ms,
            vfs,
            wire: Some(proto::WireStats {
                rx_packets: wire_rx,
                rx_bytes: wire_rx * 64,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn rates_are_deltas_over_the_interval() {
        let before = stats(1_000, vec![vf(0, 1_000, 500, 10, 0)], 2_000);
        let now = stats(3_000, vec![vf(0, 5_000, 2_500, 30, 6_000)], 10_000);
        let f = rates(&before, &now, Duration::from_secs(2));
        assert_eq!(f.t, 3_000);
        assert_eq!(f.interval_ms, 2_000);
        let v = &f.vfs[0];
        assert_eq!(v.index, 0);
        assert_eq!(v.rx_pps, 2_000.0);
        assert_eq!(v.tx_pps, 1_000.0);
        assert_eq!(v.rx_bps, 2_000.0 * 60.0 * 8.0);
        assert_eq!(v.drops_per_s, 10.0);
        assert_eq!(v.copied_bytes, 6_000);
        assert_eq!(v.copied_bytes_per_s, 3_000.0);
        assert_eq!(v.drops, 30);
        assert_eq!(f.wire.rx_pps, 4_000.0);
        assert_eq!(f.wire.rx_bps, 4_000.0 * 64.0 * 8.0);
    }

    #[test]
    fn a_reset_counter_or_a_new_vf_gives_zero_not_garbage() {
        let before = stats(0, vec![vf(0, 9_000, 9_000, 5, 100)], 0);
        let now = stats(1_000, vec![vf(0, 10, 10, 0, 0), vf(1, 700, 0, 0, 0)], 0);
        let f = rates(&before, &now, Duration::from_secs(1));
        assert_eq!(f.vfs[0].rx_pps, 0.0);
        assert_eq!(f.vfs[0].drops_per_s, 0.0);
        assert_eq!(f.vfs[0].copied_bytes_per_s, 0.0);
        assert_eq!(f.vfs[1].index, 1);
        assert_eq!(f.vfs[1].rx_pps, 700.0);
    }

    #[test]
    fn a_zero_interval_does_not_divide_by_zero() {
        let s = stats(0, vec![vf(0, 1, 1, 0, 0)], 1);
        let f = rates(&s, &s, Duration::ZERO);
        assert!(f.vfs[0].rx_pps.is_finite());
        assert_eq!(f.vfs[0].rx_pps, 0.0);
    }

    #[test]
    fn a_frame_is_the_documented_json() {
        let before = stats(0, vec![vf(3, 0, 0, 0, 0)], 0);
        let now = stats(1_000, vec![vf(3, 100, 100, 0, 0)], 100);
        let v = serde_json::to_value(rates(&before, &now, Duration::from_secs(1))).unwrap();
        for key in [
            "vf",
            "index",
            "nf",
            "chain",
            "rx_pps",
            "tx_pps",
            "rx_bps",
            "tx_bps",
            "drops_per_s",
            "copied_bytes",
        ] {
            assert!(v["vfs"][0].get(key).is_some(), "{key} missing: {v}");
        }
        assert_eq!(v["vfs"][0]["vf"], "pfs/0/vfs/3");
        assert_eq!(v["wire"]["rx_pps"], 100.0);
        assert!(v["wire"].get("tx_pps").is_some());
    }
}
