//! Output for people: aligned tables, `Key: value` views, and the words nfctl uses
//! for the API's enums and numbers.

use std::fmt::Write as _;

use nfhost_api::proto;

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Rows under a header, columns two spaces apart, numbers right-aligned.
#[derive(Debug)]
pub struct Table {
    header: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[(&'static str, Align)]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table, each line ending in a newline.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|(h, _)| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.header.iter().map(|(h, _)| (*h).to_owned()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            out.push_str(&self.line(&widths, row));
            out.push('\n');
        }
        out
    }

    /// One row laid out to `widths`: for output that streams, where the rows to come
    /// are not known yet.
    pub fn line(&self, widths: &[usize], cells: &[String]) -> String {
        let mut line = String::new();
        let last = cells.len().min(self.header.len()).saturating_sub(1);
        for (i, cell) in cells.iter().enumerate().take(self.header.len()) {
            let width = widths.get(i).copied().unwrap_or(0);
            let pad = width.saturating_sub(cell.chars().count());
            if i > 0 {
                line.push_str("  ");
            }
            match self.header[i].1 {
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
                Align::Left if i == last => line.push_str(cell),
                Align::Left => {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        line
    }

    /// The header line laid out to `widths`.
    pub fn header_line(&self, widths: &[usize]) -> String {
        let header: Vec<String> = self.header.iter().map(|(h, _)| (*h).to_owned()).collect();
        self.line(widths, &header)
    }
}

/// `Key:  value` lines, values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let _ = writeln!(out, "{:<width$}  {value}", format!("{key}:"));
    }
    out
}

/// `-` for an empty string.
pub fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_owned()
    }
}

pub fn on_off(b: bool) -> String {
    if b { "on" } else { "off" }.into()
}

pub fn up_down(b: bool) -> String {
    if b { "up" } else { "down" }.into()
}

/// The generated enum's variant name without its prefix, lowercase, `_` → `-`:
/// `RESTART_POLICY_ON_FAILURE` → `on-failure`.
fn word(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
        .replace('_', "-")
}

pub fn link_state(v: i32) -> String {
    match proto::LinkState::try_from(v) {
        Ok(proto::LinkState::Unspecified) => "-".into(),
        Ok(s) => word(s.as_str_name(), "LINK_STATE_"),
        Err(_) => format!("unknown ({v})"),
    }
}

pub fn restart_policy(v: i32) -> String {
    match proto::RestartPolicy::try_from(v) {
        Ok(proto::RestartPolicy::Unspecified) => "default".into(),
        Ok(p) => word(p.as_str_name(), "RESTART_POLICY_"),
        Err(_) => format!("unknown ({v})"),
    }
}

pub fn isolation(v: i32) -> String {
    match proto::Isolation::try_from(v) {
        Ok(proto::Isolation::Unspecified) => "default".into(),
        Ok(i) => word(i.as_str_name(), "ISOLATION_"),
        Err(_) => format!("unknown ({v})"),
    }
}

pub fn event_kind(v: i32) -> String {
    match proto::EventKind::try_from(v) {
        Ok(k) => word(k.as_str_name(), "EVENT_KIND_"),
        Err(_) => format!("unknown ({v})"),
    }
}

/// `running`, `failed (crash loop: …)`: the state, with the reason when there is one.
pub fn nf_state(status: Option<&proto::NfStatus>) -> String {
    let Some(status) = status else {
        return "unknown".into();
    };
    let state = match proto::NfState::try_from(status.state) {
        Ok(proto::NfState::Unspecified) => "unknown".into(),
        Ok(s) => word(s.as_str_name(), "NF_STATE_"),
        Err(_) => format!("unknown ({})", status.state),
    };
    if status.reason.is_empty() {
        state
    } else {
        format!("{state} ({})", status.reason)
    }
}

/// VLAN 0 means none.
pub fn vlan(v: u32) -> String {
    if v == 0 { "-".into() } else { v.to_string() }
}

/// Mbit/s; `zero` says what 0 means.
pub fn rate(mbits: u32, zero: &str) -> String {
    if mbits == 0 {
        zero.into()
    } else {
        format!("{mbits} Mbit/s")
    }
}

/// Which frames a chain takes from the wire.
pub fn classifier(c: Option<&proto::Classifier>) -> String {
    let mut parts = Vec::new();
    if let Some(c) = c {
        if c.vlan != 0 {
            parts.push(format!("vlan {}", c.vlan));
        }
        if !c.dst_mac.is_empty() {
            parts.push(format!("dst {}", c.dst_mac));
        }
    }
    if parts.is_empty() {
        "any".into()
    } else {
        parts.join(", ")
    }
}

/// How frames leave a chain: `vlan 200`, `vlan 200, two-way`, `keep vlan`.
pub fn egress(e: Option<&proto::Egress>) -> String {
    match e {
        Some(e) if e.vlan != 0 && e.two_way => format!("vlan {}, two-way", e.vlan),
        Some(e) if e.vlan != 0 => format!("vlan {}", e.vlan),
        _ => "keep vlan".into(),
    }
}

/// Bytes in IEC units: `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A rate per second, SI-scaled above 10 000: `14.9M`.
pub fn per_second(rate: f64) -> String {
    if rate < 10_000.0 {
        format!("{rate:.0}")
    } else if rate < 10_000_000.0 {
        format!("{:.1}k", rate / 1e3)
    } else if rate < 10_000_000_000.0 {
        format!("{:.1}M", rate / 1e6)
    } else {
        format!("{:.1}G", rate / 1e9)
    }
}

/// Unix milliseconds as UTC, RFC 3339: `2025-01-31T12:00:05.250Z`.
pub fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// Year, month, day of a count of days since 1970-01-01 in the proleptic Gregorian
/// calendar (Howard Hinnant, "chrono-Compatible Low-Level Date Algorithms").
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
