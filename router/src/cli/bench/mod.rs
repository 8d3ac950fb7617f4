//! `ringup bench`: a load generator for a running cluster, in the spirit of
//! cassandra-stress and redis-benchmark.
//!
//! Clients (`--concurrency`) each send one request at a time through the
//! router: batch writes of sales from `--shops` shops, and, as `--gets` and
//! `--lists` ask, GETs of records the client wrote and list pages. Each
//! client's records and choices come from `--seed`, and with `--requests`
//! every client has a fixed share, so a run can be repeated exactly. A
//! progress line comes every second; the summary gives throughput, HDR
//! latency percentiles and errors by kind, as a table or `--json`.

mod report;
pub mod workload;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use ringup_proto::consistency::Consistency;
use serde_json::{Value, json};

use self::report::{Op, Stats};
use self::workload::{Stream, Workload};
use super::DEFAULT_ROUTER;

/// Arguments of `ringup bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The router's URL.
    #[arg(long, env = "RINGUP_ROUTER", default_value = DEFAULT_ROUTER)]
    pub router: String,
    /// Shops the records are spread over.
    #[arg(long, default_value_t = 1000)]
    pub shops: usize,
    /// Records per batch write.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// About how many bytes each record takes as JSON.
    #[arg(long, default_value_t = 256)]
    pub record_size: usize,
    /// Clients sending requests at once, each one at a time.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// How long to run, in seconds (ignored with --requests).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Send exactly this many requests, split evenly over the clients.
    #[arg(long)]
    pub requests: Option<u64>,
    /// The consistency level of every request: one, quorum or all.
    #[arg(long, default_value = "quorum")]
    pub consistency: String,
    /// Percent of requests that GET one record the client wrote earlier.
    #[arg(long, default_value_t = 0)]
    pub gets: u8,
    /// Percent of requests that read a page of 100 records of a shop.
    #[arg(long, default_value_t = 0)]
    pub lists: u8,
    /// The seed of every client's records and choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long one request may take, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Print the summary as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

impl BenchArgs {
    fn check(&self) -> anyhow::Result<()> {
        if self.shops == 0 || self.batch == 0 || self.concurrency == 0 {
            bail!("--shops, --batch and --concurrency must be at least 1");
        }
        if u16::from(self.gets) + u16::from(self.lists) > 100 {
            bail!("--gets and --lists add up to more than 100 percent");
        }
        if self.requests.is_none() && (!self.duration.is_finite() || self.duration <= 0.0) {
            bail!("--duration must be above 0 seconds");
        }
        self.consistency.parse::<Consistency>().map_err(|e| anyhow::anyhow!("--consistency: {e}"))?;
        Ok(())
    }

    fn workload(&self) -> Workload {
        Workload { shops: self.shops, batch: self.batch, record_size: self.record_size, seed: self.seed }
    }

    fn settings(&self) -> Value {
        json!({
            "router": self.router,
            "shops": self.shops,
            "batch": self.batch,
            "record_size": self.record_size,
            "concurrency": self.concurrency,
            "duration_s": self.requests.is_none().then_some(self.duration),
            "requests": self.requests,
            "consistency": self.consistency,
            "gets_percent": self.gets,
            "lists_percent": self.lists,
            "seed": self.seed,
        })
    }
}

/// Counters the progress line reads while clients run.
#[derive(Default)]
struct Progress {
    requests: AtomicU64,
    records: AtomicU64,
    errors: AtomicU64,
}

/// Runs the benchmark and prints its summary.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    args.check()?;
    let router = args.router.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms))
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    super::health::router(&router, Duration::from_secs(5)).await.context("the router is not ready")?;
    if !args.quiet {
        eprintln!(
            "ringup bench: {} shops, batches of {} records of ~{} B, {} clients, {}, {}% writes {}% gets {}% lists, seed {}",
            args.shops,
            args.batch,
            args.record_size,
            args.concurrency,
            args.consistency,
            100 - args.gets - args.lists,
            args.gets,
            args.lists,
            args.seed
        );
    }
    let progress = Arc::new(Progress::default());
    let done = Arc::new(AtomicBool::new(false));
    let deadline = args.requests.is_none().then(|| Instant::now() + Duration::from_secs_f64(args.duration));
    let started = Instant::now();
    let clients: Vec<_> = (0..args.concurrency)
        .map(|c| {
            let quota = args
                .requests
                .map(|n| n / args.concurrency as u64 + u64::from((c as u64) < n % args.concurrency as u64));
            let client = Client {
                http: http.clone(),
                router: router.clone(),
                args: args.clone(),
                stream: Stream::new(args.workload(), c),
                written: Vec::new(),
                progress: progress.clone(),
            };
            tokio::spawn(client.run(quota, deadline, done.clone()))
        })
        .collect();
    let ticker = (!args.quiet).then(|| tokio::spawn(show_progress(progress.clone(), started, done.clone())));
    let mut stats = Stats::default();
    for client in clients {
        stats.merge(&client.await.context("a client panicked")?);
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    if let Some(ticker) = ticker {
        let _ = ticker.await;
    }
    let summary = report::to_json(&stats, elapsed, args.settings());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", report::render(&summary));
    }
    Ok(())
}

/// One line a second: requests, records and errors so far, and the rates
/// over the last second. Overwrites itself on a terminal.
async fn show_progress(progress: Arc<Progress>, started: Instant, done: Arc<AtomicBool>) {
    let tty = std::io::stderr().is_terminal();
    let (mut last_requests, mut last_records) = (0, 0);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        if done.load(Ordering::Relaxed) {
            break;
        }
        let requests = progress.requests.load(Ordering::Relaxed);
        let records = progress.records.load(Ordering::Relaxed);
        let line = format!(
            "{:>6.1}s  {requests} requests ({}/s)  {records} records ({}/s)  {} errors",
            started.elapsed().as_secs_f64(),
            requests - last_requests,
            records - last_records,
            progress.errors.load(Ordering::Relaxed)
        );
        (last_requests, last_records) = (requests, records);
        if tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }
    if tty {
        eprintln!();
    }
}

/// One simulated client: one request at a time.
struct Client {
    http: reqwest::Client,
    router: String,
    args: BenchArgs,
    stream: Stream,
    /// (shop, id) of every record this client wrote, for GETs.
    written: Vec<(usize, String)>,
    progress: Arc<Progress>,
}

impl Client {
    /// Sends requests until `quota` is spent or `deadline` passes.
    async fn run(mut self, quota: Option<u64>, deadline: Option<Instant>, done: Arc<AtomicBool>) -> Stats {
        let mut stats = Stats::default();
        let mut sent = 0u64;
        while quota.is_none_or(|q| sent < q)
            && deadline.is_none_or(|d| Instant::now() < d)
            && !done.load(Ordering::Relaxed)
        {
            let roll = self.stream.pick(100) as u8;
            let op = match roll {
                r if r < self.args.gets && !self.written.is_empty() => Op::Get,
                r if r >= self.args.gets && r < self.args.gets + self.args.lists => Op::List,
                _ => Op::Write,
            };
            let start = Instant::now();
            let outcome = match op {
                Op::Write => self.write().await,
                Op::Get => self.get().await,
                Op::List => self.list().await,
            };
            let took = start.elapsed();
            self.progress.requests.fetch_add(1, Ordering::Relaxed);
            match &outcome {
                Ok((records, _)) => self.progress.records.fetch_add(*records, Ordering::Relaxed),
                Err(_) => self.progress.errors.fetch_add(1, Ordering::Relaxed),
            };
            stats.record(op, took, outcome);
            sent += 1;
        }
        stats
    }

    fn url(&self, shop: usize, rest: &str) -> String {
        format!("{}/v1/shops/{}/sales{rest}", self.router, Stream::shop_name(shop))
    }

    async fn write(&mut self) -> Result<(u64, u64), String> {
        let (shop, sales) = self.stream.next_batch();
        let body = serde_json::to_vec(&sales.iter().map(|s| s.to_json()).collect::<Vec<_>>()).expect("JSON");
        let bytes = body.len() as u64;
        let url = self.url(shop, &format!("?consistency={}", self.args.consistency));
        let request = self.http.post(url).header("content-type", "application/json").body(body);
        let answer = send(request).await?;
        let written = answer["written"].as_u64().unwrap_or_default();
        if written != sales.len() as u64 {
            return Err(format!("wrote {written} of {} records", sales.len()));
        }
        self.written.extend(sales.into_iter().map(|s| (shop, s.id)));
        Ok((written, bytes))
    }

    async fn get(&mut self) -> Result<(u64, u64), String> {
        let (shop, id) = self.written[self.stream.pick(self.written.len())].clone();
        let url = self.url(shop, &format!("/{id}?consistency={}", self.args.consistency));
        let record = send(self.http.get(url)).await?;
        if record["id"] != id.as_str() {
            return Err("get answered another record".into());
        }
        Ok((1, record.to_string().len() as u64))
    }

    async fn list(&mut self) -> Result<(u64, u64), String> {
        let shop = self.stream.pick_shop();
        let url = self.url(shop, &format!("?limit=100&consistency={}", self.args.consistency));
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
