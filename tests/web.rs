//! The dashboard over real HTTP: `nfhost::web::router` on 127.0.0.1:0, in front of a
//! real controller (NIC engine, `gen` wire, NF processes), talked to by a plain
//! HTTP/1.1 client over a `TcpStream`: what a browser or curl sees, bytes and all.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nfhost::control::Controller;
use nfhost::serve::ServeSettings;
use nfhost::web::metrics::Metrics;
use serde_json::Value;

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

// ------------------------------------------------------------------ the service

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("nfhost-web-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A controller started as `nfhost serve` starts it, and the dashboard in front.
struct Service {
    addr: SocketAddr,
    controller: Arc<Controller>,
    metrics: Arc<Metrics>,
    runtime: Option<tokio::runtime::Runtime>,
    _data: TempDir,
}

impl Service {
    /// `vfs` VFs; with `gen_rate`, the `gen` wire at that rate on VLAN 100, else no
    /// wire.
    fn start(tag: &str, vfs: u16, gen_rate: Option<u64>) -> Result<Service> {
        let data = TempDir::new(tag);
        let settings = ServeSettings {
            data_dir: Some(data.0.clone()),
            vfs: Some(vfs),
            wire: Some(if gen_rate.is_some() { "gen" } else { "none" }.into()),
            gen_rate,
            gen_vlans: Some(vec![100]),
            ..Default::default()
        };
        // Blocking: outside any runtime, as `serve` does.
        let started = nfhost::serve::start(&settings, env!("CARGO_BIN_EXE_nfhost").into())?;
        let authenticator = started.authenticator.clone();
        let controller = started.controller;
        controller.record_start()?;
        controller.reconcile();
        let metrics = Arc::new(Metrics::new());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let app = nfhost::web::router(controller.clone(), metrics.clone(), authenticator);
        // The service's own accept loop, as `serve` runs it.
        runtime.spawn(nfhost::web::listener::serve(
            listener,
            None,
            app,
            std::future::pending(),
        ));
        // The supervisor, as `serve` runs it.
        let c = controller.clone();
        runtime.spawn(async move {
            let mut ticker = tokio::time::interval(nfhost::control::TICK);
            loop {
                ticker.tick().await;
                let c = c.clone();
                let _ = tokio::task::spawn_blocking(move || c.tick()).await;
            }
        });
        Ok(Service {
            addr,
            controller,
            metrics,
            runtime: Some(runtime),
            _data: data,
        })
    }

    fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path)
    }

    fn json(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let c = self.controller.clone();
        c.stop_all();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

// ------------------------------------------------------------------ a small HTTP client

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads the status line and headers.
fn read_head(reader: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').expect("header has a colon");
        headers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    (status, headers)
}

/// One chunk of a chunked body; `None` at the last (empty) chunk.
fn read_chunk(reader: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
        .map_err(|e| std::io::Error::other(format!("chunk size {line:?}: {e}")))?;
    let mut chunk = vec![0; size];
    reader.read_exact(&mut chunk)?;
    let mut crlf = [0; 2];
    reader.read_exact(&mut crlf)?;
    Ok((size > 0).then_some(chunk))
}

fn connect(addr: SocketAddr, method: &str, path: &str, extra: &str) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .expect("send request");
    BufReader::new(stream)
}

fn request(addr: SocketAddr, method: &str, path: &str) -> Response {
    request_with(addr, method, path, "")
}

fn request_with(addr: SocketAddr, method: &str, path: &str, extra: &str) -> Response {
    let mut reader = connect(addr, method, path, extra);
    let (status, headers) = read_head(&mut reader);
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let mut body = Vec::new();
    if method == "HEAD" || status == 304 {
        // No body, whatever the headers say (RFC 9110 §9.3.2, §15.4.5).
    } else if chunked {
        while let Some(chunk) = read_chunk(&mut reader).expect("chunk") {
            body.extend(chunk);
        }
    } else {
        reader.read_to_end(&mut body).expect("body");
    }
    Response {
        status,
        headers,
        body,
    }
}

/// A server-sent event stream being read.
struct Sse {
    reader: BufReader<TcpStream>,
    pending: String,
}

impl Sse {
    fn open(addr: SocketAddr) -> Sse {
        let mut reader = connect(
            addr,
            "GET",
            "/api/v1/stream",
            "Accept: text/event-stream\r\n",
        );
        let (status, headers) = read_head(&mut reader);
        assert_eq!(status, 200);
        let ct = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.as_str());
        assert_eq!(ct, Some("text/event-stream"));
        Sse {
            reader,
            pending: String::new(),
        }
    }

    /// The next event with data, as (name, JSON), or `None` past the deadline.
    fn next(&mut self, deadline: Instant) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                let json = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("event {name} data is not JSON ({e}): {data}"));
                return Some((name, json));
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.reader
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            match read_chunk(&mut self.reader) {
                Ok(Some(chunk)) => self.pending.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(None) => panic!("the stream ended"),
                Err(_) => return None,
            }
        }
    }
}

// ------------------------------------------------------------------ the tests

fn chain_vfs(s: &Service) -> Vec<String> {
    let chains = s.json("/api/v1/chains");
    chains["chains"][0]["vfs"]
        .as_array()
        .expect("vfs")
        .iter()
        .map(|v| v.as_str().expect("vf name").to_owned())
        .collect()
}

#[test]
fn the_dashboard_shows_a_live_chain() -> Result<()> {
    let s = Service::start("live", 16, Some(20_000))?;
    let chain = nfhost_api::chain_file::parse_chain(include_str!("../examples/edge.toml"))?;
    s.controller
        .create_chain(&nfhost::auth::Principal::anonymous(), &chain, false)?;

    // The page, and the assets it links, with the right types and caching.
    let page = s.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    assert!(html.contains(r#"id="chart""#), "{html}");
    assert!(html.contains(r#"id="vf-table""#), "{html}");
    for (asset, ty) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/app.css", "text/css; charset=utf-8"),
        (
            "/assets/vendor/uplot/uPlot.iife.min.js",
            "text/javascript; charset=utf-8",
        ),
        (
            "/assets/vendor/uplot/uPlot.min.css",
            "text/css; charset=utf-8",
        ),
    ] {
        let start = html
            .find(&format!("{asset}?v="))
            .unwrap_or_else(|| panic!("the page does not link {asset}"));
        let url = html[start..].split('"').next().expect("url");
        let r = s.get(url);
        assert_eq!(r.status, 200, "{url}");
        assert_eq!(r.header("content-type"), Some(ty), "{url}");
        assert!(
            r.header("cache-control")
                .is_some_and(|c| c.contains("immutable"))
        );
        assert!(!r.body.is_empty());
        // Revalidation by ETag.
        let etag = r.header("etag").expect("etag").to_owned();
        let again = request_with(s.addr, "GET", url, &format!("If-None-Match: {etag}\r\n"));
        assert_eq!(again.status, 304, "{url}");
    }
    assert_eq!(s.get("/assets/nope.js").status, 404);
    let icon = s.get("/favicon.ico");
    assert_eq!(icon.status, 200);
    assert_eq!(
        icon.header("content-type"),
        Some("image/svg+xml; charset=utf-8")
    );

    // The JSON API.
    let pf = s.json("/api/v1/pf");
    assert_eq!(pf["name"], "pfs/0");
    assert_eq!(pf["num_vfs"], 16);
    let vfs = s.json("/api/v1/vfs");
    let vfs = vfs["vfs"].as_array().expect("vfs");
    assert_eq!(vfs.len(), 16, "every VF, idle ones too");
    for (i, vf) in vfs.iter().enumerate() {
        assert_eq!(vf["index"], i);
        assert!(vf["link_state_name"].is_string());
    }
    let owned: Vec<&str> = vfs
        .iter()
        .filter_map(|v| v["owner"].as_str())
        .filter(|o| !o.is_empty())
        .collect();
    assert_eq!(owned, ["nfs/mon", "nfs/fwd"]);
    let vf_names = chain_vfs(&s);
    assert_eq!(vf_names.len(), 2);
    let chains = s.json("/api/v1/chains");
    assert_eq!(chains["chains"][0]["name"], "chains/edge");
    assert_eq!(chains["chains"][0]["isolation_name"], "shared");

    let deadline = Instant::now() + Duration::from_secs(30);
    let nfs = loop {
        let nfs = s.json("/api/v1/nfs");
        let running = nfs["nfs"]
            .as_array()
            .expect("nfs")
            .iter()
            .all(|n| n["state_name"] == "running");
        // Every NF has reported (the list is in name order: waiting for the first
        // one only let the monitor's report be missing now and then).
        let reported = nfs["nfs"]
            .as_array()
            .expect("nfs")
            .iter()
            .all(|n| n["report"].is_object());
        if running && reported {
            break nfs;
        }
        assert!(Instant::now() < deadline, "NFs not running: {nfs}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mon = nfs["nfs"]
        .as_array()
        .expect("nfs")
        .iter()
        .find(|n| n["name"] == "nfs/mon")
        .expect("nfs/mon listed");
    assert_eq!(mon["kind"], "monitor");
    assert!(mon["status"]["restarts"].is_u64());
    // The engine's wrapper: what the NF said, and the runtime's own figures.
    assert!(mon["report"]["nf"]["top"].is_array(), "{mon}");
    let report = s.json("/api/v1/nfs/mon/report");
    assert!(report["nf"]["top"].is_array(), "{report}");
    assert!(report["runtime"]["batches"].is_u64(), "{report}");
    let missing = s.get("/api/v1/nfs/nope/report");
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("nope"), "{}", missing.text());
    assert_eq!(s.get("/api/v1/nope").status, 404);

    let events = s.json("/api/v1/events?limit=5");
    let events = events["events"].as_array().expect("events");
    assert!(!events.is_empty() && events.len() <= 5);
    assert!(
        events.iter().any(|e| e["kind_name"] == "nf_started"),
        "{events:?}"
    );
    let stats = s.json("/api/v1/stats");
    assert_eq!(stats["vfs"].as_array().expect("vfs").len(), 16);
    let active = s.json("/api/v1/stats?active_only=true");
    assert!(active["vfs"].as_array().expect("vfs").len() < 16);

    // /metrics, once sampled.
    let (c, m) = (s.controller.clone(), s.metrics.clone());
    m.sample(&c)?;
    let metrics = s.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        metrics.header("content-type")
    );
    assert!(
        metrics.text().contains("nfhost_vf_receive_packets_total"),
        "{}",
        metrics.text()
    );

    // The live stream: rates on the chain's VFs within 3 s.
    let mut stream = Sse::open(s.addr);
    let deadline = Instant::now() + Duration::from_secs(3);
    let frame = loop {
        let (name, data) = stream
            .next(deadline)
            .expect("a stats event with traffic on the chain's VFs within 3 s");
        if name != "stats" {
            continue;
        }
        let busy = vf_names.iter().all(|vf| {
            data["vfs"]
                .as_array()
                .and_then(|vfs| vfs.iter().find(|v| v["vf"] == vf.as_str()))
                .and_then(|v| v["rx_pps"].as_f64())
                .is_some_and(|pps| pps > 0.0)
        });
        if busy {
            break data;
        }
    };
    assert_eq!(frame["vfs"].as_array().expect("vfs").len(), 16);
    let mon_vf = frame["vfs"]
        .as_array()
        .expect("vfs")
        .iter()
        .find(|v| v["nf"] == "nfs/mon")
        .expect("mon's VF");
    assert_eq!(mon_vf["chain"], "chains/edge");
    for key in ["tx_pps", "rx_bps", "tx_bps", "drops_per_s", "copied_bytes"] {
        assert!(mon_vf[key].is_number(), "{key} in {mon_vf}");
    }
    assert!(
        frame["wire"]["rx_pps"].as_f64().is_some_and(|p| p > 0.0),
        "{frame}"
    );
    assert!(frame["wire"]["tx_pps"].is_number());
    assert!(frame["t"].is_i64());

    // Events arrive on the stream as they happen.
    let idle = (0..16)
        .map(|i| format!("pfs/0/vfs/{i}"))
        .find(|v| !vf_names.contains(v))
        .expect("an idle VF");
    let c = s.controller.clone();
    c.reset_vf(&nfhost::auth::Principal::anonymous(), &idle)?;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (name, data) = stream.next(deadline).expect("the reset's event");
        if name == "event" && data["vf"] == idle.as_str() {
            assert_eq!(data["kind_name"], "config_changed");
            break;
        }
    }
    Ok(())
}

#[test]
fn the_dashboard_is_read_only() -> Result<()> {
    let s = Service::start("ro", 4, None)?;
    for path in [
        "/",
        "/api/v1/vfs",
        "/api/v1/stream",
        "/metrics",
        "/no/such/page",
    ] {
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let r = request(s.addr, method, path);
            assert_eq!(r.status, 405, "{method} {path}");
            assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method} {path}");
        }
    }
    // HEAD is a GET without the body.
    let head = request(s.addr, "HEAD", "/api/v1/vfs");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("application/json"));
    assert!(head.body.is_empty());
    let vfs = s.json("/api/v1/vfs");
    assert_eq!(vfs["vfs"].as_array().expect("vfs").len(), 4);
    // Nothing changed by any of it.
    assert_eq!(s.json("/api/v1/nfs")["nfs"], serde_json::json!([]));
    Ok(())
}
