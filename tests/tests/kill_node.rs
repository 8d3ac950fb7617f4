//! Kill a node while 50 shops write: QUORUM writes and reads keep
//! succeeding, and after the node is back every acknowledged record reads
//! back with its latest value at QUORUM and at ALL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ringup_tests::TestCluster;
use ringup_tests::load::{self, record_id, shop};
use serde_json::{Value, json};
use tokio::sync::Mutex;

const SHOPS: usize = 50;
const RECORDS_PER_SHOP: usize = 200;
const BATCH: usize = 50;
/// Every record is written this many times, each pass with a new value.
const PASSES: usize = 2;
const WRITERS: usize = 10;
/// The test gives up waiting for progress after this long.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

/// What the writers saw: acknowledged values and failures.
#[derive(Default)]
struct Ledger {
    /// (shop, id) → the last value whose write was acknowledged.
    acked: BTreeMap<(String, String), i64>,
    write_failures: Vec<String>,
    read_failures: Vec<String>,
    batches: usize,
    reads: usize,
}

/// One writer: for each pass and each of its shops, writes the shop's
/// records in batches, reading one record of each batch back.
async fn writer(cluster: Arc<TestCluster>, ledger: Arc<Mutex<Ledger>>, shops: Vec<usize>, progress: Arc<AtomicUsize>) {
    for pass in 0..PASSES {
        for &s in &shops {
            for start in (0..RECORDS_PER_SHOP).step_by(BATCH) {
                let value = (pass * 1000 + start) as i64;
                let batch: Vec<Value> = (start..start + BATCH)
                    .map(|k| json!({"id": record_id(k), "v": value, "amount": k, "sku": format!("SKU-{}", k % 7)}))
                    .collect();
                let path = format!("/v1/shops/{}/sales?consistency=quorum", shop(s));
                let (status, body) = cluster.post_json(&path, &Value::Array(batch)).await;
                let mut book = ledger.lock().await;
                book.batches += 1;
                if status == 200 && body["written"] == json!(BATCH) {
                    for k in start..start + BATCH {
                        book.acked.insert((shop(s), record_id(k)), value);
                    }
                } else {
                    book.write_failures.push(format!("{} pass {pass} batch {start}: {status} {body}", shop(s)));
                }
                drop(book);
                read_one_back(&cluster, &ledger, s, &record_id(start + BATCH - 1)).await;
                progress.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Reads record `id` of shop `s` at QUORUM and checks it has the value last
/// acknowledged.
async fn read_one_back(cluster: &TestCluster, ledger: &Mutex<Ledger>, s: usize, id: &str) {
    let expected = ledger.lock().await.acked.get(&(shop(s), id.to_string())).copied();
    let (status, body) = cluster.get(&format!("/v1/shops/{}/sales/{id}?consistency=quorum", shop(s))).await;
    let mut ledger = ledger.lock().await;
    ledger.reads += 1;
    if expected.is_some() && (status != 200 || body["v"].as_i64() != expected) {
        ledger.read_failures.push(format!("{}/{id}: {status} {body}, expected v={expected:?}", shop(s)));
    }
}

async fn wait_for(progress: &AtomicUsize, batches: usize, what: &str) {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while progress.load(Ordering::Relaxed) < batches {
        assert!(Instant::now() < deadline, "writers stalled before {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads every acknowledged record at `level`; returns the ones whose value
/// is missing or older than acknowledged.
async fn lost_records(cluster: &TestCluster, acked: &BTreeMap<(String, String), i64>, level: &str) -> Vec<String> {
    load::lost_records(cluster.http(), &cluster.url(""), acked, level).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_node_loses_no_acknowledged_write() {
    let cluster = Arc::new(TestCluster::start(3).await);
    let total_batches = SHOPS * PASSES * RECORDS_PER_SHOP / BATCH;
    // Node 1 initialized the metadata group and most likely leads it.
    let victim = 1;

    let progress = Arc::new(AtomicUsize::new(0));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let shops = (0..SHOPS).filter(|s| s % WRITERS == w).collect();
            tokio::spawn(writer(cluster.clone(), ledger.clone(), shops, progress.clone()))
        })
        .collect();

    wait_for(&progress, total_batches / 4, "the kill").await;
    cluster.kill_node(victim).await;
    let killed_at = progress.load(Ordering::Relaxed);
    wait_for(&progress, total_batches * 3 / 5, "the restart").await;
    let (writes_while_down, reads_while_down, failures_while_down) = {
        let l = ledger.lock().await;
        (progress.load(Ordering::Relaxed) - killed_at, l.reads, l.write_failures.len() + l.read_failures.len())
    };
    cluster.start_node(victim).await;
    eprintln!(
        "node {victim} was down (SIGKILL) for {writes_while_down} batches of {BATCH}; {failures_while_down} failures then"
    );
    cluster.wait_node_live(victim).await;
    for w in writers {
        w.await.expect("a writer panicked");
    }

    let ledger = Arc::try_unwrap(ledger).unwrap_or_else(|_| panic!("ledger still shared")).into_inner();
    let records = ledger.acked.len();
    eprintln!(
        "{} batches sent, {} record writes acknowledged, {} distinct records, {} reads ({} before the restart)",
        ledger.batches,
        (ledger.batches - ledger.write_failures.len()) * BATCH,
        records,
        ledger.reads,
        reads_while_down
    );
    assert!(ledger.write_failures.is_empty(), "QUORUM writes failed:\n{}", ledger.write_failures.join("\n"));
    assert!(ledger.read_failures.is_empty(), "QUORUM reads failed:\n{}", ledger.read_failures.join("\n"));
    assert_eq!(records, SHOPS * RECORDS_PER_SHOP, "every record should have been acknowledged");

    for level in ["quorum", "all"] {
        let lost = lost_records(&cluster, &ledger.acked, level).await;
        eprintln!("read back {records} acknowledged records at {level}: {} lost", lost.len());
        assert!(
            lost.is_empty(),
            "{} acknowledged records lost at {level}, e.g.:\n{}",
            lost.len(),
            lost[..lost.len().min(10)].join("\n")
        );
    }

    // The ALL read-back repaired the restarted node; alone, it must now
    // hold every latest value.
    for other in (1..=3).filter(|n| *n != victim) {
        cluster.kill_node(other).await;
    }
    let lost = lost_records(&cluster, &ledger.acked, "one").await;
    eprintln!(
        "read back {records} records at ONE from node {victim} alone after read repair: {} missing or stale",
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "read repair left {} records stale on node {victim}, e.g.:\n{}",
        lost.len(),
        lost[..lost.len().min(10)].join("\n")
    );
    assert!(cluster.stop_all().await.is_empty(), "every process should stop on SIGTERM");
}
