//! `ringup-bench`: the load generator behind `ringup bench` and the peer
//! comparison (`ringup-peers`), in the spirit of cassandra-stress and
//! redis-benchmark.
//!
//! Nothing here knows a store. A store is a [`Target`] that hands out one
//! [`Client`] per simulated client, and a run goes like this:
//!
//! 1. [`run`] checks the [`LoadArgs`] and connects `--concurrency` clients.
//!    Each gets its own [`Stream`](workload::Stream) of sales, made from
//!    `--seed` and its number, so the same records go to every store.
//! 2. With `--preload`, every client first writes that many batches,
//!    unmeasured, so that reads have records to find.
//! 3. The clients start together. Each sends one request at a time: a batch
//!    write of one shop's sales, or, as `--gets` and `--lists` ask, a GET of
//!    a record it wrote earlier or a page of a shop's records. It stops when
//!    its share of `--requests` is spent or `--duration` has passed.
//! 4. Every request's latency goes into the client's HDR histogram for its
//!    operation ([`report::Stats`]); a progress line comes every second.
//! 5. The clients' stats merge into one summary ([`report::to_json`]),
//!    printed as a table or, with `--json`, as JSON.

pub mod report;
pub mod workload;

use std::future::Future;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use tokio::sync::Barrier;

use self::report::{Op, Stats};
use self::workload::{Sale, Stream, Workload};

/// Records a list request asks for.
pub const LIST_PAGE: usize = 100;

/// The shape of the load, the same whatever the target.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
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
    /// Percent of requests that GET one record the client wrote earlier.
    #[arg(long, default_value_t = 0)]
    pub gets: u8,
    /// Percent of requests that read a page of 100 records of a shop.
    #[arg(long, default_value_t = 0)]
    pub lists: u8,
    /// Batches each client writes, unmeasured, before the run starts.
    #[arg(long, default_value_t = 0)]
    pub preload: u64,
    /// The seed of every client's records and choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the summary as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

impl LoadArgs {
    /// Refuses settings no run can have.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.shops == 0 || self.batch == 0 || self.concurrency == 0 {
            bail!("--shops, --batch and --concurrency must be at least 1");
        }
        if u16::from(self.gets) + u16::from(self.lists) > 100 {
            bail!("--gets and --lists add up to more than 100 percent");
        }
        if self.requests.is_none() && (!self.duration.is_finite() || self.duration <= 0.0) {
            bail!("--duration must be above 0 seconds");
        }
        Ok(())
    }

    /// The record stream's shape.
    pub fn workload(&self) -> Workload {
        Workload { shops: self.shops, batch: self.batch, record_size: self.record_size, seed: self.seed }
    }

    /// Client `c`'s share of `--requests`, if a count was asked for.
    fn quota(&self, c: usize) -> Option<u64> {
        let n = self.concurrency as u64;
        self.requests.map(|r| r / n + u64::from((c as u64) < r % n))
    }

    fn settings(&self) -> Value {
        json!({
            "shops": self.shops,
            "batch": self.batch,
            "record_size": self.record_size,
            "concurrency": self.concurrency,
            "duration_s": self.requests.is_none().then_some(self.duration),
            "requests": self.requests,
            "gets_percent": self.gets,
            "lists_percent": self.lists,
            "preload_batches": self.preload,
            "seed": self.seed,
        })
    }
}

/// A store under load.
pub trait Target: Send + Sync + 'static {
    /// One client's connection.
    type Client: Client;
    /// The target's name (`"target"`) and its settings, for the summary.
    fn describe(&self) -> Value;
    /// Whether clients can read pages of a shop's records.
    fn lists(&self) -> bool;
    /// A connection for one more client.
    fn connect(&self) -> impl Future<Output = anyhow::Result<Self::Client>> + Send;
}

/// One client's connection to a target. Failures are short strings that
/// name their kind (`timeout`, `503 not_enough_replicas`), counted by kind.
pub trait Client: Send + 'static {
    /// Writes one shop's sales, returning once the store acknowledged all
    /// of them at the durability the target promises; the bytes sent.
    fn write(&mut self, shop: &str, sales: &[Sale]) -> impl Future<Output = Result<u64, String>> + Send;
    /// Reads one record; the bytes received. A missing record is a failure.
    fn get(&mut self, shop: &str, id: &str) -> impl Future<Output = Result<u64, String>> + Send;
    /// Reads a page of up to `limit` of a shop's records; records and bytes
    /// received. Asked only of targets whose [`Target::lists`] is true.
    fn list(&mut self, shop: &str, limit: usize) -> impl Future<Output = Result<(u64, u64), String>> + Send;
}

/// Counters the progress line reads while clients run.
#[derive(Default)]
struct Progress {
    requests: AtomicU64,
    records: AtomicU64,
    errors: AtomicU64,
}

/// Runs the load against `target`, prints the summary (a table, or JSON
/// with `--json`) and returns it as JSON.
pub async fn run<T: Target>(args: &LoadArgs, target: T) -> anyhow::Result<Value> {
    args.check()?;
    let about = target.describe();
    let name = about["target"].as_str().unwrap_or("target").to_string();
    if args.lists > 0 && !target.lists() {
        bail!("{name} has no list pages: leave --lists at 0");
    }
    let mut settings = args.settings();
    if let (Some(ours), Some(theirs)) = (settings.as_object_mut(), about.as_object()) {
        ours.extend(theirs.clone());
    }
    if !args.quiet {
        eprintln!("{name}: {}", banner(args));
    }
    let progress = Arc::new(Progress::default());
    let mut workers = Vec::with_capacity(args.concurrency);
    for c in 0..args.concurrency {
        let client = target.connect().await.with_context(|| format!("{name}: client {c} cannot connect"))?;
        workers.push(Worker::new(client, args, c, progress.clone()));
    }
    if args.preload > 0 && !args.quiet {
        eprintln!("{name}: preloading {} batches per client", args.preload);
    }
    let (stats, elapsed) = drive(args, workers, progress).await?;
    let summary = report::to_json(&stats, elapsed, settings);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", report::render(&summary));
    }
    Ok(summary)
}

fn banner(args: &LoadArgs) -> String {
    let length = match args.requests {
        Some(n) => format!("{n} requests"),
        None => format!("{} s", args.duration),
    };
    format!(
        "{} shops, batches of {} records of ~{} B, {} clients, {length}, {}% writes {}% gets {}% lists, seed {}",
        args.shops,
        args.batch,
        args.record_size,
        args.concurrency,
        100 - args.gets - args.lists,
        args.gets,
        args.lists,
        args.seed
    )
}

/// Starts the workers together once they have preloaded, and merges what
/// they measured; also how long the measured part took.
async fn drive<C: Client>(
    args: &LoadArgs,
    workers: Vec<Worker<C>>,
    progress: Arc<Progress>,
) -> anyhow::Result<(Stats, Duration)> {
    let start = Arc::new(Barrier::new(workers.len() + 1));
    let done = Arc::new(AtomicBool::new(false));
    let duration = args.requests.is_none().then(|| Duration::from_secs_f64(args.duration));
    let handles: Vec<_> = workers
        .into_iter()
        .enumerate()
        .map(|(c, worker)| tokio::spawn(worker.run(args.preload, args.quota(c), duration, start.clone())))
        .collect();
    start.wait().await;
    let started = Instant::now();
    let ticker = (!args.quiet).then(|| tokio::spawn(show_progress(progress, started, done.clone())));
    let mut stats = Stats::default();
    let mut failure = None;
    for handle in handles {
        match handle.await.context("a client panicked")? {
            Ok(theirs) => stats.merge(&theirs),
            Err(e) => failure = Some(e),
        }
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    if let Some(ticker) = ticker {
        let _ = ticker.await;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok((stats, elapsed)),
    }
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
struct Worker<C> {
    client: C,
    stream: Stream,
    /// Percent of gets and of lists.
    mix: (u8, u8),
    /// (shop, sequence number) of every record this client wrote.
    written: Vec<(usize, u64)>,
    progress: Arc<Progress>,
}

impl<C: Client> Worker<C> {
    fn new(client: C, args: &LoadArgs, c: usize, progress: Arc<Progress>) -> Self {
        let stream = Stream::new(args.workload(), c);
        Self { client, stream, mix: (args.gets, args.lists), written: Vec::new(), progress }
    }

    /// Preloads, waits at `start` for every client, then sends requests
    /// until `quota` is spent or `duration` has passed.
    async fn run(
        mut self,
        preload: u64,
        quota: Option<u64>,
        duration: Option<Duration>,
        start: Arc<Barrier>,
    ) -> anyhow::Result<Stats> {
        let mut preloaded = Ok(());
        for _ in 0..preload {
            if let Err(e) = self.write().await {
                preloaded = Err(anyhow::anyhow!("preloading failed: {e}"));
                break;
            }
        }
        start.wait().await;
        preloaded?;
        let deadline = duration.map(|d| Instant::now() + d);
        let mut stats = Stats::default();
        let mut sent = 0u64;
        while quota.is_none_or(|q| sent < q) && deadline.is_none_or(|d| Instant::now() < d) {
            let op = self.pick();
            let begun = Instant::now();
            let outcome = match op {
                Op::Write => self.write().await,
                Op::Get => self.get().await,
                Op::List => self.list().await,
            };
            self.count(&outcome);
            stats.record(op, begun.elapsed(), outcome);
            sent += 1;
        }
        Ok(stats)
    }

    fn pick(&mut self) -> Op {
        let (gets, lists) = self.mix;
        match self.stream.pick(100) as u8 {
            r if r < gets && !self.written.is_empty() => Op::Get,
            r if r >= gets && r < gets + lists => Op::List,
            _ => Op::Write,
        }
    }

    fn count(&self, outcome: &Result<(u64, u64), String>) {
        self.progress.requests.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok((records, _)) => self.progress.records.fetch_add(*records, Ordering::Relaxed),
            Err(_) => self.progress.errors.fetch_add(1, Ordering::Relaxed),
        };
    }

    async fn write(&mut self) -> Result<(u64, u64), String> {
        let (shop, sales) = self.stream.next_batch();
        let bytes = self.client.write(&Stream::shop_name(shop), &sales).await?;
        self.written.extend(sales.iter().map(|s| (shop, s.seq)));
        Ok((sales.len() as u64, bytes))
    }

    async fn get(&mut self) -> Result<(u64, u64), String> {
        let (shop, seq) = self.written[self.stream.pick(self.written.len())];
        let bytes = self.client.get(&Stream::shop_name(shop), &self.stream.record_id(seq)).await?;
        Ok((1, bytes))
    }

    async fn list(&mut self) -> Result<(u64, u64), String> {
        let shop = self.stream.pick_shop();
        self.client.list(&Stream::shop_name(shop), LIST_PAGE).await
    }
}
