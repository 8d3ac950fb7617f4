//! The node's background loops under paused time: whole nodes
//! ([`ringup_node::run_with`], the wiring the binary runs) on loopback in
//! one current-thread runtime whose clock only moves as tokio's paused time
//! does. Every loop (hint replay, anti-entropy and its tombstone drops, the
//! refill of a wiped node, the move driver) sleeps on that clock and reads
//! its age from it, so hours of a cluster's life pass in seconds and no
//! test waits on the wall clock.
//!
//! Paused time jumps to the next timer whenever every task waits. A call
//! whose answer is still on the wire (or in the storage writer's thread)
//! would then see its own timeout fire first; a ticker that sleeps 1 ms at
//! a time keeps the next timer at most 1 ms away, so time moves in small
//! steps and a timeout fires only when its time is truly spent.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ringup_node::config::Config;
use ringup_proto::cluster::{ClusterMap, MapCommand, MemberState};
use ringup_proto::hlc::Hlc;
use ringup_proto::moves::Stage;
use ringup_proto::rpc::{CollectionRef, Request, Response};
use ringup_proto::stats::NodeStats;
use ringup_proto::value::{Field, StoredRecord, Version};
use ringup_rpc::{Clock, Pool};
use serde_bytes::ByteBuf;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The wall clock the nodes' clock reads at the start: 2026-03-01.
const START_MS: u64 = 1_772_323_200_000;
/// How long a call from the test may take.
const CALL: Duration = Duration::from_secs(5);
/// How often a condition is looked at again.
const POLL: Duration = Duration::from_millis(100);
/// The shop every test writes for.
const SHOP: &str = "shop-1";

/// A cluster of in-process nodes on one paused clock.
struct Nodes {
    dir: TempDir,
    addrs: Vec<SocketAddr>,
    flags: Vec<String>,
    clock: Clock,
    pool: Pool,
    running: BTreeMap<usize, (CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    hlc: Hlc,
    ticker: JoinHandle<()>,
}

impl Nodes {
    /// Starts nodes 1 to `n`, the initial nodes, each given `flags` too,
    /// and waits until the map is ready and every node has applied it.
    async fn start(n: usize, flags: &[&str]) -> Self {
        let ticker = tokio::spawn(async {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let listeners: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a port")).collect();
        let addrs = listeners.iter().map(|l| l.local_addr().expect("an address")).collect();
        drop(listeners);
        let mut nodes = Self {
            dir: tempfile::tempdir().expect("a temp dir"),
            addrs,
            flags: flags.iter().map(ToString::to_string).collect(),
            clock: Clock::following_tokio(START_MS),
            pool: Pool::new(),
            running: BTreeMap::new(),
            hlc: Hlc::new(),
            ticker,
        };
        for id in 1..=n {
            nodes.run(id);
        }
        for id in 1..=n {
            nodes.until(&format!("node {id} has the map"), Duration::from_secs(120), || nodes.ready(id)).await;
        }
        nodes
    }

    fn data_dir(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    fn addr(&self, id: usize) -> String {
        self.addrs[id - 1].to_string()
    }

    /// The flags of initial node `id`, as the launcher gives them.
    fn config(&self, id: usize) -> Config {
        let initial: Vec<String> = self.addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let mut args: Vec<String> = vec![
            "ringup-node".into(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            self.addr(id),
            "--data-dir".into(),
            self.data_dir(id).display().to_string(),
            "--initial-nodes".into(),
            initial.join(","),
            "--partitions".into(),
            "8".into(),
            "--fsync".into(),
            "never".into(),
            "--insecure-no-tls".into(),
            "--insecure-no-encryption".into(),
        ];
        args.extend(self.flags.iter().cloned());
        Config::try_parse_from(args).expect("the flags parse")
    }

    /// Starts (or starts again) node `id`.
    fn run(&mut self, id: usize) {
        let stop = CancellationToken::new();
        let task = tokio::spawn(ringup_node::run_with(self.config(id), self.clock, stop.clone().cancelled_owned()));
        self.running.insert(id, (stop, task));
    }

    /// Stops node `id` as SIGTERM would.
    async fn stop(&mut self, id: usize) {
        let (stop, task) = self.running.remove(&id).expect("the node runs");
        stop.cancel();
        task.await.expect("the node's task").expect("the node stops cleanly");
    }

    /// Asks node `id`; `None` if it did not answer.
    async fn ask(&self, id: usize, request: Request) -> Option<Response> {
        self.pool.get(&self.addr(id)).call(request, CALL).await.ok()
    }

    async fn map(&self, id: usize) -> Option<ClusterMap> {
        match self.ask(id, Request::GetMap { known_epoch: 0, wait_ms: 0 }).await? {
            Response::Map(map) => Some(*map),
            _ => None,
        }
    }

    async fn ready(&self, id: usize) -> Option<ClusterMap> {
        self.map(id).await.filter(|m| m.is_ready() && m.moves.is_empty() && m.refills.is_empty())
    }

    async fn stats(&self, id: usize) -> NodeStats {
        match self.ask(id, Request::Stats).await {
            Some(Response::Stats(stats)) => *stats,
            other => panic!("node {id}'s stats: {other:?}"),
        }
    }

    /// Waits until `f` gives something, looking again every [`POLL`] of
    /// paused time; fails after `within` of it.
    async fn until<T, F: Future<Output = Option<T>>>(
        &self,
        what: &str,
        within: Duration,
        mut f: impl FnMut() -> F,
    ) -> T {
        let started = Instant::now();
        loop {
            if let Some(found) = f().await {
                return found;
            }
            assert!(started.elapsed() < within, "not within {within:?} of paused time: {what}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Where `SHOP`'s `collection` lives under node `id`'s map.
    async fn target(&self, id: usize, collection: &str) -> CollectionRef {
        let map = self.map(id).await.expect("the map");
        CollectionRef {
            epoch: map.epoch,
            partition: map.partition_of(SHOP),
            shop: SHOP.into(),
            collection: collection.into(),
        }
    }

    /// A record, or a deletion when `n` is `None`, versioned now.
    fn value(&mut self, n: Option<i64>) -> ByteBuf {
        let version = Version { hlc: self.hlc.tick(self.clock.wall_ms()), origin: 99 };
        let ts = self.clock.wall_ms() as i64;
        let record = match n {
            Some(n) => StoredRecord { version, ts, tombstone: false, fields: vec![("n".into(), Field::Int(n))] },
            None => StoredRecord::tombstone(version, ts),
        };
        ByteBuf::from(record.encode())
    }

    /// Writes `records` on the nodes `on` only, as a coordinator would
    /// with the others missing them.
    async fn write_on(&self, on: &[usize], target: &CollectionRef, records: &[(String, ByteBuf)]) {
        for id in on {
            let request = Request::Write { target: target.clone(), records: records.to_vec() };
            let answer = self.ask(*id, request).await;
            assert!(matches!(answer, Some(Response::Written)), "write on node {id}: {answer:?}");
        }
    }

    /// What node `id` holds of record `key` (a deletion too); `None` if it
    /// holds nothing or does not answer the read.
    async fn held(&self, id: usize, target: &CollectionRef, key: &str) -> Option<Vec<u8>> {
        let mut target = target.clone();
        target.epoch = self.map(id).await?.epoch;
        match self.ask(id, Request::Get { target, id: key.into() }).await? {
            Response::Value(value) => value,
            _ => None,
        }
    }

    /// The leader of the metadata group, as node 1 knows it.
    async fn leader(&self) -> usize {
        let leader = self
            .until("a leader", Duration::from_secs(60), move || async move { self.stats(1).await.raft_leader })
            .await;
        leader as usize
    }

    async fn shut_down(mut self) {
        for id in self.running.keys().copied().collect::<Vec<_>>() {
            self.stop(id).await;
        }
        self.ticker.abort();
    }
}

fn records(prefix: &str, n: usize, nodes: &mut Nodes) -> Vec<(String, ByteBuf)> {
    (0..n).map(|i| (format!("{prefix}-{i}"), nodes.value(Some(i as i64)))).collect()
}

#[tokio::test(start_paused = true)]
async fn a_hint_is_replayed_once_its_replica_answers_again() {
    let mut nodes = Nodes::start(3, &["--anti-entropy-mib-per-sec", "0"]).await;
    let target = nodes.target(1, "sales").await;
    nodes.stop(3).await;
    let written = records("hinted", 5, &mut nodes);
    nodes.write_on(&[1, 2], &target, &written).await;
    let hint = Request::Hint { for_node: 3, target: target.clone(), records: written.clone() };
    assert!(matches!(nodes.ask(1, hint).await, Some(Response::Written)));

    // Away for ten minutes: the hint waits, pinged for every second.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let pending = nodes.stats(1).await.healing.hints_pending;
    assert!(matches!(pending.as_slice(), [(3, bytes)] if *bytes > 0), "held for node 3: {pending:?}");

    nodes.run(3);
    let back = Instant::now();
    for (key, value) in &written {
        let got = nodes.until(key, Duration::from_secs(30), || nodes.held(3, &target, key)).await;
        assert_eq!(got, value.to_vec(), "{key} on node 3");
    }
    // The hint goes once node 3 acknowledged it.
    let n = &nodes;
    let replayed = move || async move { Some(n.stats(1).await.healing).filter(|h| h.hints_pending.is_empty()) };
    let healing = nodes.until("the hint removed", Duration::from_secs(30), replayed).await;
    assert_eq!((healing.hints_stored, healing.hints_replayed, healing.hints_dropped), (1, 1, 0));
    println!("node 3 had the hinted writes {:?} of paused time after it came back", back.elapsed());
    nodes.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn an_anti_entropy_pass_brings_a_replica_what_it_missed() {
    let interval = Duration::from_secs(60);
    let mut nodes = Nodes::start(3, &["--max-hint-mib", "0", "--anti-entropy-interval-secs", "60"]).await;
    let target = nodes.target(1, "sales").await;
    let written = records("missed", 20, &mut nodes);
    nodes.write_on(&[1], &target, &written).await;
    let passes_before = nodes.stats(2).await.healing;
    assert_eq!(nodes.held(2, &target, "missed-0").await, None, "node 2 missed the writes");

    let started = Instant::now();
    for id in [2, 3] {
        for (key, value) in &written {
            let got = nodes.until(key, 3 * interval, || nodes.held(id, &target, key)).await;
            assert_eq!(got, value.to_vec(), "{key} on node {id}");
        }
    }
    let healing = nodes.stats(2).await.healing;
    assert!(healing.passes > passes_before.passes, "a pass ran: {healing:?}");
    assert!(healing.pulled >= written.len() as u64, "node 2 pulled them: {healing:?}");
    println!("nodes 2 and 3 pulled 20 missed records within {:?} of paused time", started.elapsed());
    nodes.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn a_tombstone_is_dropped_once_its_grace_period_is_over() {
    let grace = Duration::from_secs(600);
    let flags = ["--max-hint-mib", "0", "--anti-entropy-interval-secs", "30", "--tombstone-grace-secs", "600"];
    let mut nodes = Nodes::start(3, &flags).await;
    let target = nodes.target(1, "sales").await;
    let written = records("kept", 3, &mut nodes);
    nodes.write_on(&[1, 2, 3], &target, &written).await;
    let deletion = vec![("kept-0".to_string(), nodes.value(None))];
    nodes.write_on(&[1, 2, 3], &target, &deletion).await;
    let deleted = Instant::now();

    // Within the grace period every replica keeps the deletion, however
    // many passes agree on it.
    tokio::time::sleep(grace - Duration::from_secs(60)).await;
    for id in 1..=3 {
        assert_eq!(nodes.held(id, &target, "kept-0").await, Some(deletion[0].1.to_vec()), "node {id}");
        assert_eq!(nodes.stats(id).await.healing.tombstones_dropped, 0, "node {id}");
    }
    // After it, each replica's next agreeing pass drops it; the records
    // beside it stay.
    let (n, t) = (&nodes, &target);
    for id in 1..=3 {
        let gone = move || async move { n.held(id, t, "kept-0").await.is_none().then_some(()) };
        nodes.until("the deletion dropped", Duration::from_secs(300), gone).await;
        assert_eq!(nodes.stats(id).await.healing.tombstones_dropped, 1, "node {id}");
        assert_eq!(nodes.held(id, &target, "kept-1").await, Some(written[1].1.to_vec()), "node {id}");
    }
    let after = deleted.elapsed();
    assert!(after >= grace, "dropped after {after:?}, before the grace of {grace:?}");
    println!("the deletion was dropped on every replica {after:?} of paused time after it was written");
    nodes.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn a_wiped_node_is_refilled_from_the_others() {
    let mut nodes = Nodes::start(3, &["--max-hint-mib", "0", "--anti-entropy-mib-per-sec", "0"]).await;
    let target = nodes.target(1, "sales").await;
    let written = records("kept", 30, &mut nodes);
    nodes.write_on(&[1, 2, 3], &target, &written).await;
    let epoch = nodes.map(1).await.expect("the map").epoch;

    nodes.stop(3).await;
    std::fs::remove_dir_all(nodes.data_dir(3)).expect("node 3's directory wiped");
    nodes.run(3);
    let started = Instant::now();
    // A refilling node serves no reads: each read that answers shows the
    // refill over.
    for (key, value) in &written {
        let got = nodes.until(key, Duration::from_secs(300), || nodes.held(3, &target, key)).await;
        assert_eq!(got, value.to_vec(), "{key} on node 3");
    }
    let map = nodes.until("the map without refills", Duration::from_secs(30), || nodes.ready(1)).await;
    assert!(map.epoch > epoch, "the refill went through the map: epoch {} after {epoch}", map.epoch);
    println!("the wiped node 3 was refilled with 30 records in {:?} of paused time", started.elapsed());
    nodes.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn a_switched_move_waits_out_its_settle_time_before_cleanup() {
    let settle = Duration::from_secs(20);
    let flags = ["--move-settle-ms", "20000", "--anti-entropy-mib-per-sec", "0"];
    let mut nodes = Nodes::start(4, &flags).await;
    let target = nodes.target(1, "sales").await;
    let written = records("moved", 10, &mut nodes);
    let map = nodes.map(1).await.expect("the map");
    let replicas: Vec<usize> = map.replicas(target.partition).iter().map(|n| *n as usize).collect();
    nodes.write_on(&replicas, &target, &written).await;

    // Node 4 leaves: its partitions move to the others.
    let leader = nodes.leader().await;
    let leave = MapCommand::Decommission { id: 4, at_ms: nodes.clock.wall_ms() as i64 };
    let answer = nodes.ask(leader, Request::Propose { command: leave }).await;
    assert!(matches!(answer, Some(Response::Proposed { .. })), "{answer:?}");

    // Follow the map: when each partition's move switched to use-new and
    // when it went on to cleanup (or ended).
    let (mut switched, mut cleaned): (BTreeMap<u32, Instant>, BTreeMap<u32, Instant>) = Default::default();
    let mut known = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = loop {
        assert!(Instant::now() < deadline, "the decommission did not end: switched {switched:?}");
        let Some(Response::Map(map)) = nodes.ask(1, Request::GetMap { known_epoch: known, wait_ms: 1000 }).await else {
            continue;
        };
        known = map.epoch;
        let now = Instant::now();
        for (p, m) in &map.moves {
            if m.stage == Stage::UseNew {
                switched.entry(*p).or_insert(now);
            }
            if m.stage == Stage::Cleanup {
                cleaned.entry(*p).or_insert(now);
            }
        }
        for p in switched.keys() {
            if !map.moves.contains_key(p) {
                cleaned.entry(*p).or_insert(now);
            }
        }
        let left = map.members.get(&4).is_some_and(|m| m.state == MemberState::Removed);
        if map.moves.is_empty() && !switched.is_empty() && left {
            break map;
        }
    };
    assert!(done.members.values().filter(|m| m.id != 4).all(|m| m.state == MemberState::Up), "{:?}", done.members);
    for (p, at) in &switched {
        let waited = cleaned[p] - *at;
        assert!(waited >= settle - POLL, "partition {p} went to cleanup {waited:?} after use-new, before {settle:?}");
    }
    for (key, value) in &written {
        for id in [1, 2, 3] {
            assert_eq!(nodes.held(id, &target, key).await, Some(value.to_vec()), "{key} on node {id}");
        }
    }
    println!("{} moves each waited at least {settle:?} of paused time in use-new before cleanup", switched.len());
    nodes.shut_down().await;
}
