//! What a benchmark run measured: per operation, requests, records, bytes
//! and an HDR histogram of latencies; errors by kind; with `--rate`, the
//! rate asked and achieved. Rendered as a table (`comfy-table`) or as JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use comfy_table::{CellAlignment, Table, presets};
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

/// By how much a run may fall short of its `--rate` before the summary says
/// so: 5 percent.
pub const RATE_TOLERANCE: f64 = 0.05;

/// How far `achieved` falls short of `asked`, as a fraction, when by more
/// than [`RATE_TOLERANCE`].
pub fn rate_shortfall(asked: f64, achieved: f64) -> Option<f64> {
    let short = 1.0 - achieved / asked;
    (asked > 0.0 && short > RATE_TOLERANCE).then_some(short)
}

/// The whole run as JSON: `settings` as given, totals, per operation and
/// errors by kind. When `settings` has a `rate_asked`, `rate_achieved` is
/// the requests sent per second.
pub fn to_json(stats: &Stats, elapsed: Duration, settings: Value) -> Value {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let ops: serde_json::Map<String, Value> =
        stats.ops.iter().map(|(op, s)| (op.name().to_string(), op_json(s, secs))).collect();
    let records: u64 = stats.ops.values().map(|s| s.records).sum();
    let bytes: u64 = stats.ops.values().map(|s| s.bytes).sum();
    let requests_per_s = stats.requests() as f64 / secs;
    let rate_achieved = settings["rate_asked"].is_number().then_some(requests_per_s);
    json!({
        "settings": settings,
        "elapsed_s": secs,
        "requests": stats.requests(),
        "errors": stats.ops.values().map(|s| s.errors).sum::<u64>(),
        "records": records,
        "requests_per_s": requests_per_s,
        "rate_achieved": rate_achieved,
        "records_per_s": records as f64 / secs,
        "mb_per_s": bytes as f64 / secs / 1e6,
        "ops": ops,
        "errors_by_kind": stats.errors,
    })
}

/// One operation's part of the summary, over `secs` seconds.
fn op_json(s: &OpStats, secs: f64) -> Value {
    json!({
        "requests": s.ok + s.errors,
        "errors": s.errors,
        "records": s.records,
        "bytes": s.bytes,
        "requests_per_s": (s.ok + s.errors) as f64 / secs,
        "records_per_s": s.records as f64 / secs,
        "latency_ms": percentiles(&s.latency),
    })
}

/// A borderless table with `header`: the first column left-aligned, the
/// others (numbers) right-aligned, two spaces between columns. Shared with
/// `ringup-peers`.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING).set_header(header.to_vec());
    for (i, column) in table.column_iter_mut().enumerate() {
        if i == 0 {
            column.set_padding((0, 0));
        } else {
            column.set_padding((2, 0));
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// A number of milliseconds in a table.
fn ms_cell(v: &Value) -> String {
    format!("{:.2}", v.as_f64().unwrap_or_default())
}

/// A rate in a table.
fn rate_cell(v: &Value) -> String {
    format!("{:.0}", v.as_f64().unwrap_or_default())
}

/// The run as text, from its JSON form: a headline, a table of the
/// operations, the rate asked and achieved, and errors by kind.
pub fn render(report: &Value) -> String {
    let mut out = headline(report);
    out.push_str(&ops_table(report).to_string());
    out.push('\n');
    out.push_str(&rate_line(report));
    out.push_str(&errors_by_kind(report));
    out
}

fn headline(report: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or_default();
    let n = |v: &Value| v.as_u64().unwrap_or_default();
    let target = report["settings"]["target"].as_str().unwrap_or("target");
    format!(
        "{target}: ran {:.1} s: {} requests ({:.0}/s), {} records ({:.0}/s, {:.1} MB/s), {} errors\n",
        f(&report["elapsed_s"]),
        n(&report["requests"]),
        f(&report["requests_per_s"]),
        n(&report["records"]),
        f(&report["records_per_s"]),
        f(&report["mb_per_s"]),
        n(&report["errors"]),
    )
}

fn ops_table(report: &Value) -> Table {
    let mut table =
        table(&["op", "requests", "req/s", "records/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors"]);
    for op in Op::ALL {
        let s = &report["ops"][op.name()];
        if s.is_null() {
            continue;
        }
        let l = &s["latency_ms"];
        table.add_row(vec![
            op.name().to_string(),
            s["requests"].to_string(),
            rate_cell(&s["requests_per_s"]),
            rate_cell(&s["records_per_s"]),
            ms_cell(&l["p50"]),
            ms_cell(&l["p90"]),
            ms_cell(&l["p99"]),
            ms_cell(&l["p99.9"]),
            ms_cell(&l["max"]),
            s["errors"].to_string(),
        ]);
    }
    table
}

/// With `--rate`: the rate asked and achieved, and a warning when the
/// achieved one fell short.
fn rate_line(report: &Value) -> String {
    let (Some(asked), Some(achieved)) = (report["settings"]["rate_asked"].as_f64(), report["rate_achieved"].as_f64())
    else {
        return String::new();
    };
    let mut line = format!("rate: asked {asked:.0} requests/s, achieved {achieved:.0}/s");
    if let Some(short) = rate_shortfall(asked, achieved) {
        line.push_str(&format!(
            " -- {:.0}% short: the target or the {} clients could not keep up",
            short * 100.0,
            report["settings"]["concurrency"]
        ));
    }
    line + "\n"
}

fn errors_by_kind(report: &Value) -> String {
    let errors = report["errors_by_kind"].as_object().cloned().unwrap_or_default();
    if errors.is_empty() {
        return "errors by kind: none\n".to_string();
    }
    let mut out = "errors by kind:\n".to_string();
    for (kind, n) in errors {
        out.push_str(&format!("  {n:>8}  {kind}\n"));
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
        assert!(report["rate_achieved"].is_null() && !table.contains("rate:"), "no --rate, no rate: {table}");
    }

    /// Where `word` ends in `line`, to check that columns line up.
    fn end_of(line: &str, word: &str) -> usize {
        line.find(word).unwrap_or_else(|| panic!("{word:?} is not in {line:?}")) + word.len()
    }

    #[test]
    fn the_table_has_a_row_per_operation_with_numbers_under_their_headers() {
        let mut stats = Stats::default();
        stats.record(Op::Write, Duration::from_millis(3), Ok((50, 12_800)));
        stats.record(Op::Get, Duration::from_micros(1500), Ok((1, 256)));
        stats.record(Op::Get, Duration::from_micros(1500), Err("timeout".into()));
        let text = render(&to_json(&stats, Duration::from_secs(1), json!({ "target": "memory" })));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("memory: ran 1.0 s: 3 requests (3/s), 51 records"), "{text}");
        let (header, write, get) = (lines[1], lines[2], lines[3]);
        assert!(header.starts_with("op ") && header.ends_with("errors"), "{text}");
        assert!(write.starts_with("write ") && get.starts_with("get "), "{text}");
        assert_eq!(end_of(write, " 50 "), end_of(header, " records/s") + 1, "records/s lines up: {text}");
        assert_eq!(end_of(get, "1.50"), end_of(header, "p50 ms"), "p50 lines up: {text}");
        assert_eq!(get.len(), header.len(), "errors line up at the end: {text}");
        assert!(get.ends_with(" 1"), "{text}");
        assert_eq!(lines[4], "errors by kind:", "{text}");
        assert_eq!(lines[5].split_whitespace().collect::<Vec<_>>(), ["1", "timeout"], "{text}");
    }

    #[test]
    fn a_paced_run_reports_the_rate_it_achieved_and_says_when_it_fell_short() {
        let mut stats = Stats::default();
        for _ in 0..90 {
            stats.record(Op::Get, Duration::from_millis(1), Ok((1, 100)));
        }
        let on_time = to_json(&stats, Duration::from_secs(1), json!({ "rate_asked": 92.0, "concurrency": 4 }));
        assert_eq!(on_time["rate_achieved"], 90.0);
        let text = render(&on_time);
        assert!(text.contains("rate: asked 92 requests/s, achieved 90/s\n"), "{text}");
        let late = to_json(&stats, Duration::from_secs(1), json!({ "rate_asked": 100.0, "concurrency": 4 }));
        let text = render(&late);
        assert!(text.contains("achieved 90/s -- 10% short: the target or the 4 clients could not keep up"), "{text}");
    }

    #[test]
    fn a_shortfall_counts_only_beyond_the_tolerance() {
        assert_eq!(rate_shortfall(1000.0, 1000.0), None);
        assert_eq!(rate_shortfall(1000.0, 1200.0), None, "faster is not short");
        assert_eq!(rate_shortfall(1000.0, 960.0), None, "4% is within the tolerance");
        let short = rate_shortfall(1000.0, 800.0).expect("20% short");
        assert!((short - 0.2).abs() < 1e-9, "{short}");
    }
}
