//! `ringup repair status`: per node, the hints it holds for other replicas,
//! how long ago its last anti-entropy pass ended, how many partitions no
//! comparison with every replica agreeing has covered yet, and its refill
//! after a wiped disk, from `GET /v1/cluster`.

use clap::{Args, Subcommand};
use serde_json::Value;

use super::{DEFAULT_ROUTER, table};

/// Arguments of `ringup repair`.
#[derive(Debug, Args)]
pub struct RepairArgs {
    /// What to show.
    #[command(subcommand)]
    pub command: RepairCommand,
}

/// The `repair` subcommands.
#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Hints pending, anti-entropy pass age and refills, per node.
    Status {
        /// The router's URL.
        #[arg(long, env = "RINGUP_ROUTER", default_value = DEFAULT_ROUTER)]
        router: String,
        /// Print the raw JSON of each node's healing instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `ringup repair`.
pub async fn run(args: RepairArgs) -> anyhow::Result<()> {
    let RepairCommand::Status { router, json } = args.command;
    let cluster = super::status::fetch(&router).await?;
    if json {
        let nodes: Vec<Value> = cluster["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| serde_json::json!({"id": n["id"], "healing": n["healing"], "refill": n["refill"]}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&nodes)?);
    } else {
        print!("{}", render(&cluster));
    }
    Ok(())
}

/// The healing of every node as a table.
pub fn render(cluster: &Value) -> String {
    let header = ["NODE", "LIVE", "HINTS PENDING", "PASSES", "LAST PASS AGO", "PASS", "UNCHECKED", "REFILL"];
    let mut out = table::plain(&header, &[3, 4, 5, 6]);
    for node in cluster["nodes"].as_array().into_iter().flatten().filter(|n| n["state"] != "removed") {
        let healing = &node["healing"];
        let ae = &healing["anti_entropy"];
        let hints = match healing["hints_pending_bytes"].as_object() {
            Some(held) if !held.is_empty() => held
                .iter()
                .map(|(n, b)| format!("{n}:{}", bytes(b.as_u64().unwrap_or(0))))
                .collect::<Vec<_>>()
                .join(" "),
            Some(_) => "none".into(),
            None => "?".into(),
        };
        let age = ae["last_pass_age_seconds"].as_f64().map_or("never".into(), |s| format!("{s:.1} s"));
        let pass = format!("{}/{}", ae["pass_partitions_done"], ae["pass_partitions_total"]);
        // Partitions no comparison with every replica agreeing has covered.
        let unchecked = format!("{}/{}", ae["partitions_unagreed"], ae["partitions_held"]);
        let refill = match &node["refill"] {
            Value::Null => "no".to_string(),
            r => format!(
                "{} of {} partitions left, {} copied",
                r["partitions_remaining"],
                r["partitions_total"],
                bytes(r["bytes"].as_u64().unwrap_or(0))
            ),
        };
        out.add_row(vec![
            node["id"].to_string(),
            if node["live"].as_bool() == Some(true) { "yes" } else { "no" }.to_string(),
            hints,
            ae["passes"].as_u64().map_or("?".into(), |p| p.to_string()),
            age,
            pass,
            unchecked,
            refill,
        ]);
    }
    table::render(&out)
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shows_hints_pass_age_and_refill_per_node() {
        let cluster = json!({"nodes": [
            {"id": 1, "state": "up", "live": true, "refill": null, "healing": {
                "hints_pending_bytes": {"3": 2048},
                "anti_entropy": {"passes": 4, "last_pass_age_seconds": 2.5, "partitions_unagreed": 2,
                    "partitions_held": 768, "pass_partitions_done": 10, "pass_partitions_total": 768}}},
            {"id": 3, "state": "up", "live": true, "healing": {
                "hints_pending_bytes": {},
                "anti_entropy": {"passes": 0, "last_pass_age_seconds": null,
                    "pass_partitions_done": 0, "pass_partitions_total": 0}},
             "refill": {"partitions_remaining": 5, "partitions_total": 768, "bytes": 3145728}},
            {"id": 4, "state": "removed", "live": false}
        ]});
        let table = render(&cluster);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "a header and the two members not removed:\n{table}");
        assert!(lines[0].contains("UNCHECKED") && lines[0].ends_with("REFILL"), "{}", lines[0]);
        assert!(lines[1].contains("3:2.0 KiB") && lines[1].contains("2.5 s") && lines[1].contains("10/768"));
        assert!(lines[1].contains("2/768"), "two partitions not yet checked with every replica agreeing");
        assert!(lines[2].contains("none") && lines[2].contains("never"));
        assert!(lines[2].contains("5 of 768 partitions left, 3.0 MiB copied"));
    }
}
