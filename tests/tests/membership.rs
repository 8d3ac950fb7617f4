//! Membership changes under load, with real processes on loopback.
//!
//! Throughout each scenario 20 writers write batches for 100 shops at
//! QUORUM and read one record of each acknowledged batch back at QUORUM,
//! recording every acknowledged write. After it, every acknowledged record
//! is read back at ALL with its latest value: none may be lost. Each
//! scenario prints its acknowledged writes, failures, lost records, and the
//! change's duration and bytes, then checks that every node holds exactly
//! the partitions the map gives it and that the load is balanced.
//!
//! The scenarios run one at a time: each is a whole cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use ringup_proto::NodeId;
use ringup_proto::rpc::{CollectionRef, Request, Response, RpcError};
use ringup_tests::TestCluster;
use ringup_tests::load::{self, Ledger, Load, LoadSpec};
use ringup_tests::membership::ChangeFigures;
use tokio::sync::Mutex;

const SPEC: LoadSpec = LoadSpec { shops: 100, writers: 20, batch: 20, level: "quorum", read_back: true };
/// A smaller ring than the default 1024: a join still moves 192
/// partitions, in a quarter of the time.
const PARTITIONS: u32 = 256;
/// Record writes acknowledged before and after each change, to see the
/// load in steady state (about 2 s of it here).
const STEADY: usize = 60_000;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// A cluster of three with the load running.
struct Scene {
    cluster: Arc<TestCluster>,
    ledger: Arc<Mutex<Ledger>>,
    load: Option<Load>,
    /// Harness number → node id, for every node that holds data.
    nodes: BTreeMap<usize, NodeId>,
}

impl Scene {
    async fn start() -> Self {
        Self::start_with(3).await
    }

    async fn start_with(n: usize) -> Self {
        let cluster = Arc::new(TestCluster::start_sized(n, Some(PARTITIONS)).await);
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let load = Load::start(cluster.http(), &cluster.layout.router_url(), SPEC, &ledger);
        load::wait_more(&ledger, STEADY, |l| l.acked_writes).await;
        let nodes = (1..=n).map(|n| (n, n as NodeId)).collect();
        Self { cluster, ledger, load: Some(load), nodes }
    }

    /// The ledger's counts now: acknowledged record writes, failed batches,
    /// failed reads.
    async fn counts(&self) -> (usize, usize, usize) {
        let l = self.ledger.lock().await;
        (l.acked_writes, l.failures.len(), l.read_failures.len())
    }

    /// Runs `change`, waits for the change it starts to finish, and prints
    /// the phase's figures; returns the write and read failures in it.
    async fn phase(&self, name: &str, change: impl std::future::Future<Output = ()>) -> (Vec<String>, ChangeFigures) {
        let before = self.counts().await;
        let started = Instant::now();
        change.await;
        let figures = self.cluster.wait_change(started).await;
        load::wait_more(&self.ledger, STEADY, |l| l.acked_writes).await;
        let after = self.counts().await;
        let l = self.ledger.lock().await;
        let failures: Vec<String> =
            l.failures[before.1..].iter().chain(&l.read_failures[before.2..]).cloned().collect();
        eprintln!(
            "{name}: acknowledged record writes {}, QUORUM write failures {}, QUORUM read failures {}; change {figures}",
            after.0 - before.0,
            after.1 - before.1,
            after.2 - before.2,
        );
        (failures, figures)
    }

    /// Stops the load, reads every acknowledged record back at ALL, checks
    /// placement and balance; prints the totals.
    async fn finish(mut self, name: &str) {
        self.load.take().expect("the load runs").stop().await;
        let acked = self.ledger.lock().await.acked.clone();
        let lost = load::lost_records(self.cluster.http(), &self.cluster.layout.router_url(), &acked, "all").await;
        let numbers: Vec<usize> = self.nodes.keys().copied().collect();
        let map = self.cluster.map_from(&numbers).await;
        let imbalance = self.cluster.check_placement(&map, &self.nodes).await;
        let l = self.ledger.lock().await;
        eprintln!(
            "{name}: {} records acknowledged ({} record writes, {} batches, {} reads), lost {}, load max/mean {imbalance:.3}",
            acked.len(),
            l.acked_writes,
            l.batches,
            l.reads,
            lost.len()
        );
        assert!(
            lost.is_empty(),
            "{} acknowledged records lost:\n{}",
            lost.len(),
            lost[..lost.len().min(10)].join("\n")
        );
        drop(l);
        let killed = self.cluster.stop_all().await;
        assert!(killed.is_empty(), "{killed:?} had to be killed");
    }
}

fn assert_none(failures: &[String], what: &str) {
    assert!(
        failures.is_empty(),
        "{what}: {} failures:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_joins_and_is_decommissioned_under_load() {
    let _serial = SERIAL.lock().await;
    let mut scene = Scene::start().await;
    let (n, addr) = scene.cluster.start_waiting_node().await;
    let cluster = scene.cluster.clone();
    let join = async {
        let id = cluster.add_node(&addr.to_string()).await;
        assert_eq!(id, 4, "the next free id");
    };
    let (failures, figures) = scene.phase("3 -> 4 join", join).await;
    assert_none(&failures, "the join");
    assert!(figures.partitions > 0 && figures.bytes > 0, "{figures}");
    scene.nodes.insert(n, 4);
    let (_, cluster_json) = scene.cluster.get("/v1/cluster").await;
    assert_eq!(cluster_json["migrations"], serde_json::json!([]));
    assert!(cluster_json["nodes"].as_array().unwrap().iter().all(|m| m["state"] == "up"), "{cluster_json}");

    let decommission = scene.cluster.admin(Method::DELETE, "/v1/cluster/nodes/4");
    let (failures, figures) = scene
        .phase("4 -> 3 decommission", async {
            decommission.await;
        })
        .await;
    assert_none(&failures, "the decommission");
    assert!(figures.partitions > 0, "{figures}");
    let (_, cluster_json) = scene.cluster.get("/v1/cluster").await;
    let node4 = cluster_json["nodes"].as_array().unwrap().iter().find(|m| m["id"] == 4).cloned().unwrap();
    assert_eq!(node4["state"], "removed", "{cluster_json}");
    assert_eq!(node4["partition_replicas"], 0);
    // The removed node holds nothing and refuses data requests.
    assert!(scene.cluster.holdings(n).await.is_empty(), "the decommissioned node still holds data");
    let map = scene.cluster.map_from(&[n]).await;
    let get = Request::Get {
        target: CollectionRef { epoch: map.epoch, partition: 0, shop: "s".into(), collection: "sales".into() },
        id: "r".into(),
    };
    let answer = scene.cluster.rpc(addr.to_string()).call(get, Duration::from_secs(5)).await;
    assert!(matches!(answer, Ok(Response::Error(RpcError::NotReplica { .. }))), "{answer:?}");
    assert!(scene.cluster.stop_node(n).await, "the removed node stops on SIGTERM");
    scene.nodes.remove(&n);
    scene.finish("join and decommission").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_join_at_once() {
    let _serial = SERIAL.lock().await;
    let mut scene = Scene::start().await;
    let (n4, addr4) = scene.cluster.start_waiting_node().await;
    let (n5, addr5) = scene.cluster.start_waiting_node().await;
    let cluster = scene.cluster.clone();
    let joins = async {
        let (addr4, addr5) = (addr4.to_string(), addr5.to_string());
        let (a, b) = tokio::join!(cluster.add_node(&addr4), cluster.add_node(&addr5));
        scene_ids(a, b);
    };
    let (failures, figures) = scene.phase("3 -> 5 two joins", joins).await;
    eprintln!("3 -> 5 two joins: {} failures", failures.len());
    assert!(figures.partitions > 0, "{figures}");
    let map = scene.cluster.map_from(&[1]).await;
    for (n, addr) in [(n4, addr4), (n5, addr5)] {
        let id = map.member_at(&addr.to_string()).expect("a member");
        scene.nodes.insert(n, id);
    }
    scene.finish("two joins").await;
}

fn scene_ids(a: NodeId, b: NodeId) {
    let mut ids = [a, b];
    ids.sort_unstable();
    assert_eq!(ids, [4, 5], "the next free ids");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_node_is_removed_and_its_partitions_copied_again() {
    let _serial = SERIAL.lock().await;
    let mut scene = Scene::start_with(4).await;
    scene.cluster.kill_node(4).await;
    scene.cluster.wait_node_down(4).await;
    let remove = scene.cluster.admin(Method::POST, "/v1/cluster/nodes/4/remove");
    let (failures, figures) = scene
        .phase("remove a dead node", async {
            remove.await;
        })
        .await;
    eprintln!("remove: {} failures while node 4 was dead", failures.len());
    assert!(figures.partitions > 0, "{figures}");
    scene.nodes.remove(&4);
    let map = scene.cluster.map_from(&[1, 2, 3]).await;
    for p in 0..map.ring.partitions() {
        let set = map.replicas(p);
        assert!(set.len() == 3 && !set.contains(&4), "partition {p} is on {set:?}");
    }
    scene.finish("remove").await;
}

/// The process a join loses halfway, SIGKILLed and started again.
#[derive(Clone, Copy)]
enum Victim {
    /// The joining node, in the middle of its streams.
    JoiningNode,
    /// The metadata leader, which drives the moves.
    Leader,
}

/// A join under load that loses `victim` after 30 partition moves and gets
/// it back after `down`: the moves resume and complete, nothing is lost.
async fn join_losing(victim: Victim, name: &str, down: Duration) {
    let _serial = SERIAL.lock().await;
    let mut scene = Scene::start().await;
    let (n, addr) = scene.cluster.start_waiting_node().await;
    let cluster = scene.cluster.clone();
    let (failures, figures) = scene
        .phase(name, async {
            cluster.add_node(&addr.to_string()).await;
            let moved = cluster.wait_moved(30).await;
            let killed = match victim {
                Victim::JoiningNode => n,
                Victim::Leader => cluster.leader_seen_by(1).await.expect("a leader") as usize,
            };
            cluster.kill_node(killed).await;
            eprintln!("{name}: killed node {killed} after {moved} partitions moved");
            tokio::time::sleep(down).await;
            cluster.start_node(killed).await;
        })
        .await;
    eprintln!("{name}: {} failures", failures.len());
    assert!(figures.partitions > 0, "{figures}");
    scene.nodes.insert(n, 4);
    scene.finish(name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joining_node_killed_while_streaming_resumes_its_moves() {
    join_losing(Victim::JoiningNode, "join, joining node killed", Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_metadata_leader_killed_during_a_move() {
    join_losing(Victim::Leader, "join, leader killed", Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_aborted_halfway_returns_to_the_old_placement() {
    let _serial = SERIAL.lock().await;
    let scene = Scene::start().await;
    let before = scene.cluster.map_from(&[1]).await;
    let (n, addr) = scene.cluster.start_waiting_node().await;
    let cluster = scene.cluster.clone();
    let (failures, _) = scene
        .phase("join aborted halfway", async {
            cluster.add_node(&addr.to_string()).await;
            let moved = cluster.wait_moved(60).await;
            cluster.admin(Method::POST, "/v1/cluster/migrations/abort").await;
            eprintln!("aborted after {moved} partitions moved");
        })
        .await;
    assert_none(&failures, "the aborted join");
    let after = scene.cluster.map_from(&[1]).await;
    assert_eq!(after.placement, before.placement, "the placement is the one before the join");
    assert_eq!(after.members[&4].state, ringup_proto::cluster::MemberState::Removed);
    assert!(scene.cluster.holdings(n).await.is_empty(), "the copied data is gone from the new node");
    assert!(scene.cluster.stop_node(n).await);
    scene.finish("aborted join").await;
}
