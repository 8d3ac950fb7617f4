//! `ringup status`: the cluster map as a table.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use super::{DEFAULT_ROUTER, table};

/// Arguments of `ringup status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The router's URL.
    #[arg(long, env = "RINGUP_ROUTER", default_value = DEFAULT_ROUTER)]
    pub router: String,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints the status.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let cluster = fetch(&args.router).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&cluster)?);
    } else {
        print!("{}", render(&cluster));
    }
    Ok(())
}

/// `GET /v1/cluster` from the router, with the token from the environment.
pub async fn fetch(router: &str) -> anyhow::Result<Value> {
    fetch_with(&super::token::http(None)?, router).await
}

/// `GET /v1/cluster` from the router through `http`.
pub async fn fetch_with(http: &reqwest::Client, router: &str) -> anyhow::Result<Value> {
    let url = format!("{}/v1/cluster", router.trim_end_matches('/'));
    let response = http.get(&url).send().await.with_context(|| format!("cannot reach the router at {router}"))?;
    super::token::answer(response).await
}

/// The cluster as a table.
pub fn render(cluster: &Value) -> String {
    let mut out = format!(
        "cluster epoch {}, {} partitions, replication factor {}\n",
        cluster["epoch"], cluster["partitions"], cluster["replication_factor"]
    );
    let mut nodes = table::plain(&["NODE", "ADDRESS", "STATE", "LIVE", "PARTITION-REPLICAS"], &[4]);
    for node in cluster["nodes"].as_array().into_iter().flatten() {
        nodes.add_row(vec![
            node["id"].to_string(),
            node["addr"].as_str().unwrap_or("?").to_string(),
            node["state"].as_str().unwrap_or("?").to_string(),
            if node["live"].as_bool() == Some(true) { "yes" } else { "no" }.to_string(),
            node["partition_replicas"].to_string(),
        ]);
    }
    out.push_str(&table::render(&nodes));
    let migrations = cluster["migrations"].as_array().map_or(0, Vec::len);
    out.push_str(&format!("migrations in flight: {migrations}\n"));
    let summary = &cluster["migration_summary"];
    if !summary.is_null() {
        let elapsed = Duration::from_secs_f64(summary["elapsed_seconds"].as_f64().unwrap_or(0.0));
        out.push_str(&format!("change in flight: {}\n", plain_line(summary, elapsed).trim_start()));
    }
    let shown = 10;
    for m in cluster["migrations"].as_array().into_iter().flatten().take(shown) {
        out.push_str(&format!(
            "  partition {:<5} {:<20} {} -> {}  {} records\n",
            m["partition"].to_string(),
            m["stage"].as_str().unwrap_or("?"),
            m["from"],
            m["to"],
            m["records"]
        ));
    }
    if migrations > shown {
        out.push_str(&format!("  … and {} more\n", migrations - shown));
    }
    out
}

/// One progress line for logs.
pub fn plain_line(summary: &Value, elapsed: Duration) -> String {
    let done = summary["partitions_done"].as_u64().unwrap_or(0);
    let remaining = summary["partitions_remaining"].as_u64().unwrap_or(0);
    let eta = summary["eta_seconds"].as_u64().map_or("?".to_string(), |s| format!("{s}s"));
    format!(
        "{:>6.1}s  partitions {done}/{}  {} moved  {}/s  eta {eta}",
        elapsed.as_secs_f64(),
        done + remaining,
        human_bytes(summary["bytes_moved"].as_u64().unwrap_or(0)),
        human_bytes(summary["bytes_per_second"].as_u64().unwrap_or(0)),
    )
}

fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_one_row_per_node() {
        let cluster = json!({"epoch": 1, "partitions": 1024, "replication_factor": 3, "migrations": [],
            "nodes": [{"id": 1, "addr": "127.0.0.1:7101", "state": "up", "live": true, "partition_replicas": 1024}]});
        let expected = "cluster epoch 1, 1024 partitions, replication factor 3\n\
                        NODE  ADDRESS         STATE  LIVE  PARTITION-REPLICAS\n\
                        1     127.0.0.1:7101  up     yes                 1024\n\
                        migrations in flight: 0\n";
        assert_eq!(render(&cluster), expected);
    }

    #[test]
    fn a_plain_line_shows_partitions_bytes_rate_and_eta() {
        let summary = json!({"partitions_done": 10, "partitions_remaining": 246, "bytes_moved": 10 << 20,
            "bytes_per_second": 2 << 20, "eta_seconds": 123});
        let line = plain_line(&summary, Duration::from_secs(5));
        assert_eq!(line, "   5.0s  partitions 10/256  10.00 MiB moved  2.00 MiB/s  eta 123s");
    }
}
