//! A load of sales batches from many shops that records every
//! acknowledged write, and the read-back that finds acknowledged writes
//! that were lost.
//!
//! Each shop is written by one writer, batch after batch; every batch
//! carries a value higher than any before it, and overwrites records the
//! shop wrote earlier. So for each record the ledger knows the newest value
//! acknowledged, and a read-back that finds less (or nothing) has found a
//! lost write.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// Distinct records per shop; batches cycle over them.
pub const RECORDS_PER_SHOP: usize = 100;

/// The shape of a load.
#[derive(Debug, Clone, Copy)]
pub struct LoadSpec {
    /// Shops, each written by one writer.
    pub shops: usize,
    /// Concurrent writers; each owns every `writers`-th shop.
    pub writers: usize,
    /// Records per batch.
    pub batch: usize,
    /// The write consistency level, as the API spells it.
    pub level: &'static str,
    /// Whether each acknowledged batch is followed by a read of one of its
    /// records at the same level, which must return at least its value.
    pub read_back: bool,
}

/// What the writers saw, over every load run against one cluster.
#[derive(Debug, Default)]
pub struct Ledger {
    /// (shop, id) → the newest value whose write was acknowledged.
    pub acked: BTreeMap<(String, String), i64>,
    /// Batches sent.
    pub batches: usize,
    /// Record writes acknowledged.
    pub acked_writes: usize,
    /// Batches that were not acknowledged, with what came back (after
    /// the retries a `503` asks for).
    pub failures: Vec<String>,
    /// Batches sent again after a `503` with `Retry-After`.
    pub retried: usize,
    /// Every attempt that was not acknowledged, retried or not: when its
    /// answer came, and what it was.
    pub misses: Vec<(Instant, String)>,
    /// Reads done after acknowledged batches.
    pub reads: usize,
    /// Reads that failed or returned less than the acknowledged value.
    pub read_failures: Vec<String>,
    /// The last value handed out.
    seq: i64,
    /// Batches sent per shop, so the next batch knows which records to cover.
    rounds: BTreeMap<usize, usize>,
}

/// How many times a batch answered `503` is sent again, each after the
/// answer's `Retry-After`.
pub const RETRIES_AFTER_503: usize = 2;

/// The wait a response's `Retry-After` (in seconds) asks for.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let secs = response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// The name of shop `i`.
pub fn shop(i: usize) -> String {
    format!("shop-{i:03}")
}

/// The id of a shop's record `k`.
pub fn record_id(k: usize) -> String {
    format!("sale-{k:04}")
}

/// A running load; [`Load::stop`] ends it.
pub struct Load {
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `spec.writers` writers against the router at `base_url`,
    /// recording into `ledger`.
    pub fn start(http: &reqwest::Client, base_url: &str, spec: LoadSpec, ledger: &Arc<Mutex<Ledger>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let writers = (0..spec.writers)
            .map(|w| {
                let shops: Vec<usize> = (0..spec.shops).filter(|s| s % spec.writers == w).collect();
                let (http, base, ledger, stop) = (http.clone(), base_url.to_string(), ledger.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        for &s in &shops {
                            write_batch(&http, &base, spec, s, &ledger).await;
                        }
                    }
                })
            })
            .collect();
        Self { stop, writers }
    }

    /// Stops the writers once their batches in flight are answered.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for writer in self.writers {
            writer.await.expect("a writer panicked");
        }
    }
}

/// The longest [`wait_more`] waits for the load to make progress.
pub const PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until `count` of the ledger has grown by `more` from what it is
/// now: record writes acknowledged (`|l| l.acked_writes`) or batches
/// answered (`|l| l.batches`). A phase of a load test ends on what the
/// writers did in it, not on a sleep; panics after [`PROGRESS_TIMEOUT`].
pub async fn wait_more(ledger: &Mutex<Ledger>, more: usize, count: fn(&Ledger) -> usize) {
    let from = count(&*ledger.lock().await);
    let started = Instant::now();
    loop {
        let (now, failures) = {
            let l = ledger.lock().await;
            (count(&l), l.failures.len())
        };
        if now >= from + more {
            return;
        }
        assert!(
            started.elapsed() < PROGRESS_TIMEOUT,
            "the load made {} of {more} steps in {PROGRESS_TIMEOUT:?} ({failures} failed batches so far)",
            now - from
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes shop `s`'s next batch and records the outcome.
async fn write_batch(http: &reqwest::Client, base: &str, spec: LoadSpec, s: usize, ledger: &Mutex<Ledger>) {
    let (round, value) = {
        let mut book = ledger.lock().await;
        book.seq += 1;
        let round = book.rounds.entry(s).or_default();
        *round += 1;
        (*round - 1, book.seq)
    };
    let ids: Vec<String> = (0..spec.batch).map(|j| record_id((round * spec.batch + j) % RECORDS_PER_SHOP)).collect();
    let records: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(j, id)| json!({"id": id, "v": value, "amount": j * 100 + 99, "sku": format!("SKU-{}", j % 7)}))
        .collect();
    let url = format!("{base}/v1/shops/{}/sales?consistency={}", shop(s), spec.level);
    let mut retries = 0;
    let outcome = loop {
        match http.post(&url).json(&records).send().await {
            Ok(response) => {
                let status = response.status();
                let retry_after = retry_after(&response);
                let body: Value = response.json().await.unwrap_or_default();
                if status == 200 && body["written"] == json!(spec.batch) {
                    break Ok(());
                }
                ledger
                    .lock()
                    .await
                    .misses
                    .push((Instant::now(), format!("{} batch {round}: {status} {body}", shop(s))));
                // A 503 asks the client to come back: the same batch is
                // sent again, as a shop's client would (writes are
                // idempotent).
                match retry_after {
                    Some(wait) if status == 503 && retries < RETRIES_AFTER_503 => {
                        retries += 1;
                        tokio::time::sleep(wait).await;
                    }
                    _ => break Err(format!("{status} {body}")),
                }
            }
            Err(e) => {
                ledger.lock().await.misses.push((Instant::now(), format!("{} batch {round}: {e}", shop(s))));
                break Err(e.to_string());
            }
        }
    };
    let acked = outcome.is_ok();
    {
        let mut book = ledger.lock().await;
        book.batches += 1;
        book.retried += retries;
        match outcome {
            Ok(()) => {
                book.acked_writes += spec.batch;
                for id in &ids {
                    book.acked.insert((shop(s), id.clone()), value);
                }
            }
            Err(e) => book.failures.push(format!("{} batch {round}: {e}", shop(s))),
        }
    }
    if acked && spec.read_back {
        let id = &ids[ids.len() - 1];
        let url = format!("{base}/v1/shops/{}/sales/{id}?consistency={}", shop(s), spec.level);
        let failure = match http.get(&url).send().await {
            Ok(response) => {
                let status = response.status();
                let body: Value = response.json().await.unwrap_or_default();
                (status != 200 || body["v"].as_i64().is_none_or(|v| v < value))
                    .then(|| format!("{}/{id}: {status} {body}, expected v>={value}", shop(s)))
            }
            Err(e) => Some(format!("{}/{id}: {e}", shop(s))),
        };
        let mut book = ledger.lock().await;
        book.reads += 1;
        book.read_failures.extend(failure);
    }
}

/// Reads every acknowledged record at `level` through the router at
/// `base_url`; returns those missing or older than acknowledged.
pub async fn lost_records(
    http: &reqwest::Client,
    base_url: &str,
    acked: &BTreeMap<(String, String), i64>,
    level: &str,
) -> Vec<String> {
    let checks = acked.iter().map(|((shop, id), expected)| async move {
        let url = format!("{base_url}/v1/shops/{shop}/sales/{id}?consistency={level}");
        let (status, body) = match http.get(&url).timeout(Duration::from_secs(30)).send().await {
            Ok(response) => (response.status().as_u16(), response.json::<Value>().await.unwrap_or_default()),
            Err(e) => (0, json!(e.to_string())),
        };
        (status != 200 || body["v"].as_i64().is_none_or(|v| v < *expected))
            .then(|| format!("{shop}/{id}: {status} {body}, expected v={expected}"))
    });
    futures::stream::iter(checks).buffer_unordered(32).filter_map(|lost| async { lost }).collect().await
}

/// The scenario of a node away for a minute, then back, under QUORUM load:
/// what the process and the container versions of it share.
pub mod away {
    use std::time::{Duration, Instant};

    use super::{Ledger, LoadSpec};

    /// 8 writers push batches of 20 records into 100 shops at QUORUM.
    pub const SPEC: LoadSpec = LoadSpec { shops: 100, writers: 8, batch: 20, level: "quorum", read_back: false };
    /// Load before the node is stopped.
    pub const BEFORE: Duration = Duration::from_secs(10);
    /// How long the node stays away.
    pub const AWAY: Duration = Duration::from_secs(60);
    /// Load after the node is started again.
    pub const AFTER: Duration = Duration::from_secs(20);

    /// The first ten attempts that were not acknowledged, each with its
    /// time from `started`.
    pub fn first_misses(ledger: &Ledger, started: Instant) -> Vec<String> {
        let at = |t: Instant| t.duration_since(started).as_secs_f64();
        ledger.misses.iter().take(10).map(|(t, what)| format!("at {:.1} s: {what}", at(*t))).collect()
    }

    /// What the writers saw, and how many of the records read back were
    /// lost or stale, for the closing line of a run; `back` is when the
    /// node started again.
    pub fn summary(ledger: &Ledger, back: Instant, lost: usize) -> String {
        format!(
            "{} batches, {} record writes acknowledged, {} attempts not acknowledged ({} after the return), {} \
             batches failed after retries; {} records read back at ALL, {lost} lost or stale",
            ledger.batches,
            ledger.acked_writes,
            ledger.misses.len(),
            ledger.misses.iter().filter(|(t, _)| *t >= back).count(),
            ledger.failures.len(),
            ledger.acked.len(),
        )
    }
}
