//! What a benchmark run measured: per operation, requests, records, bytes
//! and an HDR histogram of latencies; errors by kind. Rendered as a table
//! or as JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// The operations a run mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// A batch write.
    Write,
    /// A GET of one record by id.
    Get,
    /// A page of a shop's records.
    List,
}

impl Op {
    /// Every operation, in report order.
    pub const ALL: [Op; 3] = [Op::Write, Op::Get, Op::List];

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Write => "write",
            Op::Get => "get",
            Op::List => "list",
        }
    }
}

/// What one operation measured.
#[derive(Debug, Clone)]
pub struct OpStats {
    /// Requests that succeeded.
    pub ok: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Records written or read by the successful requests.
    pub records: u64,
    /// Record bytes sent (writes) or received (reads).
    pub bytes: u64,
    /// Latency of every request, failed ones included, in microseconds.
    pub latency: Histogram<u64>,
}

impl Default for OpStats {
    fn default() -> Self {
        // Microseconds up to an hour, 3 significant digits.
        let latency = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        Self { ok: 0, errors: 0, records: 0, bytes: 0, latency }
    }
}

/// The measurements of one client, or of all merged.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Per operation.
    pub ops: BTreeMap<Op, OpStats>,
    /// Failed requests by kind: `503 not_enough_replicas`, `timeout`, ...
    pub errors: BTreeMap<String, u64>,
}

impl Stats {
    /// Records one request.
    pub fn record(&mut self, op: Op, took: Duration, outcome: Result<(u64, u64), String>) {
        let stats = self.ops.entry(op).or_default();
        stats.latency.saturating_record(took.as_micros().max(1) as u64);
        match outcome {
            Ok((records, bytes)) => {
                stats.ok += 1;
                stats.records += records;
                stats.bytes += bytes;
            }
            Err(kind) => {
                stats.errors += 1;
                *self.errors.entry(kind).or_default() += 1;
            }
        }
    }

    /// Adds `other` into this.
    pub fn merge(&mut self, other: &Stats) {
        for (op, theirs) in &other.ops {
            let ours = self.ops.entry(*op).or_default();
            ours.ok += theirs.ok;
            ours.errors += theirs.errors;
            ours.records += theirs.records;
            ours.bytes += theirs.bytes;
            ours.latency.add(&theirs.latency).expect("histograms with the same bounds");
        }
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
    }

    /// Requests sent, failed ones included.
    pub fn requests(&self) -> u64 {
        self.ops.values().map(|s| s.ok + s.errors).sum()
    }
}

/// Milliseconds, from a histogram value in microseconds.
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The latency summary of one histogram, in milliseconds.
fn percentiles(h: &Histogram<u64>) -> Value {
    json!({
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p99.9": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
    })
}

/// The whole run as JSON: `settings` as given, totals, per operation and
/// errors by kind.
pub fn to_json(stats: &Stats, elapsed: Duration, settings: Value) -> Value {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let ops: serde_json::Map<String, Value> = stats
        .ops
        .iter()
        .map(|(op, s)| {
            let value = json!({
                "requests": s.ok + s.errors,
                "errors": s.errors,
                "records": s.records,
                "bytes": s.bytes,
                "requests_per_s": (s.ok + s.errors) as f64 / secs,
                "records_per_s": s.records as f64 / secs,
                "latency_ms": percentiles(&s.latency),
            });
            (op.name().to_string(), value)
        })
        .collect();
    let records: u64 = stats.ops.values().map(|s| s.records).sum();
    let bytes: u64 = stats.ops.values().map(|s| s.bytes).sum();
    json!({
        "settings": settings,
        "elapsed_s": secs,
        "requests": stats.requests(),
        "errors": stats.ops.values().map(|s| s.errors).sum::<u64>(),
        "records": records,
        "requests_per_s": stats.requests() as f64 / secs,
        "records_per_s": records as f64 / secs,
        "mb_per_s": bytes as f64 / secs / 1e6,
        "ops": ops,
        "errors_by_kind": stats.errors,
    })
}

/// The run as a table, from its JSON form.
pub fn render(report: &Value) -> String {
    let mut out = String::new();
    let f = |v: &Value| v.as_f64().unwrap_or_default();
    let n = |v: &Value| v.as_u64().unwrap_or_default();
    let target = report["settings"]["target"].as_str().unwrap_or("target");
    out.push_str(&format!(
        "{target}: ran {:.1} s: {} requests ({:.0}/s), {} records ({:.0}/s, {:.1} MB/s), {} errors\n",
        f(&report["elapsed_s"]),
        n(&report["requests"]),
        f(&report["requests_per_s"]),
        n(&report["records"]),
        f(&report["records_per_s"]),
        f(&report["mb_per_s"]),
        n(&report["errors"]),
    ));
    out.push_str(&format!(
        "{:<6} {:>10} {:>10} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}\n",
        "op", "requests", "req/s", "records/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors"
    ));
    for op in Op::ALL {
        let s = &report["ops"][op.name()];
        if s.is_null() {
            continue;
        }
        let l = &s["latency_ms"];
        out.push_str(&format!(
            "{:<6} {:>10} {:>10.0} {:>11.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7}\n",
            op.name(),
            n(&s["requests"]),
            f(&s["requests_per_s"]),
            f(&s["records_per_s"]),
            f(&l["p50"]),
            f(&l["p90"]),
            f(&l["p99"]),
            f(&l["p99.9"]),
            f(&l["max"]),
            n(&s["errors"]),
        ));
    }
    let errors = report["errors_by_kind"].as_object().cloned().unwrap_or_default();
    if errors.is_empty() {
        out.push_str("errors by kind: none\n");
    } else {
        out.push_str("errors by kind:\n");
        for (kind, n) in errors {
            out.push_str(&format!("  {n:>8}  {kind}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_stats_add_up() {
        let mut a = Stats::default();
        a.record(Op::Write, Duration::from_millis(2), Ok((10, 1000)));
        a.record(Op::Write, Duration::from_millis(4), Err("503 not_enough_replicas".into()));
        let mut b = Stats::default();
        b.record(Op::Write, Duration::from_millis(8), Ok((10, 1000)));
        b.record(Op::Get, Duration::from_millis(1), Ok((1, 100)));
        a.merge(&b);
        let report = to_json(&a, Duration::from_secs(2), json!({}));
        assert_eq!(report["requests"], 4);
        assert_eq!(report["errors"], 1);
        assert_eq!(report["records"], 21);
        assert_eq!(report["ops"]["write"]["requests"], 3);
        assert_eq!(report["ops"]["write"]["records_per_s"], 10.0);
        assert_eq!(report["errors_by_kind"]["503 not_enough_replicas"], 1);
        let max = report["ops"]["write"]["latency_ms"]["max"].as_f64().unwrap();
        assert!((max - 8.0).abs() < 0.01, "{max}");
        let table = render(&report);
        assert!(table.contains("write") && table.contains("503 not_enough_replicas"), "{table}");
    }
}
