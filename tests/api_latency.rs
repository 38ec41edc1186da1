//! Benchmark, not a test (ignored; it prints figures and asserts none): the
//! round-trip time of GetNf for the demo chain's monitor (a reply of about 900
//! bytes, its self-report included) over one connection, 300 calls in a row.
//! Before `TCP_NODELAY` on accepted connections, Nagle's algorithm held each
//! reply until the client's delayed ACK: 44 ms at p50.
//!
//!     cargo test --test api_latency -- --ignored --nocapture

#[path = "common/server.rs"]
mod server;

use std::time::{Duration, Instant};

use nfhost_api::proto;
use prost::Message;
use server::{Clients, Server, TempDir, runtime, wait_until};

#[test]
#[ignore = "benchmark: prints figures"]
fn get_nf_round_trip() {
    let data = TempDir::new("api-latency");
    let s = Server::start(
        &data.0,
        &["--vfs", "8", "--gen-rate", "20000", "--gen-vlans", "100"],
    );
    let rt = runtime();
    let mut c = Clients::new(s.channel(&rt));
    let text = std::fs::read_to_string("examples/edge.toml").expect("example chain");
    let chain = nfhost_api::chain_file::parse_chain(&text).expect("parses");
    rt.block_on(c.chain.create_chain(proto::CreateChainRequest {
        chain: Some(chain),
        validate_only: false,
    }))
    .expect("chain");
    let get = |c: &mut Clients| {
        rt.block_on(c.nf.get_nf(proto::GetNfRequest {
            name: "nfs/mon".into(),
        }))
        .expect("GetNf")
        .into_inner()
    };
    // The monitor's report (most of the reply) comes about once a second.
    wait_until("the monitor's first report", 10, || {
        get(&mut c).status.is_some_and(|s| !s.report.is_empty())
    });
    let mut times: Vec<Duration> = Vec::new();
    let mut size = 0;
    for _ in 0..300 {
        let start = Instant::now();
        size = get(&mut c).encoded_len();
        times.push(start.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_micros();
    println!(
        "GetNf, {size}-byte reply, 300 calls on one connection: p50 {} µs, p99 {} µs, max {} µs",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    s.stop();
}
