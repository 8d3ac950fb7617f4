//! Healing with real processes on loopback: nodes whose data directory is
//! wiped come back empty and are refilled from their peers, under a load of
//! QUORUM writes from 100 shops that records every acknowledged write.
//!
//! A refilling node takes writes but serves no reads: until its partitions
//! are copied from every other replica, a QUORUM read is answered by the
//! replicas that kept their data or fails with 503, never with a 404 or an
//! older value. At the end every acknowledged record is read back at ALL.
//!
//! The scenarios run one at a time: each is a whole cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ringup_proto::NodeId;
use ringup_proto::rpc::{Request, Response};
use ringup_tests::TestCluster;
use ringup_tests::load::{Ledger, Load, LoadSpec, lost_records};
use serde_json::Value;
use tokio::sync::Mutex;

const SPEC: LoadSpec = LoadSpec { shops: 100, writers: 20, batch: 20, level: "quorum", read_back: false };
/// A smaller ring than the default, as in the membership tests.
const PARTITIONS: u32 = 256;
/// The longest a refill may take before the test fails.
const HEAL_TIMEOUT: Duration = Duration::from_secs(120);

static SERIAL: Mutex<()> = Mutex::const_new(());

/// How the QUORUM reads of every acknowledged record came out.
#[derive(Debug, Default)]
struct Reads {
    /// The acknowledged value, or a newer one.
    latest: usize,
    /// 503: too few replicas could answer.
    unavailable: usize,
    /// 404: the record was not found.
    missing: Vec<String>,
    /// An older value than acknowledged.
    stale: Vec<String>,
    /// Anything else.
    other: Vec<String>,
}

/// Reads every acknowledged record at `level` and sorts the answers.
async fn read_every(cluster: &TestCluster, acked: &BTreeMap<(String, String), i64>, level: &str) -> Reads {
    let base = cluster.layout.router_url();
    let reads = acked.iter().map(|((shop, id), expected)| {
        let url = format!("{base}/v1/shops/{shop}/sales/{id}?consistency={level}");
        let http = cluster.http().clone();
        async move {
            let answer = http.get(&url).send().await;
            let (status, body) = match answer {
                Ok(r) => (r.status().as_u16(), r.json::<Value>().await.unwrap_or_default()),
                Err(e) => (0, Value::from(e.to_string())),
            };
            (format!("{shop}/{id}: {status} {body}, acknowledged v={expected}"), status, body["v"].as_i64(), *expected)
        }
    });
    let mut out = Reads::default();
    let mut answers = futures::stream::iter(reads).buffer_unordered(32);
    while let Some((what, status, value, expected)) = answers.next().await {
        match (status, value) {
            (200, Some(v)) if v >= expected => out.latest += 1,
            (200, _) => out.stale.push(what),
            (503, _) => out.unavailable += 1,
            (404, _) => out.missing.push(what),
            _ => out.other.push(what),
        }
    }
    out
}

impl Reads {
    fn print(&self, when: &str) {
        println!(
            "{when}: {} latest, {} unavailable (503), {} missing (404), {} stale, {} other",
            self.latest,
            self.unavailable,
            self.missing.len(),
            self.stale.len(),
            self.other.len()
        );
    }

    /// Fails unless every read gave the latest value or, if `may_fail`, a 503.
    fn check(&self, may_fail: bool) {
        let few = |v: &[String]| v.iter().take(5).cloned().collect::<Vec<_>>().join("\n");
        assert!(self.missing.is_empty(), "acknowledged records read as missing:\n{}", few(&self.missing));
        assert!(self.stale.is_empty(), "acknowledged records read with an older value:\n{}", few(&self.stale));
        assert!(self.other.is_empty(), "reads that failed otherwise:\n{}", few(&self.other));
        assert!(may_fail || self.unavailable == 0, "{} reads answered 503", self.unavailable);
    }
}

/// Kills node `n`, deletes its data directory and starts it again on the
/// same address with the same id.
async fn wipe(cluster: &TestCluster, n: usize) {
    cluster.kill_node(n).await;
    let dir = cluster.layout.dir.join(format!("node-{n}"));
    std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("cannot delete {}: {e}", dir.display()));
    cluster.start_node(n).await;
}

/// The refill of `node` as `GET /v1/cluster` shows it; `null` when none.
async fn refill_of(cluster: &TestCluster, node: usize) -> Value {
    let (_, view) = cluster.get("/v1/cluster").await;
    let nodes = view["nodes"].as_array().cloned().unwrap_or_default();
    nodes.into_iter().find(|n| n["id"] == node).map(|n| n["refill"].clone()).unwrap_or_default()
}

/// Waits until the router shows node `node` refilling; returns how many
/// partitions it refills.
async fn wait_refilling(cluster: &TestCluster, node: usize) -> u64 {
    let started = Instant::now();
    loop {
        let refill = refill_of(cluster, node).await;
        if let Some(total) = refill["partitions_total"].as_u64() {
            return total;
        }
        assert!(started.elapsed() < HEAL_TIMEOUT, "node {node} never showed as refilling:\n{}", cluster.logs().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until node `node` has no refill left; returns how long it took.
async fn wait_refilled(cluster: &TestCluster, node: usize) -> Duration {
    let started = Instant::now();
    while !refill_of(cluster, node).await.is_null() {
        assert!(started.elapsed() < HEAL_TIMEOUT, "node {node} is still refilling:\n{}", cluster.logs().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// Acknowledged writes and failed batches so far.
async fn counts(ledger: &Mutex<Ledger>) -> (usize, usize) {
    let l = ledger.lock().await;
    (l.acked_writes, l.failures.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_refilled_and_no_quorum_read_goes_back_in_time() {
    let _serial = SERIAL.lock().await;
    let cluster = Arc::new(TestCluster::start_sized(3, Some(PARTITIONS)).await);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let load = Load::start(cluster.http(), &cluster.layout.router_url(), SPEC, &ledger);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Node 1 misses writes: the newest live on nodes 2 and 3 only.
    cluster.kill_node(1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.start_node(1).await;
    cluster.wait_node_live(1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Node 2 loses its disk and comes back empty; shortly after, node 3 stops.
    wipe(&cluster, 2).await;
    let partitions = wait_refilling(&cluster, 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill_node(3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    load.stop().await;
    let (acked_writes, failures) = counts(&ledger).await;
    let acked = ledger.lock().await.acked.clone();

    // Nodes 1 (lagging) and 2 (refilling) are up: every QUORUM read gives
    // the latest value or 503, never 404 or an older value.
    let while_refilling = read_every(&cluster, &acked, "quorum").await;
    while_refilling.print("QUORUM reads with node 2 refilling and node 3 down");
    while_refilling.check(true);

    // Node 3 back: node 2 copies from it and from node 1, then serves.
    cluster.start_node(3).await;
    let healed = wait_refilled(&cluster, 2).await;
    println!("node 2 refilled {partitions} partitions in {:.1} s after node 3 came back", healed.as_secs_f64());
    cluster.kill_node(3).await;
    let from_1_and_2 = read_every(&cluster, &acked, "quorum").await;
    from_1_and_2.print("QUORUM reads from nodes 1 and 2 after the refill, node 3 down");
    from_1_and_2.check(false);

    cluster.start_node(3).await;
    cluster.wait_node_live(3).await;
    let lost = lost_records(cluster.http(), &cluster.layout.router_url(), &acked, "all").await;
    println!(
        "wiped node refilled: {acked_writes} record writes acknowledged, {failures} QUORUM write failures, \
         {} records read back at ALL, {} lost",
        acked.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged records lost:\n{}", lost.join("\n"));
    assert!(cluster.stop_all().await.is_empty());
}

/// What each node said of the metadata group: term → the leaders named in
/// it.
type Terms = BTreeMap<u64, BTreeSet<NodeId>>;

/// Asks every node for its term and leader every 50 ms until `stop`.
async fn watch_terms(cluster: Arc<TestCluster>, stop: Arc<std::sync::atomic::AtomicBool>) -> Terms {
    let mut terms = Terms::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for n in 1..=3 {
            let client = ringup_rpc::Client::new(cluster.node_addr(n).await.to_string());
            if let Ok(Response::Stats(stats)) = client.call(Request::Stats, Duration::from_millis(200)).await
                && let Some(leader) = stats.raft_leader
            {
                terms.entry(stats.raft_term).or_default().insert(leader);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    terms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_leaders_node_wiped_rejoins_without_a_second_leader() {
    let _serial = SERIAL.lock().await;
    let cluster = Arc::new(TestCluster::start_sized(3, Some(PARTITIONS)).await);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let load = Load::start(cluster.http(), &cluster.layout.router_url(), SPEC, &ledger);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let terms = tokio::spawn(watch_terms(cluster.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let leader = cluster.leader_seen_by(1).await.expect("a metadata leader") as usize;
    let before = cluster.map_from(&[1, 2, 3]).await;
    wipe(&cluster, leader).await;
    let partitions = wait_refilling(&cluster, leader).await;
    let healed = wait_refilled(&cluster, leader).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.stop().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let terms = terms.await.expect("the watcher ends");
    let after = cluster.map_from(&[leader]).await;

    let (acked_writes, failures) = counts(&ledger).await;
    let acked = ledger.lock().await.acked.clone();
    let lost = lost_records(cluster.http(), &cluster.layout.router_url(), &acked, "all").await;
    println!(
        "metadata leader (node {leader}) wiped: refilled {partitions} partitions in {:.1} s; terms seen {:?}; \
         map epoch {} -> {} on the wiped node; {acked_writes} record writes acknowledged, {failures} QUORUM \
         write failures, {} lost",
        healed.as_secs_f64(),
        terms,
        before.epoch,
        after.epoch,
        lost.len()
    );
    let doubled: Vec<_> = terms.iter().filter(|(_, leaders)| leaders.len() > 1).collect();
    assert!(doubled.is_empty(), "terms with more than one leader: {doubled:?}");
    assert!(terms.keys().count() >= 2, "a new leader was elected: {terms:?}");
    assert!(after.epoch > before.epoch, "the wiped node holds the cluster's map, not a new one");
    assert_eq!(after.cluster_id, before.cluster_id, "the same cluster");
    assert!(after.refills.is_empty(), "no refill left");
    assert!(lost.is_empty(), "acknowledged records lost:\n{}", lost.join("\n"));
    assert!(cluster.stop_all().await.is_empty());
}
