//! The Prometheus text exposition format, version 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format>):
//! one sample's families written out, and the one histogram we keep.
//!
//! Ours rather than `metrics-exporter-prometheus` because that exporter keeps every
//! series it ever saw until an idle timeout expires, and has no call to remove one:
//! a deleted NF's series would outlive it by the timeout, or live ones vanish when
//! a sample is late. Here each sample is the whole set, so a series is exported
//! exactly while the thing it describes exists.

use std::fmt::Write as _;

/// What a family is, for its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A series' labels, in the order they are written.
pub type Labels = Vec<(&'static str, String)>;

/// One family's series in one sample.
#[derive(Debug)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    /// Counters and gauges: the value of each series.
    values: Vec<(Labels, f64)>,
    /// Histograms: the state of each series.
    histograms: Vec<(Labels, Histogram)>,
}

impl Family {
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind,
            values: Vec::new(),
            histograms: Vec::new(),
        }
    }

    /// Adds a counter or gauge series. Counters are whole numbers below 2^53 for
    /// anything nfhost counts in its lifetime, so `f64` holds them exactly.
    pub fn push(&mut self, labels: Labels, value: f64) {
        debug_assert_ne!(self.kind, Kind::Histogram, "{}", self.name);
        self.values.push((labels, value));
    }

    /// Adds a histogram series.
    pub fn push_histogram(&mut self, labels: Labels, histogram: Histogram) {
        debug_assert_eq!(self.kind, Kind::Histogram, "{}", self.name);
        self.histograms.push((labels, histogram));
    }

    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.histograms.is_empty()
    }

    /// Writes the family; a family without series writes nothing, as it has nothing
    /// to describe.
    fn write(&self, out: &mut String) {
        if self.is_empty() {
            return;
        }
        let help = self.help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {} {help}", self.name);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind.as_str());
        for (labels, value) in &self.values {
            line(out, self.name, labels, None, *value);
        }
        for (labels, h) in &self.histograms {
            let bucket = format!("{}_bucket", self.name);
            let mut cumulative = 0;
            for (bound, n) in h.bounds.iter().zip(&h.counts) {
                cumulative += n;
                line(
                    out,
                    &bucket,
                    labels,
                    Some(&bound.to_string()),
                    cumulative as f64,
                );
            }
            line(out, &bucket, labels, Some("+Inf"), h.count as f64);
            line(out, &format!("{}_sum", self.name), labels, None, h.sum);
            line(
                out,
                &format!("{}_count", self.name),
                labels,
                None,
                h.count as f64,
            );
        }
        out.push('\n');
    }
}

/// `name{k="v",…} value`, with `le` last when given.
fn line(out: &mut String, name: &str, labels: &Labels, le: Option<&str>, value: f64) {
    out.push_str(name);
    let all = labels
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(le.map(|le| ("le", le)));
    let mut first = true;
    for (k, v) in all {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape(v));
    }
    if !first {
        out.push('}');
    }
    let _ = writeln!(out, " {}", number(value));
}

/// Label values escape `\`, `"` and newline (the format's only escapes).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Go's `ParseFloat` reads what Rust's `Display` writes, except the specials.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}

/// Writes families in the order given.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        f.write(&mut out);
    }
    out
}

/// A cumulative histogram with fixed bucket bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative): `counts[i]` counts values in
    /// `(bounds[i-1], bounds[i]]`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram; `bounds` ascending.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_help_type_and_escaped_labels() {
        let mut f = Family::new("x_total", Kind::Counter, "A \\ thing.\nTwo lines.");
        f.push(vec![("a", "q\"\\\n".to_owned()), ("b", String::new())], 3.0);
        f.push(Vec::new(), 1.5);
        assert_eq!(
            render(&[f, Family::new("empty", Kind::Gauge, "Nothing.")]),
            "# HELP x_total A \\\\ thing.\\nTwo lines.\n\
             # TYPE x_total counter\n\
             x_total{a=\"q\\\"\\\\\\n\",b=\"\"} 3\n\
             x_total 1.5\n\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(&[0.5, 1.0]);
        for v in [0.25, 0.5, 0.75, 9.0] {
            h.observe(v);
        }
        let mut f = Family::new("h", Kind::Histogram, "H.");
        f.push_histogram(vec![("nf", "a".to_owned())], h);
        let text = render(&[f]);
        assert!(text.contains("h_bucket{nf=\"a\",le=\"0.5\"} 2\n"), "{text}");
        assert!(text.contains("h_bucket{nf=\"a\",le=\"1\"} 3\n"), "{text}");
        assert!(
            text.contains("h_bucket{nf=\"a\",le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("h_sum{nf=\"a\"} 10.5\n"), "{text}");
        assert!(text.contains("h_count{nf=\"a\"} 4\n"), "{text}");
        assert_eq!(number(f64::INFINITY), "+Inf");
    }
}
