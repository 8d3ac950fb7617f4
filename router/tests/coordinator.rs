//! The coordinator against fake nodes that speak the real RPC: a stale
//! epoch makes it fetch the newer map and route again, a replica that
//! never answers neither delays a quorum nor lets a write at ALL succeed,
//! reads ask only as many replicas as their level needs, and a read passes
//! over a replica that does not answer once the speculative delay is over.

use std::future::pending;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringup_proto::cluster::{ClusterMap, MapCommand};
use ringup_proto::consistency::Consistency;
use ringup_proto::rpc::{BadRequest, Request, Response, RpcError, StorageFault};
use ringup_proto::value::{StoredRecord, Version};
use ringup_router::coordinator::{Collection, CoordError, Coordinator, Speculation};
use ringup_router::view::ClusterView;
use ringup_rpc::{Handler, Pool, serve};
use tokio::net::TcpListener;

/// A node that holds a map and records the epochs of the writes it takes.
/// Its long-polls never deliver a newer map; only a direct ask does, so a
/// router learns of a new epoch only from a refused request.
struct FakeNode {
    map: Mutex<ClusterMap>,
    /// When set, the node answers nothing at all.
    hang: AtomicBool,
    /// When set, reads are answered only after a delay.
    slow_reads: AtomicBool,
    /// When set, reads are never answered.
    hang_reads: AtomicBool,
    /// How many reads it was asked.
    gets: AtomicUsize,
    /// When set, writes are refused.
    refuse_writes: AtomicBool,
    /// The one record value it holds, whatever the id.
    value: Mutex<Option<Vec<u8>>>,
    writes: Mutex<Vec<u64>>,
}

impl Handler for FakeNode {
    async fn handle(&self, request: Request) -> Response {
        if self.hang.load(Ordering::Relaxed) {
            pending::<()>().await;
        }
        match request {
            Request::Ping => Response::Pong { node: 0, epoch: self.epoch() },
            Request::GetMap { known_epoch, wait_ms } => {
                if wait_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let map = self.map.lock().unwrap().clone();
                if wait_ms > 0 && known_epoch > 0 {
                    // A long-poll from a router that has a map: say nothing new.
                    let mut same = map;
                    same.epoch = known_epoch;
                    return Response::Map(Box::new(same));
                }
                Response::Map(Box::new(map))
            }
            Request::Write { target, records } => {
                if target.epoch < self.epoch() {
                    return Response::Error(RpcError::StaleEpoch { current: self.epoch() });
                }
                if self.refuse_writes.load(Ordering::Relaxed) {
                    return Response::Error(RpcError::Storage(StorageFault::Engine));
                }
                self.writes.lock().unwrap().push(target.epoch);
                *self.value.lock().unwrap() = records.into_iter().next().map(|(_, v)| v.into_vec());
                Response::Written
            }
            Request::Get { .. } => {
                self.gets.fetch_add(1, Ordering::Relaxed);
                if self.hang_reads.load(Ordering::Relaxed) {
                    pending::<()>().await;
                }
                if self.slow_reads.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Response::Value(self.value.lock().unwrap().clone())
            }
            _ => Response::Error(RpcError::BadRequest(BadRequest::Unsupported)),
        }
    }
}

impl FakeNode {
    fn epoch(&self) -> u64 {
        self.map.lock().unwrap().epoch
    }
}

/// Three fake nodes sharing one map, and a coordinator that learned it.
async fn cluster() -> (Vec<Arc<FakeNode>>, Coordinator) {
    cluster_with(Speculation::default()).await
}

/// [`cluster`] with the given speculative delay for reads.
async fn cluster_with(speculation: Speculation) -> (Vec<Arc<FakeNode>>, Coordinator) {
    let listeners: Vec<TcpListener> = futures::future::join_all((0..3).map(|_| TcpListener::bind("127.0.0.1:0")))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let addrs: Vec<String> = listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
    let mut map = ClusterMap::default();
    let members = addrs.iter().enumerate().map(|(i, a)| (i as u64 + 1, a.clone())).collect();
    map.apply(&MapCommand::Bootstrap { partitions: 8, replication_factor: 3, members, cluster_id: 1 }).unwrap();
    let nodes: Vec<Arc<FakeNode>> = listeners
        .into_iter()
        .map(|listener| {
            let node = Arc::new(FakeNode {
                map: Mutex::new(map.clone()),
                hang: AtomicBool::default(),
                slow_reads: AtomicBool::default(),
                hang_reads: AtomicBool::default(),
                gets: AtomicUsize::default(),
                refuse_writes: AtomicBool::default(),
                value: Mutex::default(),
                writes: Mutex::default(),
            });
            tokio::spawn(serve(listener, node.clone(), pending()));
            node
        })
        .collect();
    let view = Arc::new(ClusterView::new(Arc::new(Pool::new()), addrs));
    tokio::spawn(view.clone().follow());
    while view.map().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (nodes, Coordinator::with_speculation(view, Duration::from_millis(500), speculation))
}

fn sales() -> Collection {
    Collection { shop: "shop-1".into(), collection: "sales".into() }
}

#[tokio::test]
async fn a_stale_epoch_makes_the_coordinator_fetch_the_map_and_route_again() {
    let (nodes, coordinator) = cluster().await;
    for node in &nodes {
        node.map.lock().unwrap().epoch = 2;
    }
    coordinator.write(&sales(), vec![("a".into(), vec![1])], Consistency::All).await.expect("the retry succeeds");
    for node in &nodes {
        assert_eq!(*node.writes.lock().unwrap(), [2], "each node took the write once, routed with epoch 2");
    }
}

#[tokio::test]
async fn a_silent_replica_neither_blocks_a_quorum_nor_passes_for_all() {
    let (nodes, coordinator) = cluster().await;
    nodes[2].hang.store(true, Ordering::Relaxed);
    coordinator.write(&sales(), vec![("a".into(), vec![1])], Consistency::Quorum).await.expect("two of three answer");
    let all = coordinator.write(&sales(), vec![("b".into(), vec![1])], Consistency::All).await;
    assert!(matches!(all, Err(CoordError::Unavailable { needed: 3, acked: 2, .. })), "{all:?}");
}

fn value(hlc: u64) -> Vec<u8> {
    StoredRecord { version: Version { hlc, origin: 1 }, ts: 0, tombstone: false, fields: vec![] }.encode()
}

#[tokio::test]
async fn a_quorum_read_whose_stale_replica_refuses_repair_repairs_the_silent_one() {
    let (nodes, coordinator) = cluster().await;
    *nodes[0].value.lock().unwrap() = Some(value(1));
    nodes[0].refuse_writes.store(true, Ordering::Relaxed);
    *nodes[1].value.lock().unwrap() = Some(value(2));
    nodes[2].slow_reads.store(true, Ordering::Relaxed);

    let record = coordinator.get(&sales(), "a", Consistency::Quorum).await.expect("the newest value reaches a quorum");
    assert_eq!(record.map(|r| r.version.hlc), Some(2));
    assert_eq!(*nodes[2].value.lock().unwrap(), Some(value(2)), "the replica that did not answer took the repair");
}

fn gets(nodes: &[Arc<FakeNode>]) -> usize {
    nodes.iter().map(|n| n.gets.swap(0, Ordering::Relaxed)).sum()
}

#[tokio::test]
async fn a_read_asks_only_as_many_replicas_as_its_level_needs() {
    // A speculative delay longer than any answer here: no extra asks.
    let patient = Speculation { floor: Duration::from_secs(5), ceiling: Duration::from_secs(5) };
    let (nodes, coordinator) = cluster_with(patient).await;
    for node in &nodes {
        *node.value.lock().unwrap() = Some(value(1));
    }
    for (level, each) in [(Consistency::One, 1), (Consistency::Quorum, 2), (Consistency::All, 3)] {
        for _ in 0..30 {
            let record = coordinator.get(&sales(), "a", level).await.expect("every replica answers");
            assert_eq!(record.map(|r| r.version.hlc), Some(1));
        }
        assert_eq!(gets(&nodes), 30 * each, "30 reads at {level} ask {each} replica(s) each");
    }
}

#[tokio::test]
async fn a_quorum_read_passes_over_a_silent_replica_after_the_speculative_delay() {
    // Without asking a third replica once the delay is over, every read
    // that asked the silent one would wait for the 500 ms deadline and fail.
    let quick = Speculation { floor: Duration::from_millis(20), ceiling: Duration::from_millis(100) };
    let (nodes, coordinator) = cluster_with(quick).await;
    for node in &nodes {
        *node.value.lock().unwrap() = Some(value(4));
    }
    nodes[1].hang_reads.store(true, Ordering::Relaxed);
    for i in 0..12 {
        let record = coordinator.get(&sales(), "a", Consistency::Quorum).await;
        assert_eq!(record.expect("two replicas answer").map(|r| r.version.hlc), Some(4), "read {i}");
    }
    assert!(nodes[1].gets.load(Ordering::Relaxed) > 0, "the silent replica was tried at least once");
}

#[tokio::test]
async fn a_read_whose_repairs_meet_a_newer_epoch_reads_again_under_it() {
    // The partition's routing changed after the read was routed: the stale
    // replica refuses the repair for its epoch. Answering 503 then would
    // fail a read that a quorum can serve; the coordinator fetches the
    // newer map and reads again.
    let quick = Speculation { floor: Duration::from_millis(20), ceiling: Duration::from_millis(100) };
    let (nodes, coordinator) = cluster_with(quick).await;
    *nodes[0].value.lock().unwrap() = Some(value(1));
    *nodes[1].value.lock().unwrap() = Some(value(2));
    *nodes[2].value.lock().unwrap() = Some(value(2));
    nodes[2].hang_reads.store(true, Ordering::Relaxed);
    for node in &nodes {
        node.map.lock().unwrap().epoch = 2;
    }
    let record = coordinator.get(&sales(), "a", Consistency::Quorum).await.expect("read again under epoch 2");
    assert_eq!(record.map(|r| r.version.hlc), Some(2));
    assert_eq!(*nodes[0].value.lock().unwrap(), Some(value(2)), "the stale replica took the repair");
    assert!(nodes[0].writes.lock().unwrap().iter().all(|e| *e == 2), "repairs routed with epoch 2");
}
