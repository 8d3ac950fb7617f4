//! The coordinator against fake nodes that speak the real RPC: a stale
//! epoch makes it fetch the newer map and route again, and a replica that
//! never answers neither delays a quorum nor lets a write at ALL succeed.

use std::future::pending;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringup_proto::cluster::{ClusterMap, MapCommand};
use ringup_proto::consistency::Consistency;
use ringup_proto::rpc::{Request, Response, RpcError};
use ringup_proto::value::{StoredRecord, Version};
use ringup_router::coordinator::{Collection, CoordError, Coordinator};
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
                    return Response::Error(RpcError::Storage("disk gone".into()));
                }
                self.writes.lock().unwrap().push(target.epoch);
                *self.value.lock().unwrap() = records.into_iter().next().map(|(_, v)| v);
                Response::Written
            }
            Request::Get { .. } => {
                if self.slow_reads.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Response::Value(self.value.lock().unwrap().clone())
            }
            _ => Response::Error(RpcError::BadRequest("not faked".into())),
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
    let listeners: Vec<TcpListener> = futures::future::join_all((0..3).map(|_| TcpListener::bind("127.0.0.1:0")))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let addrs: Vec<String> = listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
    let mut map = ClusterMap::default();
    let members = addrs.iter().enumerate().map(|(i, a)| (i as u64 + 1, a.clone())).collect();
    map.apply(&MapCommand::Bootstrap { partitions: 8, replication_factor: 3, members }).unwrap();
    let nodes: Vec<Arc<FakeNode>> = listeners
        .into_iter()
        .map(|listener| {
            let node = Arc::new(FakeNode {
                map: Mutex::new(map.clone()),
                hang: AtomicBool::default(),
                slow_reads: AtomicBool::default(),
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
    (nodes, Coordinator::new(view, Duration::from_millis(500)))
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
