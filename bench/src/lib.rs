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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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
    /// GETs then read records any client preloaded.
    #[arg(long, default_value_t = 0)]
    pub preload: u64,
    /// A fixed arrival rate, in requests per second over all clients (open
    /// loop): request i is due at start + i/N, and its latency counts from
    /// when it was due, so a slow answer cannot hide the requests queued
    /// behind it. `--concurrency` bounds the requests in flight.
    #[arg(long)]
    pub rate: Option<f64>,
    /// GETs pick records by a Zipf distribution with this exponent (a few
    /// hot records) instead of uniformly.
    #[arg(long)]
    pub zipf: Option<f64>,
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
        if self.rate.is_some_and(|r| !r.is_finite() || r <= 0.0) {
            bail!("--rate must be above 0 requests per second");
        }
        if self.zipf.is_some_and(|s| !s.is_finite() || s <= 0.0) {
            bail!("--zipf must be an exponent above 0");
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
            "rate_asked": self.rate,
            "zipf": self.zipf,
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
    let shared = Arc::new(Shared::default());
    let handles: Vec<_> = workers
        .into_iter()
        .enumerate()
        .map(|(c, worker)| {
            let pace = match args.rate {
                Some(rate) => Pace::Rate { rate, total: args.requests },
                None => Pace::Closed { quota: args.quota(c) },
            };
            tokio::spawn(worker.run(args.preload, pace, duration, start.clone(), shared.clone()))
        })
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

/// How a client paces its requests.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// One request after another, up to a quota if one was asked for.
    Closed { quota: Option<u64> },
    /// Requests due at a fixed rate over all clients, up to `total`.
    Rate { rate: f64, total: Option<u64> },
}

/// What the clients share once the run starts.
#[derive(Default)]
struct Shared {
    /// Every client's preloaded records, gathered before the start.
    preloaded: Mutex<Vec<(usize, String)>>,
    /// The same, sorted by id (so the same seed picks the same records),
    /// made once after the start.
    keys: OnceLock<Arc<Vec<(usize, String)>>>,
    /// The next request number, under a fixed rate.
    tickets: AtomicU64,
    /// When the run started, under a fixed rate.
    started: OnceLock<Instant>,
}

impl Shared {
    fn keys(&self) -> Arc<Vec<(usize, String)>> {
        self.keys
            .get_or_init(|| {
                let mut keys = std::mem::take(&mut *self.preloaded.lock().expect("keys poisoned"));
                keys.sort_by(|a, b| a.1.cmp(&b.1));
                Arc::new(keys)
            })
            .clone()
    }
}

/// When request `ticket` is due at `rate` per second from `start`.
fn due(start: Instant, ticket: u64, rate: f64) -> Instant {
    start + Duration::from_secs_f64(ticket as f64 / rate)
}

/// One simulated client: one request at a time.
/// One simulated client: one request at a time.
struct Worker<C> {
    client: C,
    stream: Stream,
    /// Percent of gets and of lists.
    mix: (u8, u8),
    /// (shop, sequence number) of every record this client wrote.
    written: Vec<(usize, u64)>,
    /// Every client's preloaded records, once the run has started.
    keys: Arc<Vec<(usize, String)>>,
    /// How GETs pick among `keys`, if not uniformly.
    zipf: Option<f64>,
    progress: Arc<Progress>,
}

impl<C: Client> Worker<C> {
    fn new(client: C, args: &LoadArgs, c: usize, progress: Arc<Progress>) -> Self {
        let stream = Stream::new(args.workload(), c);
        let keys = Arc::default();
        Self { client, stream, mix: (args.gets, args.lists), written: Vec::new(), keys, zipf: args.zipf, progress }
    }

    /// Preloads, waits at `start` for every client, then sends requests
    /// as `pace` says until they are spent or `duration` has passed.
    async fn run(
        mut self,
        preload: u64,
        pace: Pace,
        duration: Option<Duration>,
        start: Arc<Barrier>,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Stats> {
        let mut preloaded = Ok(());
        for _ in 0..preload {
            if let Err(e) = self.write().await {
                preloaded = Err(anyhow::anyhow!("preloading failed: {e}"));
                break;
            }
        }
        let mine = self.written.iter().map(|(shop, seq)| (*shop, self.stream.record_id(*seq)));
        shared.preloaded.lock().expect("keys poisoned").extend(mine);
        start.wait().await;
        preloaded?;
        self.keys = shared.keys();
        let started = *shared.started.get_or_init(Instant::now);
        let deadline = duration.map(|d| started + d);
        let mut stats = Stats::default();
        let mut sent = 0u64;
        loop {
            let begun = match pace {
                Pace::Closed { quota } => {
                    if quota.is_some_and(|q| sent >= q) {
                        break;
                    }
                    Instant::now()
                }
                Pace::Rate { rate, total } => {
                    let ticket = shared.tickets.fetch_add(1, Ordering::Relaxed);
                    let due = due(started, ticket, rate);
                    if total.is_some_and(|t| ticket >= t) || deadline.is_some_and(|d| due >= d) {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    due
                }
            };
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let op = self.pick();
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
            r if r < gets && !(self.written.is_empty() && self.keys.is_empty()) => Op::Get,
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
        let (shop, id) = self.pick_key();
        let bytes = self.client.get(&Stream::shop_name(shop), &id).await?;
        Ok((1, bytes))
    }

    /// A record to read: one any client preloaded, else one this client
    /// wrote; uniformly or by `--zipf`.
    fn pick_key(&mut self) -> (usize, String) {
        if self.keys.is_empty() {
            let (shop, seq) = self.written[self.stream.pick(self.written.len())];
            return (shop, self.stream.record_id(seq));
        }
        let i = match self.zipf {
            Some(s) => self.stream.pick_zipf(self.keys.len(), s),
            None => self.stream.pick(self.keys.len()),
        };
        self.keys[i].clone()
    }

    async fn list(&mut self) -> Result<(u64, u64), String> {
        let shop = self.stream.pick_shop();
        self.client.list(&Stream::shop_name(shop), LIST_PAGE).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_fall_due_at_the_asked_rate() {
        let start = Instant::now();
        assert_eq!(due(start, 0, 100.0), start);
        assert_eq!(due(start, 50, 100.0) - start, Duration::from_millis(500));
        assert_eq!(due(start, 3000, 1000.0) - start, Duration::from_secs(3));
    }

    #[test]
    fn every_clients_preloaded_records_are_shared_in_id_order() {
        let shared = Shared::default();
        shared.preloaded.lock().unwrap().extend([(2, "c001-2".to_string()), (1, "c000-1".to_string())]);
        shared.preloaded.lock().unwrap().push((3, "c002-1".to_string()));
        let keys = shared.keys();
        let ids: Vec<&str> = keys.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(ids, ["c000-1", "c001-2", "c002-1"]);
        assert!(Arc::ptr_eq(&keys, &shared.keys()), "made once");
    }
}
