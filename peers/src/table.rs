//! The side-by-side table: one row per run summary (`--json` of `ringup
//! bench` or `ringup-peers`), for one operation, each run's rate also as a
//! ratio to the first run's.

use std::path::PathBuf;

use anyhow::{Context, bail};
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
        Some("ringup") => format!("ringup, router, {}", s("consistency")),
        Some("redis-cluster") => format!("redis cluster, WAIT {}", s("wait_replicas")),
        Some("postgresql") => "postgresql".to_string(),
        Some("rocksdb") => format!("rocksdb ceiling, {} of {}", s("quorum"), s("replicas")),
        Some(other) => other.to_string(),
        None => "unnamed run".to_string(),
    }
}

/// The table for `op` (`write` or `get`); the first summary is the baseline.
pub fn render(title: &str, op: &str, summaries: &[Value]) -> anyhow::Result<String> {
    let Some(baseline) = summaries.first() else { bail!("no summaries to compare") };
    let rate = |summary: &Value| summary["ops"][op]["records_per_s"].as_f64().unwrap_or_default();
    let base = rate(baseline);
    let mut out = String::new();
    if !title.is_empty() {
        out.push_str(&format!("{title}\n"));
    }
    let vs = format!("vs {}", baseline["settings"]["target"].as_str().unwrap_or("first"));
    out.push_str(&format!(
        "{:<28} {:>12} {:>9} {:>9} {:>10} {:>8} {:>10}\n",
        "system", "records/s", "p50 ms", "p99 ms", "requests", "errors", vs
    ));
    for summary in summaries {
        let stats = &summary["ops"][op];
        if stats.is_null() {
            bail!("{} made no {op} requests", label(&summary["settings"]));
        }
        let latency = &stats["latency_ms"];
        let ratio = if base > 0.0 { format!("{:.2}x", rate(summary) / base) } else { "-".to_string() };
        out.push_str(&format!(
            "{:<28} {:>12.0} {:>9.2} {:>9.2} {:>10} {:>8} {:>10}\n",
            label(&summary["settings"]),
            rate(summary),
            latency["p50"].as_f64().unwrap_or_default(),
            latency["p99"].as_f64().unwrap_or_default(),
            stats["requests"].as_u64().unwrap_or_default(),
            stats["errors"].as_u64().unwrap_or_default(),
            ratio
        ));
    }
    Ok(out)
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
                "latency_ms": { "p50": 1.5, "p99": p99 },
            } },
        })
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
        assert!(lines[1].ends_with("vs ringup"), "{table}");
        assert!(lines[2].starts_with("ringup, router, quorum") && lines[2].ends_with("1.00x"), "{table}");
        assert!(lines[3].starts_with("redis cluster, WAIT 1") && lines[3].ends_with("2.50x"), "{table}");
        assert!(lines[3].contains(" 2500 ") && lines[3].contains(" 4.00 "), "{table}");
        assert!(lines[3].contains("        10        0 "), "requests and errors line up: {table}");
    }

    #[test]
    fn a_run_without_the_operation_is_refused() {
        let runs = [summary(json!({ "target": "ringup", "consistency": "quorum" }), 1.0, 1.0)];
        assert!(render("", "get", &runs).is_err());
    }
}
