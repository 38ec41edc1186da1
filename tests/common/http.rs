//! A plain HTTP/1.1 client for tests: enough for `/metrics` and the JSON API.
// Shared by several test binaries; each uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A plain HTTP/1.1 GET; returns (status, body).
pub fn get(port: u16, path: &str) -> (u16, String) {
    let (status, _, body, ended) = get_with(port, path, &[], Duration::from_secs(10));
    assert!(ended, "GET {path}: no whole response within 10 s");
    (status, body)
}

/// A GET with `headers` added; returns (status, head, body, whether the server
/// ended the response). A response the server does not end, such as the live
/// stream, is read for `within` and cut there.
pub fn get_with(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    within: Duration,
) -> (u16, String, String, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(within)).ok();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
    )
    .expect("send");
    let deadline = Instant::now() + within;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut ended = false;
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => {
                ended = true;
                break;
            }
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, head.to_owned(), body, ended)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A series' labels, by name.
pub type LabelSet = BTreeMap<String, String>;

/// Samples of one metric in a Prometheus text exposition, read by a kept parser
/// (`prometheus-parse`): label set → value. A histogram's `_bucket` lines are the
/// parser's histogram, not samples; its `_sum` and `_count` are samples as usual.
pub fn samples(text: &str, metric: &str) -> BTreeMap<LabelSet, f64> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("a Prometheus text exposition");
    scrape
        .samples
        .into_iter()
        .filter(|s| s.metric == metric)
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let labels: LabelSet = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Some((labels, value))
        })
        .collect()
}

/// The value of label `key` in a label set as [`samples`] gives it.
pub fn label<'a>(labels: &'a LabelSet, key: &str) -> Option<&'a str> {
    labels.get(key).map(String::as_str)
}

/// Who owns each VF, from `nfhost_vf_info`: (`pf`, `vf`) → (`nf`, `chain`).
pub fn vf_owners(text: &str) -> BTreeMap<(String, String), (String, String)> {
    samples(text, "nfhost_vf_info")
        .keys()
        .filter_map(|l| {
            let at = (label(l, "pf")?.to_owned(), label(l, "vf")?.to_owned());
            let owner = (
                label(l, "nf")?.to_owned(),
                label(l, "chain").unwrap_or("").to_owned(),
            );
            Some((at, owner))
        })
        .collect()
}

/// [`samples`] of a per-VF metric joined with its VF's owner, as
/// `metric * on (pf, vf) group_left (nf, chain) nfhost_vf_info` is: the label set
/// gains `nf` and `chain`; VFs without an owner are left out.
pub fn samples_with_owner(text: &str, metric: &str) -> BTreeMap<LabelSet, f64> {
    let owners = vf_owners(text);
    samples(text, metric)
        .into_iter()
        .filter_map(|(mut labels, v)| {
            let at = (
                label(&labels, "pf")?.to_owned(),
                label(&labels, "vf")?.to_owned(),
            );
            let (nf, chain) = owners.get(&at)?;
            labels.insert("nf".into(), nf.clone());
            labels.insert("chain".into(), chain.clone());
            Some((labels, v))
        })
        .collect()
}
