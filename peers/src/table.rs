//! The side-by-side tables of several run summaries (`--json` of `ringup
//! bench` or `ringup-peers`), one row per run, for one operation:
//!
//! - throughput ([`render`]): records/s, p50, p99, requests and errors, and
//!   each run's rate as a ratio to the first run's;
//! - latency ([`render_latency`]), for runs at a fixed `--rate`: the rate
//!   asked and achieved, p50, p99, p99.9 and errors.

use std::fmt::Display;
use std::path::PathBuf;

use anyhow::{Context, bail};
use ringup_bench::report;
use serde_json::Value;

/// Reads summaries from files.
pub fn read(paths: &[PathBuf]) -> anyhow::Result<Vec<Value>> {
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{} is not a JSON summary", path.display()))
        })
        .collect()
}

/// A run's name in the table, from its settings.
fn label(settings: &Value) -> String {
    let s = |key: &str| settings[key].to_string().trim_matches('"').to_string();
    match settings["target"].as_str() {
        Some("ringup") => {
            let note = settings["note"].as_str().map(|n| format!(" ({n})")).unwrap_or_default();
            format!("ringup{note}, router, {}", s("consistency"))
        }
        Some("redis-cluster") => format!("redis cluster, WAIT {}", s("wait_replicas")),
        Some("postgresql") => "postgresql".to_string(),
        Some("rocksdb") => format!("rocksdb ceiling, {} of {}", s("quorum"), s("replicas")),
        Some(other) => other.to_string(),
        None => "unnamed run".to_string(),
    }
}

/// The stats of `op` in `summary`, or why there are none.
fn op_stats<'a>(summary: &'a Value, op: &str) -> anyhow::Result<&'a Value> {
    let stats = &summary["ops"][op];
    if stats.is_null() {
        bail!("{} made no {op} requests", label(&summary["settings"]));
    }
    Ok(stats)
}

fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or_default()
}

fn ms(v: &Value) -> String {
    format!("{:.2}", number(v))
}

/// A table under `title`, if there is one.
fn titled(title: &str, table: &impl Display) -> String {
    let title = if title.is_empty() { String::new() } else { format!("{title}\n") };
    format!("{title}{table}\n")
}

/// The throughput table for `op` (`write` or `get`); the first summary is
/// the baseline.
pub fn render(title: &str, op: &str, summaries: &[Value]) -> anyhow::Result<String> {
    let Some(baseline) = summaries.first() else { bail!("no summaries to compare") };
    let rate = |summary: &Value| number(&summary["ops"][op]["records_per_s"]);
    let base = rate(baseline);
    let vs = format!("vs {}", baseline["settings"]["target"].as_str().unwrap_or("first"));
    let mut table = report::table(&["system", "records/s", "p50 ms", "p99 ms", "requests", "errors", &vs]);
    for summary in summaries {
        let stats = op_stats(summary, op)?;
        let ratio = if base > 0.0 { format!("{:.2}x", rate(summary) / base) } else { "-".to_string() };
        table.add_row(vec![
            label(&summary["settings"]),
            format!("{:.0}", rate(summary)),
            ms(&stats["latency_ms"]["p50"]),
            ms(&stats["latency_ms"]["p99"]),
            stats["requests"].to_string(),
            stats["errors"].to_string(),
            ratio,
        ]);
    }
    Ok(titled(title, &table))
}

/// The rate a paced run achieved, marked when it fell short of the asked.
fn achieved(asked: f64, achieved: f64) -> String {
    match report::rate_shortfall(asked, achieved) {
        Some(short) => format!("{achieved:.0} ({:.0}% short)", short * 100.0),
        None => format!("{achieved:.0}"),
    }
}

/// The latency table for `op` of runs at a fixed `--rate`; a run without
/// one is refused.
pub fn render_latency(title: &str, op: &str, summaries: &[Value]) -> anyhow::Result<String> {
    if summaries.is_empty() {
        bail!("no summaries to compare");
    }
    let header = ["system", "rate asked/s", "achieved/s", "p50 ms", "p99 ms", "p99.9 ms", "errors"];
    let mut table = report::table(&header);
    for summary in summaries {
        let stats = op_stats(summary, op)?;
        let Some(asked) = summary["settings"]["rate_asked"].as_f64() else {
            bail!("{} ran without --rate: no latency at a fixed rate", label(&summary["settings"]));
        };
        let latency = &stats["latency_ms"];
        table.add_row(vec![
            label(&summary["settings"]),
            format!("{asked:.0}"),
            achieved(asked, number(&summary["rate_achieved"])),
            ms(&latency["p50"]),
            ms(&latency["p99"]),
            ms(&latency["p99.9"]),
            stats["errors"].to_string(),
        ]);
    }
    Ok(titled(title, &table))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn summary(settings: Value, records_per_s: f64, p99: f64) -> Value {
        json!({
            "settings": settings,
            "ops": { "write": {
                "records_per_s": records_per_s, "requests": 10, "errors": 0,
                "latency_ms": { "p50": 1.5, "p99": p99, "p99.9": 2.0 * p99 },
            } },
        })
    }

    fn paced(settings: Value, asked: f64, achieved: f64) -> Value {
        let mut run = summary(settings, 0.0, 3.25);
        run["settings"]["rate_asked"] = json!(asked);
        run["rate_achieved"] = json!(achieved);
        run
    }

    /// Where `word` ends in `line`, to check that columns line up.
    fn end_of(line: &str, word: &str) -> usize {
        line.find(word).unwrap_or_else(|| panic!("{word:?} is not in {line:?}")) + word.len()
    }

    #[test]
    fn rows_compare_with_the_first_run() {
        let runs = [
            summary(json!({ "target": "ringup", "consistency": "quorum" }), 1000.0, 9.0),
            summary(json!({ "target": "redis-cluster", "wait_replicas": 1 }), 2500.0, 4.0),
        ];
        let table = render("writes", "write", &runs).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "writes");
        assert!(lines[1].starts_with("system ") && lines[1].ends_with("vs ringup"), "{table}");
        assert!(lines[2].starts_with("ringup, router, quorum") && lines[2].ends_with("1.00x"), "{table}");
        assert!(lines[3].starts_with("redis cluster, WAIT 1") && lines[3].ends_with("2.50x"), "{table}");
        assert!(lines[3].contains(" 2500 ") && lines[3].contains(" 4.00 "), "{table}");
        assert_eq!(end_of(lines[3], " 2500"), end_of(lines[1], "records/s"), "rates line up: {table}");
        assert_eq!(end_of(lines[3], " 10"), end_of(lines[1], "requests"), "requests line up: {table}");
        assert_eq!(end_of(lines[3], " 0 "), end_of(lines[1], "errors") + 1, "errors line up: {table}");
        assert_eq!(lines.len(), 4, "{table}");
    }

    #[test]
    fn a_run_without_the_operation_is_refused() {
        let runs = [summary(json!({ "target": "ringup", "consistency": "quorum" }), 1.0, 1.0)];
        assert!(render("", "get", &runs).is_err());
        assert!(render_latency("", "get", &runs).is_err());
        assert!(render("", "write", &[]).is_err(), "nothing to compare");
    }

    #[test]
    fn the_latency_table_shows_the_rates_and_the_tail() {
        let runs = [
            paced(json!({ "target": "ringup", "consistency": "quorum" }), 5000.0, 4990.0),
            paced(json!({ "target": "postgresql" }), 2000.0, 1500.0),
        ];
        let table = render_latency("latency", "write", &runs).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "latency");
        let header = lines[1];
        assert!(header.starts_with("system ") && header.ends_with("errors"), "{table}");
        let cells = |line: &str| line.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert!(lines[2].starts_with("ringup, router, quorum "), "{table}");
        assert_eq!(cells(lines[2])[3..], ["5000", "4990", "1.50", "3.25", "6.50", "0"], "{table}");
        assert!(lines[3].starts_with("postgresql "), "{table}");
        assert_eq!(cells(lines[3])[1..4], ["2000", "1500", "(25%"], "marked short: {table}");
        assert_eq!(end_of(lines[2], "6.50"), end_of(header, "p99.9 ms"), "p99.9 lines up: {table}");
        assert_eq!(end_of(lines[3], "(25% short)"), end_of(header, "achieved/s"), "achieved lines up: {table}");
        assert_eq!(lines.len(), 4, "one row per run: {table}");
    }

    #[test]
    fn a_run_without_a_rate_has_no_place_in_the_latency_table() {
        let runs = [summary(json!({ "target": "rocksdb", "quorum": 2, "replicas": 3 }), 1.0, 1.0)];
        let refused = render_latency("", "write", &runs).unwrap_err().to_string();
        assert!(refused.contains("rocksdb ceiling, 2 of 3 ran without --rate"), "{refused}");
    }
}
