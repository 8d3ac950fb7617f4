//! The reports benchmark's data and timings (`scripts/bench-reports.sh`):
//! one seeded set of sales, written as CSV for PostgreSQL and DuckDB and
//! pushed to ringup over HTTP, and the report queries timed against ringup
//! and PostgreSQL.
//!
//! Shops get Zipf-like shares of the sales (shop k's share ∝ 1/(k+1)^0.9),
//! over 90 days from 2026-01-01.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use futures::StreamExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// 2026-01-01T00:00:00Z in epoch ms.
const START_MS: i64 = 1_767_225_600_000;
const DAYS: i64 = 90;
const REGIONS: [&str; 6] = ["eu-west", "eu-north", "us-east", "us-west", "apac", "latam"];
const STATUSES: [&str; 4] = ["paid", "paid", "refunded", "open"];

/// Arguments of `ringup-peers reports`.
#[derive(Debug, Args)]
pub struct ReportsArgs {
    #[command(subcommand)]
    command: ReportsCommand,
}

#[derive(Debug, Subcommand)]
enum ReportsCommand {
    /// Write the sales as CSV (with a header line).
    Csv {
        #[command(flatten)]
        data: DataArgs,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Push the sales to a ringup router, in NDJSON batches.
    Load {
        #[command(flatten)]
        data: DataArgs,
        /// The router's URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        router: String,
        /// Records per batch.
        #[arg(long, default_value_t = 2000)]
        batch: usize,
        /// Batches in flight.
        #[arg(long, default_value_t = 16)]
        clients: usize,
    },
    /// Time each query of a file (one per line) against ringup or
    /// PostgreSQL; print one JSON line per query with the median.
    Time {
        /// `ringup` or `postgres`.
        #[arg(long)]
        system: String,
        /// The router's URL, or PostgreSQL's connection string.
        #[arg(long)]
        url: String,
        /// The queries, one per line.
        #[arg(long)]
        queries: PathBuf,
        /// Runs per query (after one warm-up run).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

/// The data set's shape.
#[derive(Debug, Clone, Copy, Args)]
struct DataArgs {
    /// Sales in all.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Shops.
    #[arg(long, default_value_t = 300)]
    shops: usize,
    /// The seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// One sale.
struct Sale {
    shop: usize,
    id: u64,
    ts_ms: i64,
    amount: i64,
    qty: i64,
    sku: u32,
    region: &'static str,
    status: &'static str,
}

/// The sales, in order; the same for every sink.
fn sales(d: DataArgs) -> impl Iterator<Item = Sale> {
    let mut rng = SmallRng::seed_from_u64(d.seed);
    let weights: Vec<f64> = (0..d.shops).map(|k| 1.0 / ((k + 1) as f64).powf(0.9)).collect();
    let total: f64 = weights.iter().sum();
    let mut cumulative = Vec::with_capacity(d.shops);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cumulative.push(acc);
    }
    (0..d.rows).map(move |id| {
        let u: f64 = rng.random();
        let shop = cumulative.partition_point(|c| *c < u).min(cumulative.len() - 1);
        Sale {
            shop,
            id,
            ts_ms: START_MS + rng.random_range(0..DAYS * 86_400_000),
            amount: rng.random_range(100..50_000),
            qty: rng.random_range(1..10),
            sku: rng.random_range(0..5000),
            region: REGIONS[rng.random_range(0..REGIONS.len())],
            status: STATUSES[rng.random_range(0..STATUSES.len())],
        }
    })
}

fn shop_name(k: usize) -> String {
    format!("shop-{k:04}")
}

/// Runs `ringup-peers reports`.
pub async fn run(args: ReportsArgs) -> anyhow::Result<()> {
    match args.command {
        ReportsCommand::Csv { data, out } => csv(data, &out),
        ReportsCommand::Load { data, router, batch, clients } => load(data, &router, batch, clients).await,
        ReportsCommand::Time { system, url, queries, runs } => time(&system, &url, &queries, runs).await,
    }
}

fn csv(data: DataArgs, out: &PathBuf) -> anyhow::Result<()> {
    let file = std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut w = csv::WriterBuilder::new().buffer_capacity(1 << 20).from_writer(file);
    w.write_record(["shop", "id", "ts", "amount", "qty", "sku", "region", "status"])?;
    for s in sales(data) {
        let ts = format!("{:.3}", s.ts_ms as f64 / 1000.0);
        let (id, sku) = (format!("sale-{}", s.id), format!("SKU-{:04}", s.sku));
        let (amount, qty) = (s.amount.to_string(), s.qty.to_string());
        let shop = shop_name(s.shop);
        w.write_record([
            shop.as_str(),
            id.as_str(),
            ts.as_str(),
            amount.as_str(),
            qty.as_str(),
            sku.as_str(),
            s.region,
            s.status,
        ])?;
    }
    w.flush()?;
    Ok(())
}

async fn load(data: DataArgs, router: &str, batch: usize, clients: usize) -> anyhow::Result<()> {
    let http = authorized_client(None)?;
    let started = Instant::now();
    // Batches of one shop each, filled as sales come.
    let mut open: Vec<Vec<String>> = vec![Vec::new(); data.shops];
    let mut full = Vec::new();
    let mut sent = 0u64;
    let mut pending = futures::stream::FuturesUnordered::new();
    let send = |shop: usize, lines: Vec<String>| {
        let url = format!("{}/v1/shops/{}/sales?consistency=quorum", router.trim_end_matches('/'), shop_name(shop));
        let http = http.clone();
        async move {
            let n = lines.len() as u64;
            let body = lines.join("\n");
            for attempt in 0..5 {
                let answer =
                    http.post(&url).header("content-type", "application/x-ndjson").body(body.clone()).send().await;
                match answer {
                    Ok(r) if r.status().is_success() => return Ok(n),
                    Ok(r) if r.status().as_u16() == 503 && attempt < 4 => {
                        tokio::time::sleep(Duration::from_secs(1)).await
                    }
                    Ok(r) => {
                        anyhow::bail!("the router answered {}: {}", r.status(), r.text().await.unwrap_or_default())
                    }
                    Err(e) if attempt < 4 => {
                        eprintln!("retrying a batch: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            anyhow::bail!("a batch failed five times")
        }
    };
    for s in sales(data) {
        let line = json!({
            "id": format!("sale-{}", s.id), "ts": s.ts_ms, "amount": s.amount, "qty": s.qty,
            "sku": format!("SKU-{:04}", s.sku), "region": s.region, "status": s.status,
        })
        .to_string();
        let b = &mut open[s.shop];
        b.push(line);
        if b.len() >= batch {
            full.push((s.shop, std::mem::take(b)));
        }
        while let Some((shop, lines)) = full.pop() {
            while pending.len() >= clients {
                sent += pending.next().await.expect("a batch in flight")?;
                progress(sent, data.rows, started);
            }
            pending.push(send(shop, lines));
        }
    }
    for (shop, lines) in open.into_iter().enumerate().filter(|(_, b)| !b.is_empty()) {
        while pending.len() >= clients {
            sent += pending.next().await.expect("a batch in flight")?;
        }
        pending.push(send(shop, lines));
    }
    while let Some(n) = pending.next().await {
        sent += n?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("\nloaded {sent} sales in {secs:.1} s ({:.0} records/s)", sent as f64 / secs);
    Ok(())
}

fn progress(sent: u64, total: u64, started: Instant) {
    if sent % 200_000 < 2000 {
        eprint!("\r{sent} of {total} sales loaded ({:.0} s)", started.elapsed().as_secs_f64());
    }
}

async fn time(system: &str, url: &str, queries: &PathBuf, runs: usize) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(queries).with_context(|| format!("cannot read {}", queries.display()))?;
    let queries: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("--")).collect();
    let pg = if system == "postgres" {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client.batch_execute("SET TIME ZONE 'UTC'").await?;
        Some(client)
    } else {
        None
    };
    let http = authorized_client(Some(Duration::from_secs(600)))?;
    for (i, sql) in queries.iter().enumerate() {
        let (mut times, mut first) = (Vec::new(), 0.0);
        let mut rows = 0;
        for run in 0..=runs {
            let started = Instant::now();
            rows = match &pg {
                Some(client) => client
                    .simple_query(sql)
                    .await?
                    .iter()
                    .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
                    .count(),
                None => {
                    let r = http
                        .post(format!("{}/v1/query", url.trim_end_matches('/')))
                        .header("content-type", "text/plain")
                        .body(sql.to_string())
                        .send()
                        .await?;
                    let status = r.status();
                    let body: Value = r.json().await?;
                    anyhow::ensure!(status.is_success(), "{sql}: {status} {body}");
                    body["rows"].as_array().map_or(0, Vec::len)
                }
            };
            if run > 0 {
                times.push(started.elapsed().as_secs_f64());
            } else {
                first = started.elapsed().as_secs_f64();
            }
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!("{}", json!({"system": system, "query": i + 1, "median_s": median, "first_s": first, "rows": rows}));
    }
    Ok(())
}

/// An HTTP client sending the ringup token from the environment (see
/// [`ringup_bench::token_from_env`]), if one is set.
fn authorized_client(timeout: Option<Duration>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = ringup_bench::token_from_env()? {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
    }
    let builder = reqwest::Client::builder().default_headers(headers);
    Ok(match timeout {
        Some(t) => builder.timeout(t),
        None => builder,
    }
    .build()?)
}
