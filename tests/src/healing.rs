//! Helpers of the healing tests: whether the replicas of every partition
//! hold the same records, asked of the nodes themselves.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ringup_proto::NodeId;
use ringup_proto::rpc::{Request, Response};

use crate::TestCluster;

/// Per partition, whether every replica's digest is the same; returns how
/// many partitions differ (or could not be compared). Asks nodes 1 to 3.
pub async fn differing_partitions(cluster: &TestCluster) -> usize {
    let map = cluster.map_from(&[1, 2, 3]).await;
    let mut clients = BTreeMap::new();
    for n in 1..=3 {
        clients.insert(n as NodeId, cluster.rpc(cluster.node_addr(n).await.to_string()));
    }
    let mut differing = 0;
    for partition in 0..map.ring.partitions() {
        let mut digests = Vec::new();
        for node in map.replicas(partition) {
            let answer = clients[node].call(Request::PartitionDigest { partition }, Duration::from_secs(5)).await;
            digests.push(match answer {
                Ok(Response::Digest(d)) => Some(*d),
                _ => None,
            });
        }
        if digests.iter().any(Option::is_none) || digests.windows(2).any(|w| w[0] != w[1]) {
            differing += 1;
        }
    }
    differing
}

/// Waits until every partition's replicas hold equal digests; returns how
/// long that took. Fails the test past `limit`.
pub async fn wait_converged(cluster: &TestCluster, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let differing = differing_partitions(cluster).await;
        if differing == 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{differing} partitions still differ after {limit:?}:\n{}",
            cluster.logs().await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
