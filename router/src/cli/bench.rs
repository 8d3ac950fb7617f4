//! `ringup bench`: the load generator ([`ringup_bench`]) pointed at a
//! running cluster through its router.
//!
//! Writes are `POST /v1/shops/{shop}/sales` of a JSON array, GETs and list
//! pages use the record routes, every request at `--consistency`. All
//! clients share one HTTP connection pool, one connection per client.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ringup_bench::workload::Sale;
use ringup_bench::{Client, LoadArgs, Target};
use ringup_proto::consistency::Consistency;
use serde_json::{Value, json};

use super::DEFAULT_ROUTER;

/// Arguments of `ringup bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The router's URL.
    #[arg(long, env = "RINGUP_ROUTER", default_value = DEFAULT_ROUTER)]
    pub router: String,
    /// The consistency level of every request: one, quorum or all.
    #[arg(long, default_value = "quorum")]
    pub consistency: String,
    /// How long one request may take, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// The load.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// Runs the benchmark and prints its summary.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let consistency: Consistency = args.consistency.parse().map_err(|e| anyhow::anyhow!("--consistency: {e}"))?;
    args.load.check()?;
    let router = args.router.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms))
        .pool_max_idle_per_host(args.load.concurrency)
        .build()?;
    super::health::router(&router, Duration::from_secs(5)).await.context("the router is not ready")?;
    let target = Ringup { http, router, consistency: consistency.to_string() };
    ringup_bench::run(&args.load, target).await?;
    Ok(())
}

/// A cluster, through its router.
#[derive(Clone)]
struct Ringup {
    http: reqwest::Client,
    router: String,
    consistency: String,
}

impl Target for Ringup {
    type Client = Ringup;

    fn describe(&self) -> Value {
        json!({ "target": "ringup", "router": self.router, "consistency": self.consistency })
    }

    fn lists(&self) -> bool {
        true
    }

    async fn connect(&self) -> anyhow::Result<Ringup> {
        Ok(self.clone())
    }
}

impl Ringup {
    fn url(&self, shop: &str, rest: &str) -> String {
        format!("{}/v1/shops/{shop}/sales{rest}", self.router)
    }
}

impl Client for Ringup {
    async fn write(&mut self, shop: &str, sales: &[Sale]) -> Result<u64, String> {
        let body = serde_json::to_vec(&sales.iter().map(Sale::to_json).collect::<Vec<_>>()).expect("JSON");
        let bytes = body.len() as u64;
        let url = self.url(shop, &format!("?consistency={}", self.consistency));
        let answer = send(self.http.post(url).header("content-type", "application/json").body(body)).await?;
        let written = answer["written"].as_u64().unwrap_or_default();
        if written != sales.len() as u64 {
            return Err(format!("wrote {written} of {} records", sales.len()));
        }
        Ok(bytes)
    }

    async fn get(&mut self, shop: &str, id: &str) -> Result<u64, String> {
        let url = self.url(shop, &format!("/{id}?consistency={}", self.consistency));
        let record = send(self.http.get(url)).await?;
        if record["id"] != id {
            return Err("get answered another record".into());
        }
        Ok(record.to_string().len() as u64)
    }

    async fn list(&mut self, shop: &str, limit: usize) -> Result<(u64, u64), String> {
        let url = self.url(shop, &format!("?limit={limit}&consistency={}", self.consistency));
        let page = send(self.http.get(url)).await?;
        let records = page["records"].as_array().map_or(0, Vec::len) as u64;
        Ok((records, page["records"].to_string().len() as u64))
    }
}

/// Sends a request; the JSON answer, or the kind of failure.
async fn send(request: reqwest::RequestBuilder) -> Result<Value, String> {
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            "timeout".to_string()
        } else if e.is_connect() {
            "cannot connect".to_string()
        } else {
            format!("transport: {e}")
        }
    })?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| format!("{status} unreadable body: {e}"))?;
    if !status.is_success() {
        return Err(format!("{} {}", status.as_u16(), body["error"]["code"].as_str().unwrap_or("no error code")));
    }
    Ok(body)
}
