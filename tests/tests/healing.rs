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
use ringup_tests::healing::wait_converged;
use ringup_tests::load::{Ledger, Load, LoadSpec, lost_records, wait_more};
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

/// Record writes acknowledged, for [`wait_more`].
fn acked(l: &Ledger) -> usize {
    l.acked_writes
}

/// Batches answered, acknowledged or not, for [`wait_more`].
fn answered(l: &Ledger) -> usize {
    l.batches
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
    wait_more(&ledger, 100_000, acked).await;

    // Node 1 misses writes: the newest live on nodes 2 and 3 only.
    cluster.kill_node(1).await;
    wait_more(&ledger, 200_000, acked).await;
    cluster.start_node(1).await;
    cluster.wait_node_serving(1).await;
    cluster.wait_node_live(1).await;
    wait_more(&ledger, 50_000, acked).await;

    // Node 2 loses its disk and comes back empty; soon after, node 3 stops.
    wipe(&cluster, 2).await;
    let partitions = wait_refilling(&cluster, 2).await;
    wait_more(&ledger, 50_000, acked).await;
    cluster.kill_node(3).await;
    // With node 2 refilling and node 3 down, writes may fail: what counts
    // is that batches were sent.
    wait_more(&ledger, 200, answered).await;
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
    cluster.wait_node_serving(3).await;
    cluster.wait_node_live(3).await;
    let lost = lost_records(cluster.http(), &cluster.layout.router_url(), &acked, "all").await;
    println!(
        "wiped node refilled: {acked_writes} record writes acknowledged, {failures} QUORUM write failures, \
         {} records read back at ALL, {} lost",
        acked.len(),
        lost.len()
    );
    let few = lost.iter().take(5).cloned().collect::<Vec<_>>().join("\n");
    assert!(lost.is_empty(), "acknowledged records lost:\n{few}\n{}", cluster.logs().await);
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
            let client = cluster.rpc(cluster.node_addr(n).await.to_string());
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
    wait_more(&ledger, 100_000, acked).await;

    let leader = cluster.leader_seen_by(1).await.expect("a metadata leader") as usize;
    let before = cluster.map_from(&[1, 2, 3]).await;
    wipe(&cluster, leader).await;
    let partitions = wait_refilling(&cluster, leader).await;
    let healed = wait_refilled(&cluster, leader).await;
    wait_more(&ledger, 50_000, acked).await;
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

/// The sum of a figure over every node's stats.
async fn total(cluster: &TestCluster, figure: impl Fn(&ringup_proto::stats::NodeStats) -> u64) -> u64 {
    let mut sum = 0;
    for n in 1..=3 {
        let client = cluster.rpc(cluster.node_addr(n).await.to_string());
        if let Ok(Response::Stats(stats)) = client.call(Request::Stats, Duration::from_secs(2)).await {
            sum += figure(&stats);
        }
    }
    sum
}

/// A node down for `down` under a load at `level`, then back once the load
/// has stopped, with no client reads: how long from its start until its
/// partitions converge.
async fn down_then_converge(cluster: &TestCluster, spec: LoadSpec, down: Duration) -> (Arc<Mutex<Ledger>>, Duration) {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let load = Load::start(cluster.http(), &cluster.layout.router_url(), spec, &ledger);
    wait_more(&ledger, 50_000, acked).await;
    cluster.kill_node(3).await;
    tokio::time::sleep(down).await;
    // The load stops first: its writes would otherwise rewrite every record
    // on node 3 directly.
    load.stop().await;
    let back = Instant::now();
    cluster.start_node(3).await;
    wait_converged(cluster, Duration::from_secs(120)).await;
    (ledger, back.elapsed())
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() as u64
}

/// Waits until each of `nodes` has finished a whole anti-entropy pass that
/// began after `after_ms` (wall clock): the pass that follows the first
/// one to end after it.
async fn wait_pass_begun_after(cluster: &TestCluster, nodes: &[usize], after_ms: u64) {
    let started = Instant::now();
    for &n in nodes {
        let client = cluster.rpc(cluster.node_addr(n).await.to_string());
        let mut ended_after = None;
        loop {
            if let Ok(Response::Stats(stats)) = client.call(Request::Stats, Duration::from_secs(2)).await {
                let h = &stats.healing;
                if h.last_pass_ms.is_some_and(|t| t > after_ms) {
                    match ended_after {
                        None => ended_after = Some(h.passes),
                        Some(first) if h.passes > first => break,
                        Some(_) => {}
                    }
                }
            }
            assert!(started.elapsed() < HEAL_TIMEOUT, "node {n} ran no anti-entropy pass after the grace");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until no node holds hints; returns how long that took.
async fn wait_hints_replayed(cluster: &TestCluster) -> Duration {
    let started = Instant::now();
    loop {
        let pending = total(cluster, |s| s.healing.hints_pending.iter().map(|(_, b)| b).sum()).await;
        if pending == 0 {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{pending} bytes of hints still pending");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_bring_a_node_back_up_to_date_without_reads() {
    let _serial = SERIAL.lock().await;
    // Anti-entropy off: what converges the copies here is the hints.
    let cluster = TestCluster::start_with(3, Some(PARTITIONS), &["--anti-entropy-mib-per-sec", "0"]).await;
    let (ledger, converged) = down_then_converge(&cluster, SPEC, Duration::from_secs(20)).await;
    wait_hints_replayed(&cluster).await;
    let stored = total(&cluster, |s| s.healing.hints_stored).await;
    let replayed = total(&cluster, |s| s.healing.hints_replayed).await;
    let (acked_writes, failures) = counts(&ledger).await;
    let acked = ledger.lock().await.acked.clone();
    let lost = lost_records(cluster.http(), &cluster.layout.router_url(), &acked, "all").await;
    println!(
        "hints: node 3 down 20 s under load; {acked_writes} record writes acknowledged, {failures} QUORUM write \
         failures; {stored} hints kept, {replayed} replayed; every partition's replicas equal {:.1} s after it was \
         started again, with no reads; {} lost",
        converged.as_secs_f64(),
        lost.len()
    );
    assert!(replayed > 0 && replayed == stored, "every hint kept was replayed: {replayed} of {stored}");
    assert!(lost.is_empty(), "acknowledged records lost:\n{}", lost.join("\n"));
    assert!(cluster.stop_all().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_alone_brings_a_node_back_up_to_date_without_reads() {
    let _serial = SERIAL.lock().await;
    // Hints off: what converges the copies here is anti-entropy.
    let args = ["--max-hint-mib", "0", "--anti-entropy-interval-secs", "1"];
    let cluster = TestCluster::start_with(3, Some(PARTITIONS), &args).await;
    let spec = LoadSpec { level: "one", ..SPEC };
    let (ledger, converged) = down_then_converge(&cluster, spec, Duration::from_secs(5)).await;
    let stored = total(&cluster, |s| s.healing.hints_stored).await;
    let pulled = total(&cluster, |s| s.healing.pulled).await;
    let (acked_writes, failures) = counts(&ledger).await;
    let acked = ledger.lock().await.acked.clone();
    let lost = lost_records(cluster.http(), &cluster.layout.router_url(), &acked, "all").await;
    println!(
        "anti-entropy alone: node 3 cut off 5 s under writes at ONE; {acked_writes} record writes acknowledged, \
         {failures} failures; {stored} hints kept; {pulled} records pulled; every partition's replicas equal \
         {:.1} s after it was started again, with no reads; {} lost",
        converged.as_secs_f64(),
        lost.len()
    );
    assert_eq!(stored, 0, "hints are off");
    assert!(pulled > 0, "anti-entropy pulled what node 3 missed");
    assert!(lost.is_empty(), "acknowledged records lost:\n{}", lost.join("\n"));
    assert!(cluster.stop_all().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_stay_deleted_when_a_replica_that_missed_them_returns_after_the_grace() {
    let _serial = SERIAL.lock().await;
    // Hints off, so that node 3 comes back holding the deleted values; a
    // grace of 2 s, long past when it returns.
    let args = ["--max-hint-mib", "0", "--anti-entropy-interval-secs", "1", "--tombstone-grace-secs", "2"];
    let cluster = TestCluster::start_with(3, Some(PARTITIONS), &args).await;
    let ids: Vec<String> = (0..400).map(|i| format!("r{i:04}")).collect();
    for chunk in ids.chunks(100) {
        let records: Vec<Value> = chunk.iter().map(|id| serde_json::json!({"id": id, "n": 1})).collect();
        let (status, _) = cluster.post_json("/v1/shops/del-shop/sales", &Value::Array(records)).await;
        assert_eq!(status, 200);
    }
    wait_converged(&cluster, Duration::from_secs(60)).await;
    cluster.kill_node(3).await;
    let deleted: Vec<&String> = ids.iter().step_by(2).collect();
    for id in &deleted {
        let url = cluster.url(&format!("/v1/shops/del-shop/sales/{id}"));
        let status = cluster.http().delete(url).send().await.expect("DELETE").status();
        assert_eq!(status, 204, "delete {id}");
    }
    // Past the grace on nodes 1 and 2 while node 3 is away: each runs a
    // whole anti-entropy pass after the grace of the last delete is over.
    let grace_over_ms = wall_ms() + 2000;
    wait_pass_begun_after(&cluster, &[1, 2], grace_over_ms).await;
    let dropped_while_away = total(&cluster, |s| s.healing.tombstones_dropped).await;
    cluster.start_node(3).await;
    cluster.wait_node_serving(3).await;
    let converged = wait_converged(&cluster, Duration::from_secs(60)).await;
    // Long enough for every node to agree and then drop the tombstones.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dropped = 0;
    while Instant::now() < deadline {
        dropped = total(&cluster, |s| s.healing.tombstones_dropped).await;
        if dropped >= 3 * deleted.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut back = Vec::new();
    for id in &ids {
        let (status, body) = cluster.get(&format!("/v1/shops/del-shop/sales/{id}?consistency=all")).await;
        let expected = if deleted.contains(&id) { 404 } else { 200 };
        if status.as_u16() != expected {
            back.push(format!("{id}: {status} {body}"));
        }
    }
    println!(
        "deletes: {} of {} records deleted while node 3 was down; {dropped_while_away} tombstones dropped while it \
         was away; copies equal {:.1} s after it returned; {dropped} tombstones dropped after; {} records wrong",
        deleted.len(),
        ids.len(),
        converged.as_secs_f64(),
        back.len()
    );
    assert_eq!(dropped_while_away, 0, "no tombstone may go while a replica that lacks it is away");
    assert!(back.is_empty(), "deleted records came back, or kept ones went:\n{}", back.join("\n"));
    assert_eq!(dropped, 3 * deleted.len() as u64, "every replica dropped every tombstone once safe");
    assert!(cluster.stop_all().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_stamped_too_far_ahead_is_refused() {
    let _serial = SERIAL.lock().await;
    let cluster = TestCluster::start_sized(3, Some(PARTITIONS)).await;
    let map = cluster.map_from(&[1]).await;
    let partition = map.partition_of("skew-shop");
    let node = map.replicas(partition)[0] as usize;
    let client = cluster.rpc(cluster.node_addr(node).await.to_string());
    let write = |ahead_ms: u64| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let version = ringup_proto::value::Version { hlc: (now + ahead_ms) << 16, origin: 9 };
        let value = ringup_proto::value::StoredRecord::tombstone(version, 0).encode();
        let target = ringup_proto::rpc::CollectionRef {
            epoch: map.epoch,
            partition,
            shop: "skew-shop".into(),
            collection: "sales".into(),
        };
        Request::Write { target, records: vec![("r".into(), serde_bytes::ByteBuf::from(value))] }
    };
    let far = client.call(write(60_000), Duration::from_secs(5)).await;
    let near = client.call(write(1_000), Duration::from_secs(5)).await;
    let refusals = total(&cluster, |s| s.clock_skew_refusals).await;
    println!("clock skew: a version 60 s ahead answered {far:?}; 1 s ahead answered {near:?}; {refusals} refusals");
    assert!(
        matches!(far, Ok(Response::Error(ringup_proto::rpc::RpcError::ClockAhead { max_ms: 5_000, .. }))),
        "{far:?}"
    );
    assert!(matches!(near, Ok(Response::Written)), "{near:?}");
    assert_eq!(refusals, 1);
    assert!(cluster.stop_all().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_cluster_is_refused() {
    let _serial = SERIAL.lock().await;
    // Plain TCP: with TLS, the clusters' CAs would already keep the node
    // from speaking to the other cluster; the cluster id is checked here.
    let ours = TestCluster::start_with(3, Some(PARTITIONS), &["--insecure-no-tls"]).await;
    let theirs = TestCluster::start_with(3, Some(PARTITIONS), &["--insecure-no-tls"]).await;
    assert!(ours.stop_node(3).await);
    // Node 3's directory, started as node 3 of the other cluster.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
    let initial = format!("1={},2={},3={addr}", theirs.node_addr(1).await, theirs.node_addr(2).await);
    let mut node = tokio::process::Command::new(ringup_tests::bin_dir().join("ringup-node"));
    node.args(["--id", "3", "--listen", &addr.to_string(), "--initial-nodes", &initial, "--insecure-no-tls"])
        .arg("--data-dir")
        .arg(ours.layout.dir.join("node-3"))
        .arg("--data-key-file")
        .arg(ours.layout.data_key_file())
        .kill_on_drop(true);
    let out =
        tokio::time::timeout(Duration::from_secs(30), node.output()).await.expect("the node exits").expect("runs");
    let said = String::from_utf8_lossy(&out.stderr);
    let line = said.lines().find(|l| l.contains("belongs to cluster")).unwrap_or_default().to_string();
    println!("another cluster's data directory: exit {:?}, {line}", out.status.code());
    assert!(!out.status.success(), "the node must not start:\n{said}");
    assert!(!line.is_empty(), "the error names the clusters:\n{said}");
    assert!(ours.stop_all().await.is_empty());
    assert!(theirs.stop_all().await.is_empty());
}
