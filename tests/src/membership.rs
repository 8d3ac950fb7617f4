//! Helpers of the membership tests: membership changes through the HTTP
//! API, waiting for them with their figures, and the checks that follow
//! every scenario (each node holds exactly the partitions the map gives it,
//! the load is balanced).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ringup_proto::NodeId;
use ringup_proto::cluster::{ClusterMap, MemberState};
use ringup_proto::ring::PartitionId;
use ringup_proto::rpc::{Request, Response};
use serde_json::{Value, json};

use crate::TestCluster;

/// How long a test waits for one membership change.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(240);

/// What a finished change cost, as `GET /v1/cluster` showed it last.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChangeFigures {
    /// From the request to the end of the change.
    pub duration: Duration,
    /// Bytes of SST files streamed.
    pub bytes: u64,
    /// Records streamed.
    pub records: u64,
    /// Partitions moved.
    pub partitions: u64,
}

impl std::fmt::Display for ChangeFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1}s, {} partitions moved, {:.2} MiB and {} records streamed",
            self.duration.as_secs_f64(),
            self.partitions,
            self.bytes as f64 / (1 << 20) as f64,
            self.records
        )
    }
}

impl TestCluster {
    /// `POST /v1/cluster/nodes` for the node at `addr`; returns its id.
    pub async fn add_node(&self, addr: &str) -> NodeId {
        let (status, body) = self.post_json("/v1/cluster/nodes", &json!({ "addr": addr })).await;
        assert_eq!(status, 202, "adding {addr}: {body}");
        body["id"].as_u64().unwrap_or_else(|| panic!("no id in {body}"))
    }

    /// Sends an admin request that must be accepted with 202.
    pub async fn admin(&self, method: reqwest::Method, path: &str) -> Value {
        let (status, body) = self.call(method, path, None, Vec::new()).await;
        assert_eq!(status, 202, "{path}: {body}");
        body
    }

    /// Waits until no change is in flight, keeping the last progress seen.
    pub async fn wait_change(&self, started: Instant) -> ChangeFigures {
        let mut figures = ChangeFigures::default();
        loop {
            let (_, cluster) = self.get("/v1/cluster").await;
            let summary = &cluster["migration_summary"];
            if summary.is_null() {
                figures.duration = started.elapsed();
                let last = &cluster["last_migration"];
                figures.bytes = last["bytes_moved"].as_u64().unwrap_or(0);
                figures.records = last["records_moved"].as_u64().unwrap_or(0);
                figures.partitions = last["partitions_done"].as_u64().unwrap_or(0);
                return figures;
            }
            figures.bytes = summary["bytes_moved"].as_u64().unwrap_or(0);
            figures.records = summary["records_moved"].as_u64().unwrap_or(0);
            figures.partitions = summary["partitions_done"].as_u64().unwrap_or(0);
            assert!(started.elapsed() < CHANGE_TIMEOUT, "the change did not finish: {summary}\n{}", self.logs().await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The cluster map, from the first node of `nodes` that answers.
    pub async fn map_from(&self, nodes: &[usize]) -> ClusterMap {
        for &n in nodes {
            let client = self.rpc(self.node_addr(n).await.to_string());
            let request = Request::GetMap { known_epoch: 0, wait_ms: 0 };
            if let Ok(Response::Map(map)) = client.call(request, Duration::from_secs(5)).await {
                return *map;
            }
        }
        panic!("no node of {nodes:?} gave its map");
    }

    /// The metadata group's leader, as node `n` knows it.
    pub async fn leader_seen_by(&self, n: usize) -> Option<NodeId> {
        let client = self.rpc(self.node_addr(n).await.to_string());
        match client.call(Request::Hello, Duration::from_secs(5)).await {
            Ok(Response::Hello { leader, .. }) => leader,
            _ => None,
        }
    }

    /// Waits until the router's summary shows at least `done` partitions
    /// moved; returns how many it showed.
    pub async fn wait_moved(&self, done: u64) -> u64 {
        let started = Instant::now();
        loop {
            let (_, cluster) = self.get("/v1/cluster").await;
            let moved = cluster["migration_summary"]["partitions_done"].as_u64().unwrap_or(0);
            if moved >= done {
                return moved;
            }
            assert!(!cluster["migration_summary"].is_null(), "the change ended before {done} partitions moved");
            assert!(started.elapsed() < CHANGE_TIMEOUT, "fewer than {done} partitions moved in time");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the router sees node `id` not answering.
    pub async fn wait_node_down(&self, id: NodeId) {
        let started = Instant::now();
        loop {
            let (_, cluster) = self.get("/v1/cluster").await;
            let down = cluster["nodes"].as_array().into_iter().flatten().any(|n| n["id"] == id && n["live"] == false);
            if down {
                return;
            }
            assert!(started.elapsed() < CHANGE_TIMEOUT, "the router still sees node {id} live");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The partitions node `n` holds any record of.
    pub async fn holdings(&self, n: usize) -> BTreeSet<PartitionId> {
        let client = self.rpc(self.node_addr(n).await.to_string());
        match client.call(Request::Holdings, Duration::from_secs(30)).await {
            Ok(Response::Holdings(held)) => held.into_iter().collect(),
            other => panic!("node {n} did not list its holdings: {other:?}"),
        }
    }

    /// Checks that every partition holding data is held by exactly its
    /// replica set under `map`, among `nodes` (harness number → node id),
    /// and that the replicated load of the members that hold data is
    /// balanced (max/mean ≤ 1.05). Returns the max/mean.
    pub async fn check_placement(&self, map: &ClusterMap, nodes: &BTreeMap<usize, NodeId>) -> f64 {
        assert!(map.moves.is_empty() && map.change.is_none(), "a change is still in flight");
        let mut holders: BTreeMap<PartitionId, BTreeSet<NodeId>> = BTreeMap::new();
        for (&n, &id) in nodes {
            for p in self.holdings(n).await {
                holders.entry(p).or_default().insert(id);
            }
        }
        assert!(!holders.is_empty(), "no node holds any data");
        for (p, held) in &holders {
            let placed: BTreeSet<NodeId> = map.replicas(*p).iter().copied().collect();
            assert_eq!(held, &placed, "partition {p} is held by {held:?}, the map places it on {placed:?}");
        }
        let active: BTreeSet<NodeId> =
            map.members.values().filter(|m| m.state == MemberState::Up).map(|m| m.id).collect();
        let load = map.placement.as_ref().expect("a placement").load();
        let total: usize = load.values().sum();
        let max = active.iter().map(|n| load.get(n).copied().unwrap_or(0)).max().unwrap_or(0);
        let imbalance = max as f64 / (total as f64 / active.len() as f64);
        assert!(imbalance <= 1.05, "load {load:?} over {active:?}: max/mean {imbalance:.3}");
        assert!(load.keys().all(|n| active.contains(n)), "load {load:?} on a member not up");
        imbalance
    }
}
