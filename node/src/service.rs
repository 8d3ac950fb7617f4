//! The node's RPC service: checks each data request's epoch, then reads or
//! writes storage; serves partition streams to new replicas.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ringup_proto::cluster::ClusterMap;
use ringup_proto::hlc::ahead_ms;
use ringup_proto::keys::{self, RecordKey};
use ringup_proto::route::{Access, check_route};
use ringup_proto::rpc::{BadRequest, CollectionRef, Request, Response, RpcError, Unavailable};
use ringup_proto::stats::{HealingStats, NodeStats};
use ringup_proto::value::Header;
use ringup_rpc::Handler;
use serde_bytes::ByteBuf;
use tokio_util::sync::CancellationToken;

use crate::hints::Hints;
use crate::parts::Parts;
use crate::raft;
use crate::repair::Repairer;
use crate::storage::{CHUNK_BYTES, SCAN_BYTES};

/// The longest a map long-poll may wait.
const MAX_MAP_WAIT: Duration = Duration::from_secs(30);
/// The most entries one scan returns.
const MAX_SCAN: u32 = 10_000;
/// The most digests one request returns.
const MAX_DIGESTS: u32 = 100_000;
/// The longest a report scan may run, whatever the router asks.
const MAX_QUERY_BUDGET: Duration = Duration::from_secs(600);

/// The node's healing parts the service reaches.
pub struct Healing {
    /// Hints kept for other replicas.
    pub hints: Arc<Hints>,
    /// Anti-entropy.
    pub repair: Arc<Repairer>,
    /// How far ahead of this node's clock a version may lie, in ms.
    pub max_skew_ms: u64,
}

/// Answers the internal RPC.
pub struct Service {
    node: Parts,
    healing: Healing,
    /// The epoch the map must reach before reads are served: after the
    /// data directory was wiped, the refill's start (see
    /// [`ringup_proto::heal`]); 0 otherwise.
    reads_from: u64,
    /// Requests served, for [`Request::Stats`].
    served: Served,
    /// Cancelled when the node stops: a map long-poll then answers at once,
    /// so that the server's shutdown waits only for real work.
    stop: CancellationToken,
}

/// Counts of the data requests a node served.
#[derive(Debug, Default)]
struct Served {
    write_batches: AtomicU64,
    records_written: AtomicU64,
    point_reads: AtomicU64,
    scans: AtomicU64,
    skew_refusals: AtomicU64,
}

impl Served {
    fn count(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl Service {
    /// The service of the node, serving reads once its map has reached
    /// `reads_from`.
    pub fn new(node: Parts, healing: Healing, reads_from: u64, stop: CancellationToken) -> Self {
        Self { node, healing, reads_from, served: Served::default(), stop }
    }

    async fn dispatch(&self, request: Request) -> Result<Response, RpcError> {
        match request {
            Request::Ping => Ok(Response::Pong { node: self.node.id, epoch: self.node.map.borrow().epoch }),
            Request::Hello => {
                let leader = self.node.raft.current_leader().await;
                let (epoch, cluster) = {
                    let map = self.node.map.borrow();
                    (map.epoch, map.cluster_id)
                };
                Ok(Response::Hello { id: Some(self.node.id), epoch, leader, waiting: false, cluster })
            }
            Request::Adopt { id, .. } if id == self.node.id => Ok(Response::Adopted),
            Request::Adopt { id, .. } => {
                Err(RpcError::BadRequest(BadRequest::WrongNode { asked: id, this: self.node.id }))
            }
            Request::StreamChunk { partition, epoch, after } => self.stream_chunk(partition, epoch, after).await,
            Request::Holdings => {
                let partitions = self.node.map.borrow().ring.partitions();
                Ok(Response::Holdings(self.node.storage.holdings(partitions).await.map_err(storage_error)?))
            }
            Request::Progress => Ok(Response::Progress(self.node.progress.snapshot())),
            Request::Stats => Ok(Response::Stats(Box::new(self.stats()))),
            Request::Hint { for_node, target, records } => {
                self.check(&target, Access::Write)?;
                verify(&records)?;
                self.healing.hints.keep(for_node, target, records).await.map(|()| Response::Written)
            }
            Request::PartitionDigest { partition } => {
                let scanned = self.node.storage.digest_partition(partition, |_| false).await.map_err(storage_error)?;
                Ok(Response::Digest(Box::new(scanned.digest)))
            }
            Request::BucketEntries { partition, buckets, after } => {
                let (entries, done) = self
                    .node
                    .storage
                    .bucket_entries(partition, buckets, after, SCAN_BYTES)
                    .await
                    .map_err(storage_error)?;
                let entries = entries.into_iter().map(|(k, v)| (ByteBuf::from(k), ByteBuf::from(v))).collect();
                Ok(Response::Bucket { entries, done })
            }
            Request::Write { target, records } => {
                self.check(&target, Access::Write)?;
                let newest = verify(&records)?;
                self.check_clock(newest)?;
                Served::count(&self.served.write_batches, 1);
                Served::count(&self.served.records_written, records.len());
                let records =
                    records.into_iter().map(|(id, value)| (record_key(&target, id), value.into_vec())).collect();
                self.node.storage.merge_records(records).await.map_err(storage_error)?;
                Ok(Response::Written)
            }
            Request::Get { target, id } => {
                self.check(&target, Access::Read)?;
                Served::count(&self.served.point_reads, 1);
                let value = self.node.storage.get_record(record_key(&target, id)).await.map_err(storage_error)?;
                Ok(Response::Value(value))
            }
            Request::Scan { target, after, limit } => {
                self.check(&target, Access::Read)?;
                Served::count(&self.served.scans, 1);
                let range =
                    keys::collection_range(target.partition, &target.shop, &target.collection, after.as_deref());
                let limit = limit.min(MAX_SCAN) as usize;
                let (entries, more) = self.node.storage.scan_records(range, limit).await.map_err(storage_error)?;
                Ok(Response::Entries { entries, more })
            }
            Request::Digests { target, after, limit } => {
                self.check(&target, Access::Read)?;
                Served::count(&self.served.scans, 1);
                let range =
                    keys::collection_range(target.partition, &target.shop, &target.collection, after.as_deref());
                let limit = limit.min(MAX_DIGESTS) as usize;
                let (digests, more) = self.node.storage.digest_records(range, limit).await.map_err(storage_error)?;
                Ok(Response::Digests { digests, more })
            }
            Request::Query { epoch, partitions, plan, max_groups, budget_ms, reconcile } => {
                for &partition in &partitions {
                    let target =
                        CollectionRef { epoch, partition, shop: String::new(), collection: plan.collection.clone() };
                    self.check(&target, Access::Read)?;
                }
                for &partition in &partitions {
                    self.healing.repair.reconcile(partition, reconcile as usize).await.map_err(|e| {
                        RpcError::Unavailable(Unavailable::Reconcile { partition, reason: e.to_string() })
                    })?;
                }
                Served::count(&self.served.scans, partitions.len());
                let budget = Duration::from_millis(budget_ms).min(MAX_QUERY_BUDGET);
                crate::report::scan(&self.node.storage, &self.node.columns, partitions, plan, max_groups, budget).await
            }
            Request::GetMap { known_epoch, wait_ms } => {
                Ok(Response::Map(Box::new(self.map_after(known_epoch, wait_ms).await)))
            }
            Request::Propose { command } => {
                raft::propose(&self.node.raft, command).await.map(|epoch| Response::Proposed { epoch })
            }
            Request::Raft { kind, payload } => raft::handle_call(&self.node.raft, kind, &payload)
                .await
                .map(Response::Raft)
                .map_err(|e| RpcError::BadRequest(BadRequest::RaftMessage { reason: e.to_string() })),
        }
    }

    /// Refuses a batch with a version further ahead of this node's clock
    /// than allowed: last-writer-wins would let it win for that long.
    /// `newest` is the batch's newest version clock, as [`verify`] read it.
    fn check_clock(&self, newest: Option<u64>) -> Result<(), RpcError> {
        let now = self.node.clock.wall_ms();
        match newest.map(|hlc| ahead_ms(hlc, now)) {
            Some(ahead_ms) if ahead_ms > self.healing.max_skew_ms => {
                Served::count(&self.served.skew_refusals, 1);
                tracing::warn!(
                    ahead_ms,
                    max_ms = self.healing.max_skew_ms,
                    "refused a write stamped ahead of this clock"
                );
                Err(RpcError::ClockAhead { ahead_ms, max_ms: self.healing.max_skew_ms })
            }
            _ => Ok(()),
        }
    }

    /// The requests served so far and the storage engine's figures.
    fn stats(&self) -> NodeStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (raft_term, raft_leader) = {
            let metrics = self.node.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.current_term, metrics.current_leader)
        };
        NodeStats {
            raft_term,
            raft_leader,
            write_batches: read(&self.served.write_batches),
            records_written: read(&self.served.records_written),
            point_reads: read(&self.served.point_reads),
            scans: read(&self.served.scans),
            clock_skew_refusals: read(&self.served.skew_refusals),
            healing: self.healing_stats(),
            reports: self.node.columns.stats(),
            engine: self.node.storage.engine_stats(),
            data_key: self.node.storage.data_keys().map(|k| k.current()),
            values_resealed: self.node.storage.resealed(),
        }
    }

    fn healing_stats(&self) -> HealingStats {
        let (hints, repair) = (&self.healing.hints, self.healing.repair.status());
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        HealingStats {
            hints_pending: hints.pending().into_iter().collect(),
            hints_stored: read(&hints.counts.stored),
            hints_refused: read(&hints.counts.refused),
            hints_replayed: read(&hints.counts.replayed),
            hints_dropped: read(&hints.counts.dropped),
            passes: repair.passes,
            last_pass_ms: repair.last_pass_ms,
            pass_done: repair.progress.0,
            pass_total: repair.progress.1,
            compared: repair.compared,
            differed: repair.differed,
            pulled: repair.pulled,
            bytes: repair.bytes,
            tombstones_dropped: repair.tombstones_dropped,
            partitions_held: repair.held,
            partitions_unagreed: repair.unagreed,
            oldest_agreement_ms: repair.oldest_agreement_ms,
        }
    }

    /// Refuses a request routed with a map older than the partition's last
    /// routing change, or to a node that holds no replica of it.
    fn check(&self, target: &CollectionRef, access: Access) -> Result<(), RpcError> {
        let map = self.node.map.borrow();
        if access == Access::Read && map.epoch < self.reads_from {
            return Err(RpcError::Behind { known: map.epoch, needed: self.reads_from });
        }
        check_route(&map, self.node.id, target, access)
    }

    /// One chunk of a partition for a new replica. The first chunk waits
    /// for the record writes already queued, so that the stream holds every
    /// write this node took before its map reached `epoch`.
    async fn stream_chunk(&self, partition: u32, epoch: u64, after: Option<Vec<u8>>) -> Result<Response, RpcError> {
        let known = self.node.map.borrow().epoch;
        if known < epoch {
            return Err(RpcError::Behind { known, needed: epoch });
        }
        if after.is_none() {
            self.node.storage.barrier().await.map_err(storage_error)?;
        }
        let chunk = self
            .node
            .storage
            .export_chunk(partition, after, CHUNK_BYTES, &self.node.scratch)
            .await
            .map_err(storage_error)?;
        let crc = crc32fast::hash(&chunk.sst);
        Ok(Response::Chunk { sst: chunk.sst, crc, records: chunk.records, last: chunk.last, done: chunk.done })
    }

    /// The map once its epoch exceeds `known`, or the current one after
    /// `wait_ms`, or at once when the node stops.
    async fn map_after(&self, known: u64, wait_ms: u32) -> ClusterMap {
        let mut rx = self.node.map.clone();
        let wait = Duration::from_millis(u64::from(wait_ms)).min(MAX_MAP_WAIT);
        tokio::select! {
            _ = rx.wait_for(|m| m.epoch > known) => {}
            _ = self.node.clock.sleep(wait) => {}
            _ = self.stop.cancelled() => {}
        }
        rx.borrow().as_ref().clone()
    }
}

impl Handler for Service {
    async fn handle(&self, request: Request) -> Response {
        self.dispatch(request).await.unwrap_or_else(Response::Error)
    }
}

fn record_key(target: &CollectionRef, id: String) -> RecordKey {
    RecordKey { partition: target.partition, shop: target.shop.clone(), collection: target.collection.clone(), id }
}

/// Checks every value's checksum as it enters the node, the only time
/// the node hashes it: one corrupt value refuses the whole batch. Returns
/// the newest version clock of the batch, for the clock check.
fn verify(records: &[(String, ByteBuf)]) -> Result<Option<u64>, RpcError> {
    let mut newest = None;
    for (id, value) in records {
        let header = Header::read(value)
            .map_err(|e| RpcError::BadRequest(BadRequest::Record { id: id.clone(), reason: e.to_string() }))?;
        newest = newest.max(Some(header.version.hlc));
    }
    Ok(newest)
}

fn storage_error(e: crate::storage::StorageError) -> RpcError {
    tracing::error!(error = %e, "storage failure");
    RpcError::Storage(e.fault())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringup_proto::NodeId;
    use ringup_proto::cluster::MapCommand;
    use ringup_proto::value::{StoredRecord, Version};

    fn map() -> ClusterMap {
        crate::testing::formed(8)
    }

    fn target(epoch: u64, partition: u32) -> CollectionRef {
        CollectionRef { epoch, partition, shop: "s".into(), collection: "c".into() }
    }

    #[test]
    fn only_a_change_to_the_partition_itself_makes_an_older_epoch_stale() {
        let mut map = map();
        map.apply(&MapCommand::SetAddress { id: 1, addr: "n1:2".into() }).unwrap();
        assert_eq!(check_route(&map, 1, &target(1, 0), Access::Write), Ok(()), "addresses do not route");
        map.apply(&MapCommand::AddNode { id: None, addr: "n5:1".into(), at_ms: 0 }).unwrap();
        let to: Vec<NodeId> = map.replicas(0).iter().map(|n| if *n == 1 { 5 } else { *n }).collect();
        let (from, epoch) = (map.replicas(0).to_vec(), map.epoch);
        map.apply(&MapCommand::StartMove { partition: 0, to: to.clone() }).unwrap();
        let current = map.epoch;
        assert_eq!(map.changed_at(0), epoch + 1);
        assert_eq!(check_route(&map, 1, &target(epoch, 0), Access::Write), Err(RpcError::StaleEpoch { current }));
        let other = (1..8).find(|p| map.replicas(*p).contains(&1)).unwrap();
        assert_eq!(check_route(&map, 1, &target(epoch, other), Access::Write), Ok(()), "another partition");
        // During the move, the new replica takes writes but not yet reads.
        assert_eq!(check_route(&map, 5, &target(current, 0), Access::Write), Ok(()));
        assert_eq!(check_route(&map, 5, &target(current, 0), Access::Read), Err(RpcError::NotReplica { partition: 0 }));
        assert!(from.iter().all(|n| check_route(&map, *n, &target(current, 0), Access::Read).is_ok()));
    }

    #[test]
    fn a_node_outside_the_replica_set_refuses() {
        let map = map();
        let outsider = (1..=4).find(|n| !map.replicas(0).contains(n)).unwrap();
        let refused = Err(RpcError::NotReplica { partition: 0 });
        assert_eq!(check_route(&map, outsider, &target(1, 0), Access::Write), refused);
        assert_eq!(check_route(&map, outsider, &target(2, 0), Access::Write), Ok(()), "a newer coordinator");
    }

    #[test]
    fn a_batch_with_one_corrupt_value_is_refused_whole() {
        let good = StoredRecord::tombstone(Version { hlc: 1, origin: 1 }, 0).encode();
        let mut bad = good.clone();
        bad[12] ^= 0x10;
        assert_eq!(verify(&[("a".into(), good.clone().into())]), Ok(Some(1)), "accepted, with its version");
        let refused = verify(&[("a".into(), good.into()), ("b".into(), bad.into())]);
        assert!(
            matches!(&refused, Err(RpcError::BadRequest(BadRequest::Record { id, .. })) if id == "b"),
            "{refused:?}"
        );
    }

    #[test]
    fn a_node_without_a_map_trusts_a_coordinator_that_has_one() {
        assert_eq!(check_route(&ClusterMap::default(), 1, &target(1, 0), Access::Read), Ok(()));
        assert_eq!(check_route(&ClusterMap::default(), 1, &target(0, 0), Access::Read), Err(RpcError::NoMap));
    }
}
