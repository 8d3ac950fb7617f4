//! `ringup-bench`: the load generator behind `ringup bench` and the peer
//! comparison (`ringup-peers`), in the spirit of cassandra-stress,
//! redis-benchmark and wrk2.
//!
//! Nothing here knows a store. A store is a [`Target`] that hands out one
//! [`Client`] per simulated client, and a run goes like this:
//!
//! 1. [`run`] checks the [`LoadArgs`] and connects `--concurrency` clients.
//!    Each gets its own [`Stream`](workload::Stream) of sales, made from
//!    `--seed` and its number, so the same records go to every store.
//! 2. With `--preload`, every client first writes that many batches,
//!    unmeasured. The records they wrote are then gathered into one shared,
//!    read-only [`KeySet`], in an order made from the seed, so that every
//!    client's GETs read records any client wrote.
//! 3. The clients start together. Each sends one request at a time: a batch
//!    write of one shop's sales, or, as `--gets` and `--lists` ask, a GET of
//!    a record (from the shared set or its own since the start, uniformly
//!    or by `--zipf`) or a page of a shop's records. Closed loop, the next
//!    request goes when the last is answered; with `--rate`, requests fall
//!    due on one schedule for all clients and count their latency from when
//!    they were due ([`pace`]). A client stops when `--requests` are spent
//!    or `--duration` has passed.
//! 4. Every request's latency goes into the client's HDR histogram for its
//!    operation ([`report::Stats`]); a progress line comes every second.
//! 5. The clients' stats merge into one summary ([`report::to_json`]),
//!    printed as a table or, with `--json`, as JSON. With `--rate` the
//!    summary holds the rate asked and the rate achieved.

pub mod keys;
pub mod pace;
mod progress;
pub mod report;
mod token;
mod worker;

pub use token::token_from_env;
pub mod workload;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use self::keys::KeySet;
use self::pace::{Pace, Schedule};
use self::progress::Progress;
use self::report::Stats;
use self::worker::Worker;
use self::workload::{Sale, Workload};

/// Records a list request asks for.
pub const LIST_PAGE: usize = 100;

/// The lowest `--rate`, in requests per second.
pub const MIN_RATE: f64 = 0.01;

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
    /// Send exactly this many requests: split evenly over the clients, or
    /// with --rate, taken in turn from the shared schedule.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Percent of requests that GET one record by id: one any client
    /// preloaded, or one this client has written since the start.
    #[arg(long, default_value_t = 0)]
    pub gets: u8,
    /// Percent of requests that read a page of 100 records of a shop.
    #[arg(long, default_value_t = 0)]
    pub lists: u8,
    /// Batches each client writes, unmeasured, before the run starts; the
    /// records every client preloaded are the ones GETs read.
    #[arg(long, default_value_t = 0)]
    pub preload: u64,
    /// A fixed arrival rate, in requests per second over all clients (open
    /// loop): request i is due at start + i/N, and its latency counts from
    /// when it was due, so a slow answer cannot hide the requests queued
    /// behind it. --concurrency bounds the requests in flight. Without it,
    /// each client sends its next request when the last is answered.
    #[arg(long)]
    pub rate: Option<f64>,
    /// GETs pick records by a Zipf distribution with this exponent (rank 1
    /// the most often: a few hot records) instead of uniformly.
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
        if self.rate.is_some_and(|r| !r.is_finite() || r < MIN_RATE) {
            bail!("--rate must be at least {MIN_RATE} requests per second");
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

    /// How long the run lasts: `None` when `--requests` counts it instead.
    fn duration(&self) -> Option<Duration> {
        self.requests.is_none().then(|| Duration::from_secs_f64(self.duration))
    }

    /// How client `c` paces its requests, on `schedule` under `--rate`.
    fn pace(&self, c: usize, schedule: Option<&Arc<Schedule>>) -> Pace {
        match schedule {
            Some(schedule) => Pace::Rate(schedule.clone()),
            None => Pace::Closed { quota: self.quota(c) },
        }
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
    ) + &pacing(args)
}

/// The banner's words for `--rate` and `--zipf`, if set.
fn pacing(args: &LoadArgs) -> String {
    let rate = args.rate.map(|r| format!(", {r} requests/s open loop")).unwrap_or_default();
    let zipf = args.zipf.map(|s| format!(", GETs by Zipf {s}")).unwrap_or_default();
    rate + &zipf
}

/// Preloads every worker, gathers what they wrote into the shared key set,
/// runs them together, and merges what they measured; also how long the
/// measured part took.
async fn drive<C: Client>(
    args: &LoadArgs,
    workers: Vec<Worker<C>>,
    progress: Arc<Progress>,
) -> anyhow::Result<(Stats, Duration)> {
    let mut workers = preload(workers, args.preload).await?;
    let keys = Arc::new(KeySet::gather(workers.iter_mut().flat_map(Worker::hand_over), args.seed));
    let started = Instant::now();
    let deadline = args.duration().map(|d| started + d);
    let schedule = args.rate.map(|rate| Arc::new(Schedule::new(started, rate, args.requests, deadline)));
    let handles: Vec<_> = workers
        .into_iter()
        .enumerate()
        .map(|(c, worker)| tokio::spawn(worker.run(args.pace(c, schedule.as_ref()), deadline, keys.clone())))
        .collect();
    let (stop, stopped) = oneshot::channel();
    let ticker = (!args.quiet).then(|| tokio::spawn(progress::show(progress, started, stopped)));
    let mut stats = Stats::default();
    for handle in handles {
        stats.merge(&handle.await.context("a client panicked")?);
    }
    let elapsed = started.elapsed();
    let _ = stop.send(());
    if let Some(ticker) = ticker {
        ticker.await.context("the progress line panicked")?;
    }
    Ok((stats, elapsed))
}

/// Every worker writes `batches` batches, all at once; the workers back in
/// their order.
async fn preload<C: Client>(workers: Vec<Worker<C>>, batches: u64) -> anyhow::Result<Vec<Worker<C>>> {
    let handles: Vec<_> = workers.into_iter().map(|worker| tokio::spawn(worker.preload(batches))).collect();
    let mut ready = Vec::with_capacity(handles.len());
    for handle in handles {
        ready.push(handle.await.context("a client panicked while preloading")??);
    }
    Ok(ready)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use clap::Parser;

    use super::*;

    /// A store in memory that remembers which client read which record.
    #[derive(Clone, Default)]
    struct Memory {
        records: Arc<Mutex<HashSet<(String, String)>>>,
        reads: Arc<Mutex<Vec<(usize, String)>>>,
        clients: Arc<AtomicUsize>,
    }

    struct MemoryClient {
        memory: Memory,
        number: usize,
    }

    impl Target for Memory {
        type Client = MemoryClient;

        fn describe(&self) -> Value {
            json!({ "target": "memory" })
        }

        fn lists(&self) -> bool {
            false
        }

        async fn connect(&self) -> anyhow::Result<MemoryClient> {
            Ok(MemoryClient { memory: self.clone(), number: self.clients.fetch_add(1, Ordering::Relaxed) })
        }
    }

    impl Client for MemoryClient {
        async fn write(&mut self, shop: &str, sales: &[Sale]) -> Result<u64, String> {
            let mut records = self.memory.records.lock().expect("records");
            records.extend(sales.iter().map(|sale| (shop.to_string(), sale.id.clone())));
            Ok(sales.iter().map(|sale| sale.json_len as u64).sum())
        }

        async fn get(&mut self, shop: &str, id: &str) -> Result<u64, String> {
            if !self.memory.records.lock().expect("records").contains(&(shop.to_string(), id.to_string())) {
                return Err("404 not_found".into());
            }
            self.memory.reads.lock().expect("reads").push((self.number, id.to_string()));
            Ok(100)
        }

        async fn list(&mut self, _: &str, _: usize) -> Result<(u64, u64), String> {
            unreachable!("memory has no list pages")
        }
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn args(flags: &str) -> LoadArgs {
        let base = "bench --shops 7 --batch 5 --concurrency 4 --seed 3 --quiet";
        Cli::parse_from(format!("{base} {flags}").split_whitespace()).load
    }

    /// The reads of each client, in the order it made them.
    fn reads_by_client(memory: &Memory) -> Vec<Vec<String>> {
        let reads = memory.reads.lock().expect("reads");
        let mut by_client = vec![Vec::new(); 4];
        for (client, id) in reads.iter() {
            by_client[*client].push(id.clone());
        }
        by_client
    }

    #[tokio::test]
    async fn a_counted_run_sends_exactly_the_asked_requests() {
        let summary = run(&args("--requests 37 --gets 40"), Memory::default()).await.unwrap();
        assert_eq!(summary["requests"], 37, "{summary}");
        assert_eq!(summary["errors"], 0, "{summary}");
        assert!(summary["rate_achieved"].is_null(), "closed loop: {summary}");
    }

    #[tokio::test]
    async fn a_paced_run_sends_exactly_the_asked_requests_and_reports_its_rate() {
        let summary = run(&args("--requests 60 --gets 50 --preload 1 --rate 3000"), Memory::default()).await.unwrap();
        assert_eq!(summary["requests"], 60, "{summary}");
        assert_eq!(summary["errors"], 0, "{summary}");
        assert_eq!(summary["settings"]["rate_asked"], 3000.0, "{summary}");
        let achieved = summary["rate_achieved"].as_f64().expect("an achieved rate");
        assert!(achieved > 0.0 && achieved < 3000.0 * 1.5, "at most about the asked rate: {summary}");
    }

    #[tokio::test]
    async fn gets_read_records_any_client_preloaded_and_repeat_with_the_seed() {
        let load = args("--requests 200 --gets 100 --preload 2 --zipf 1.1");
        let memory = Memory::default();
        let summary = run(&load, memory.clone()).await.unwrap();
        assert_eq!(summary["ops"]["get"]["requests"], 200, "only GETs: {summary}");
        assert_eq!(summary["ops"]["get"]["records"], 200, "every GET found its record: {summary}");
        let by_client = reads_by_client(&memory);
        let others = by_client
            .iter()
            .enumerate()
            .map(|(c, ids)| ids.iter().filter(|id| !id.starts_with(&format!("c{c:03}-"))).count());
        assert!(others.sum::<usize>() > 100, "most GETs read another client's records: {by_client:?}");

        let again = Memory::default();
        run(&load, again.clone()).await.unwrap();
        assert_eq!(reads_by_client(&again), by_client, "the same seed, the same GETs");
    }

    #[tokio::test]
    async fn without_a_preload_gets_read_what_the_client_wrote_during_the_run() {
        let memory = Memory::default();
        let summary = run(&args("--requests 80 --gets 50"), memory.clone()).await.unwrap();
        assert_eq!(summary["errors"], 0, "{summary}");
        assert!(summary["ops"]["get"]["requests"].as_u64() > Some(0), "{summary}");
        for (c, ids) in reads_by_client(&memory).iter().enumerate() {
            assert!(ids.iter().all(|id| id.starts_with(&format!("c{c:03}-"))), "client {c} read its own: {ids:?}");
        }
    }

    #[test]
    fn settings_no_run_can_have_are_refused() {
        for flags in ["--rate 0", "--rate=-5", "--zipf 0", "--gets 60 --lists 50", "--duration 0"] {
            assert!(args(flags).check().is_err(), "{flags}");
        }
        assert!(args("--rate 0.5 --zipf 0.9").check().is_ok());
    }
}
