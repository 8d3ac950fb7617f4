//! `ringup query "SELECT …"`: runs a report through the router and prints
//! it as an aligned table (as psql does), or as CSV with `--csv`.

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use super::{DEFAULT_ROUTER, table};

/// Arguments of `ringup query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The SQL: one SELECT over a collection.
    pub sql: String,
    /// The router's URL.
    #[arg(long, env = "RINGUP_ROUTER", default_value = DEFAULT_ROUTER)]
    pub router: String,
    /// Print CSV instead of a table.
    #[arg(long)]
    pub csv: bool,
    /// `one` (each partition from one replica) or `quorum` (every write
    /// acknowledged at QUORUM is included).
    #[arg(long, default_value = "one")]
    pub consistency: String,
}

/// Runs `ringup query`.
pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let url = format!("{}/v1/query?consistency={}", args.router.trim_end_matches('/'), args.consistency);
    let accept = if args.csv { "text/csv" } else { "application/json" };
    let response = super::token::http(None)?
        .post(&url)
        .header(reqwest::header::ACCEPT, accept)
        .json(&serde_json::json!({ "sql": args.sql }))
        .send()
        .await
        .with_context(|| format!("cannot reach the router at {}", args.router))?;
    let status = response.status();
    let text = response.text().await.context("cannot read the router's answer")?;
    if status == reqwest::StatusCode::UNAUTHORIZED {
        anyhow::bail!(
            "the router answered {status}: set RINGUP_TOKEN (or RINGUP_TOKEN_FILE) to an analyst or admin token"
        );
    }
    if !status.is_success() {
        let body: Value = serde_json::from_str(&text).unwrap_or_default();
        anyhow::bail!("the router answered {status}: {}", body["error"]["message"].as_str().unwrap_or(&text));
    }
    if args.csv {
        print!("{text}");
        return Ok(());
    }
    let body: Value = serde_json::from_str(&text).context("the router's answer is not JSON")?;
    print!("{}", render(&body));
    Ok(())
}

/// A result as an aligned table: names, a rule, the rows, and a count.
/// Numbers align right, everything else left; NULL is empty.
pub fn render(body: &Value) -> String {
    let columns: Vec<String> =
        body["columns"].as_array().into_iter().flatten().map(|c| c.as_str().unwrap_or("").to_string()).collect();
    let rows: Vec<Vec<(String, bool)>> = body["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            row.as_array()
                .into_iter()
                .flatten()
                .map(|cell| match cell {
                    Value::Null => (String::new(), false),
                    Value::String(s) => (s.clone(), false),
                    Value::Number(n) => (n.to_string(), true),
                    other => (other.to_string(), false),
                })
                .collect()
        })
        .collect();
    let mut table = table::psql(&columns);
    for row in &rows {
        table.add_row(row.iter().map(|(text, number)| table::cell(text, *number)));
    }
    let mut out = table::render(&table);
    out.push_str(&format!("({} row{})\n", rows.len(), if rows.len() == 1 { "" } else { "s" }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_prints_as_an_aligned_table() {
        let body = serde_json::json!({"columns": ["region", "total"], "rows": [["eu", 1250], [null, 7.5]]});
        let expected = " region | total\n--------+-------\n eu     |  1250\n        |   7.5\n(2 rows)\n";
        assert_eq!(render(&body), expected);
    }
}
