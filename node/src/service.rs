//! The node's RPC service: checks each data request's epoch, then reads or
//! writes storage.

use std::sync::Arc;
use std::time::Duration;

use ringup_proto::NodeId;
use ringup_proto::cluster::ClusterMap;
use ringup_proto::keys::{self, RecordKey};
use ringup_proto::rpc::{CollectionRef, Request, Response, RpcError};
use ringup_proto::value::Header;
use ringup_rpc::Handler;
use serde_bytes::ByteBuf;
use tokio::sync::watch;

use crate::raft::{self, Raft};
use crate::storage::Storage;

/// The longest a map long-poll may wait.
const MAX_MAP_WAIT: Duration = Duration::from_secs(30);
/// The most entries one scan returns.
const MAX_SCAN: u32 = 10_000;
/// The most digests one request returns.
const MAX_DIGESTS: u32 = 100_000;

/// Answers the internal RPC.
pub struct Service {
    id: NodeId,
    storage: Storage,
    raft: Raft,
    map: watch::Receiver<Arc<ClusterMap>>,
}

impl Service {
    /// The service of node `id`.
    pub fn new(id: NodeId, storage: Storage, raft: Raft, map: watch::Receiver<Arc<ClusterMap>>) -> Self {
        Self { id, storage, raft, map }
    }

    async fn dispatch(&self, request: Request) -> Result<Response, RpcError> {
        match request {
            Request::Ping => Ok(Response::Pong { node: self.id, epoch: self.map.borrow().epoch }),
            Request::Write { target, records } => {
                self.check(&target)?;
                verify(&records)?;
                let records =
                    records.into_iter().map(|(id, value)| (record_key(&target, id), value.into_vec())).collect();
                self.storage.merge_records(records).await.map_err(storage_error)?;
                Ok(Response::Written)
            }
            Request::Get { target, id } => {
                self.check(&target)?;
                let value = self.storage.get_record(record_key(&target, id)).await.map_err(storage_error)?;
                Ok(Response::Value(value))
            }
            Request::Scan { target, after, limit } => {
                self.check(&target)?;
                let range =
                    keys::collection_range(target.partition, &target.shop, &target.collection, after.as_deref());
                let limit = limit.min(MAX_SCAN) as usize;
                let (entries, more) = self.storage.scan_records(range, limit).await.map_err(storage_error)?;
                Ok(Response::Entries { entries, more })
            }
            Request::Digests { target, after, limit } => {
                self.check(&target)?;
                let range =
                    keys::collection_range(target.partition, &target.shop, &target.collection, after.as_deref());
                let limit = limit.min(MAX_DIGESTS) as usize;
                let (digests, more) = self.storage.digest_records(range, limit).await.map_err(storage_error)?;
                Ok(Response::Digests { digests, more })
            }
            Request::GetMap { known_epoch, wait_ms } => {
                Ok(Response::Map(Box::new(self.map_after(known_epoch, wait_ms).await)))
            }
            Request::Propose { command } => {
                raft::propose(&self.raft, command).await.map(|epoch| Response::Proposed { epoch })
            }
            Request::Raft { kind, payload } => raft::handle_call(&self.raft, kind, &payload)
                .await
                .map(Response::Raft)
                .map_err(|e| RpcError::BadRequest(e.to_string())),
        }
    }

    /// Refuses a request routed with an older map, or to a node that holds
    /// no replica of the partition under the same map.
    fn check(&self, target: &CollectionRef) -> Result<(), RpcError> {
        check_route(&self.map.borrow(), self.id, target)
    }

    /// The map once its epoch exceeds `known`, or the current one after `wait_ms`.
    async fn map_after(&self, known: u64, wait_ms: u32) -> ClusterMap {
        let mut rx = self.map.clone();
        let wait = Duration::from_millis(u64::from(wait_ms)).min(MAX_MAP_WAIT);
        let _ = tokio::time::timeout(wait, rx.wait_for(|m| m.epoch > known)).await;
        rx.borrow().as_ref().clone()
    }
}

impl Handler for Service {
    async fn handle(&self, request: Request) -> Response {
        self.dispatch(request).await.unwrap_or_else(Response::Error)
    }
}

/// The epoch and ownership check of a data request.
///
/// A coordinator routing with a newer map than this node's knows better
/// and is trusted; that includes a node that has not applied the first map
/// yet. Under the same map, the node must hold a replica of the partition.
pub fn check_route(map: &ClusterMap, node: NodeId, target: &CollectionRef) -> Result<(), RpcError> {
    if target.epoch < map.epoch {
        return Err(RpcError::StaleEpoch { current: map.epoch });
    }
    if target.epoch > map.epoch {
        return Ok(());
    }
    if !map.is_ready() {
        return Err(RpcError::NoMap);
    }
    if target.partition >= map.ring.partitions() {
        return Err(RpcError::BadRequest(format!("no partition {}", target.partition)));
    }
    if !map.replicas(target.partition).contains(&node) {
        return Err(RpcError::NotReplica { partition: target.partition });
    }
    Ok(())
}

fn record_key(target: &CollectionRef, id: String) -> RecordKey {
    RecordKey { partition: target.partition, shop: target.shop.clone(), collection: target.collection.clone(), id }
}

/// Checks every value's checksum as it enters the node, the only time
/// the node hashes it: one corrupt value refuses the whole batch.
fn verify(records: &[(String, ByteBuf)]) -> Result<(), RpcError> {
    for (id, value) in records {
        Header::read(value).map_err(|e| RpcError::BadRequest(format!("record {id:?}: {e}")))?;
    }
    Ok(())
}

fn storage_error(e: crate::storage::StorageError) -> RpcError {
    tracing::error!(error = %e, "storage failure");
    RpcError::Storage(e.fault())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringup_proto::cluster::MapCommand;
    use ringup_proto::value::{StoredRecord, Version};

    fn map() -> ClusterMap {
        let mut map = ClusterMap::default();
        let members = (1..=4).map(|i| (i, format!("n{i}:1"))).collect();
        map.apply(&MapCommand::Bootstrap { partitions: 8, replication_factor: 3, members }).unwrap();
        map
    }

    fn target(epoch: u64, partition: u32) -> CollectionRef {
        CollectionRef { epoch, partition, shop: "s".into(), collection: "c".into() }
    }

    #[test]
    fn a_request_with_an_older_epoch_learns_the_current_one() {
        let mut map = map();
        map.apply(&MapCommand::SetAddress { id: 1, addr: "n1:2".into() }).unwrap();
        assert_eq!(check_route(&map, 1, &target(1, 0)), Err(RpcError::StaleEpoch { current: 2 }));
        assert_eq!(check_route(&map, 1, &target(2, 0)), Ok(()));
    }

    #[test]
    fn a_node_outside_the_replica_set_refuses() {
        let map = map();
        let outsider = (1..=4).find(|n| !map.replicas(0).contains(n)).unwrap();
        assert_eq!(check_route(&map, outsider, &target(1, 0)), Err(RpcError::NotReplica { partition: 0 }));
        assert_eq!(check_route(&map, outsider, &target(2, 0)), Ok(()), "a newer coordinator is trusted");
    }

    #[test]
    fn a_batch_with_one_corrupt_value_is_refused_whole() {
        let good = StoredRecord::tombstone(Version { hlc: 1, origin: 1 }, 0).encode();
        let mut bad = good.clone();
        bad[12] ^= 0x10;
        assert_eq!(verify(&[("a".into(), good.clone().into())]), Ok(()));
        let refused = verify(&[("a".into(), good.into()), ("b".into(), bad.into())]);
        assert!(matches!(&refused, Err(RpcError::BadRequest(m)) if m.contains("\"b\"")), "{refused:?}");
    }

    #[test]
    fn a_node_without_a_map_trusts_a_coordinator_that_has_one() {
        assert_eq!(check_route(&ClusterMap::default(), 1, &target(1, 0)), Ok(()));
        assert_eq!(check_route(&ClusterMap::default(), 1, &target(0, 0)), Err(RpcError::NoMap));
    }
}
