//! Continuous anti-entropy: every node compares each partition it holds
//! with the other replicas and pulls what it lacks, with no admin and no
//! client read needed; and drops tombstones once that is safe.
//!
//! A pass goes over every partition the node serves reads of (not moving,
//! not being refilled). For each, the node scans its copy into a digest
//! ([`ringup_proto::merkle`]), asks every other replica for theirs, and for
//! each replica that differs pulls the records of the differing buckets
//! ([`Request::BucketEntries`]) and merges them by last-writer-wins. Every
//! node pulls, so what one replica lacks the others' passes also carry.
//! When every other replica's digest equalled its own, the node notes the
//! comparison's start; tombstones older than it and than the grace period
//! are dropped in the next pass's scan.
//!
//! The work is paced to a byte budget per second (scans, counted once for
//! each replica that scans the partition, and pulls), so foreground
//! requests keep their latency; passes start at most once per interval.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use ringup_proto::NodeId;
use ringup_proto::cluster::ClusterMap;
use ringup_proto::merkle::{PartitionDigest, tombstone_droppable};
use ringup_proto::ring::PartitionId;
use ringup_proto::rpc::{Request, Response};
use ringup_proto::value::Header;
use ringup_rpc::CallError;
use serde_bytes::ByteBuf;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::pace::Pacer;
use crate::parts::Parts;
use crate::storage::StorageError;

/// How long a peer has to answer a digest or a page of a pull.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a comparison with other replicas failed.
#[derive(Debug, Error)]
pub enum RepairError {
    /// This node's copy could not be scanned, or what was pulled merged.
    #[error("this node's copy: {0}")]
    Storage(#[from] StorageError),
    /// A replica did not answer as asked.
    #[error("node {peer} answered a {asked} with {answer:?}")]
    Answer {
        /// The replica.
        peer: NodeId,
        /// What it was asked for.
        asked: &'static str,
        /// What came back.
        answer: Result<Response, CallError>,
    },
    /// Fewer replicas than needed answered a reconciliation.
    #[error("partition {partition}: {answered} of the {needed} other replicas needed answered ({})", list(.failures))]
    TooFew {
        /// The partition.
        partition: PartitionId,
        /// How many answered.
        answered: usize,
        /// How many were needed.
        needed: usize,
        /// Why the others did not.
        failures: Vec<RepairError>,
    },
}

fn list(errors: &[RepairError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// How anti-entropy runs.
#[derive(Debug, Clone, Copy)]
pub struct RepairSettings {
    /// Whether it runs at all.
    pub enabled: bool,
    /// Bytes scanned or pulled per second.
    pub bytes_per_sec: u64,
    /// The least time from one pass's start to the next's.
    pub interval: Duration,
    /// Tombstones are kept at least this long.
    pub grace_ms: u64,
}

/// What anti-entropy has done, for stats.
#[derive(Debug, Clone, Default)]
pub struct RepairStatus {
    /// Full passes finished since the node started.
    pub passes: u64,
    /// When the last full pass finished (wall-clock ms).
    pub last_pass_ms: Option<u64>,
    /// Partitions compared in the pass in flight, and how many it covers.
    pub progress: (u64, u64),
    /// Partitions compared in all.
    pub compared: u64,
    /// Comparisons in which a replica differed.
    pub differed: u64,
    /// Records pulled from other replicas.
    pub pulled: u64,
    /// Bytes scanned and pulled.
    pub bytes: u64,
    /// Tombstones dropped.
    pub tombstones_dropped: u64,
    /// Partitions the node serves and compares.
    pub held: u64,
    /// Of those, how many no comparison with every replica agreeing has
    /// covered since the node started.
    pub unagreed: u64,
    /// The oldest start of the last agreeing comparison over those that
    /// had one (wall-clock ms).
    pub oldest_agreement_ms: Option<u64>,
}

/// The node's anti-entropy.
pub struct Repairer {
    node: Parts,
    settings: RepairSettings,
    /// Per partition, when the last comparison in which every other
    /// replica agreed started (wall-clock ms).
    agreed: Mutex<BTreeMap<PartitionId, u64>>,
    /// Held only to update or copy, never across an `.await`.
    status: Mutex<RepairStatus>,
}

impl Repairer {
    /// The anti-entropy of the node.
    pub fn new(node: Parts, settings: RepairSettings) -> Self {
        Self { node, settings, agreed: Mutex::default(), status: Mutex::default() }
    }

    /// What it has done so far, and how the partitions it serves stand.
    pub fn status(&self) -> RepairStatus {
        let mut status = self.status.lock().expect("status poisoned").clone();
        let held = self.held();
        let agreed = self.agreed.lock().expect("agreed poisoned");
        let since: Vec<Option<u64>> = held.iter().map(|p| agreed.get(p).copied()).collect();
        status.held = held.len() as u64;
        status.unagreed = since.iter().filter(|s| s.is_none()).count() as u64;
        status.oldest_agreement_ms = since.into_iter().flatten().min();
        status
    }

    /// Runs passes until `stop` is raised.
    pub async fn run(&self, stop: CancellationToken) {
        if !self.settings.enabled {
            return;
        }
        // Not at once: a node just started has hints replayed to it and
        // its peers just saw it come back; the first pass waits an interval.
        let clock = self.node.clock;
        let mut next = clock.now() + self.settings.interval;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = clock.sleep_until(next) => {}
            }
            next = clock.now() + self.settings.interval;
            if self.pass(&stop).await.is_none() {
                return;
            }
        }
    }

    /// One pass over every partition held; `None` if stopped before its end.
    pub async fn pass(&self, stop: &CancellationToken) -> Option<()> {
        let partitions = self.held();
        let mut pacer = Pacer::new(self.node.clock, self.settings.bytes_per_sec);
        self.update(|s| s.progress = (0, partitions.len() as u64));
        for (i, partition) in partitions.iter().enumerate() {
            if stop.is_cancelled() {
                return None;
            }
            self.compare(*partition, &mut pacer).await;
            self.update(|s| s.progress.0 = i as u64 + 1);
        }
        let now_ms = self.node.clock.wall_ms();
        self.update(|s| {
            s.passes += 1;
            s.last_pass_ms = Some(now_ms);
        });
        Some(())
    }

    fn update(&self, f: impl FnOnce(&mut RepairStatus)) {
        f(&mut self.status.lock().expect("status poisoned"));
    }

    /// The partitions this node serves reads of and that nothing else is
    /// copying: not moving, not being refilled anywhere.
    fn held(&self) -> Vec<PartitionId> {
        comparable(&self.node.map.borrow(), self.node.id)
    }

    /// Compares one partition with the other replicas and pulls what
    /// differs; drops the tombstones found droppable.
    async fn compare(&self, partition: PartitionId, pacer: &mut Pacer) {
        let started_ms = self.node.clock.wall_ms();
        let agreed = self.agreed.lock().expect("agreed poisoned").get(&partition).copied();
        let grace = self.settings.grace_ms;
        let droppable = move |h: &Header| tombstone_droppable(h.version.millis(), started_ms, grace, agreed);
        let scanned = match self.node.storage.digest_partition(partition, droppable).await {
            Ok(scanned) => scanned,
            Err(e) => {
                tracing::error!(partition, error = %e, "cannot scan a partition for anti-entropy");
                return;
            }
        };
        let peers: Vec<(NodeId, String)> = {
            let map = self.node.map.borrow();
            let replicas = map.replicas(partition).iter().filter(|n| **n != self.node.id);
            replicas.filter_map(|n| Some((*n, map.addr(*n)?.to_string()))).collect()
        };
        // Each replica scans the partition once for the comparison.
        pacer.pace(scanned.bytes * (1 + peers.len() as u64)).await;
        let mut all_agree = true;
        for (peer, addr) in &peers {
            all_agree &= self.against(partition, *peer, addr, &scanned.digest, pacer).await;
        }
        if all_agree {
            self.agreed.lock().expect("agreed poisoned").insert(partition, started_ms);
        }
        let dropped = scanned.droppable.len() as u64;
        if dropped > 0 {
            match self.node.storage.drop_tombstones(scanned.droppable).await {
                Ok(()) => tracing::debug!(partition, dropped, "tombstones past their grace dropped"),
                Err(e) => tracing::error!(partition, error = %e, "cannot drop tombstones"),
            }
        }
        self.update(|s| {
            s.compared += 1;
            s.differed += u64::from(!all_agree);
            s.bytes += scanned.bytes;
            s.tombstones_dropped += dropped;
        });
    }

    /// Compares with one peer and pulls the buckets that differ; returns
    /// whether the peer agreed.
    async fn against(
        &self,
        partition: PartitionId,
        peer: NodeId,
        addr: &str,
        ours: &PartitionDigest,
        pacer: &mut Pacer,
    ) -> bool {
        match self.pull(partition, peer, addr, ours, Some(pacer)).await {
            Ok(agreed) => agreed,
            Err(e) => {
                tracing::debug!(partition, peer, error = %e, "anti-entropy with a replica failed");
                false
            }
        }
    }

    /// Before a report scans `partition` at a level above ONE: compares
    /// this copy with `others` other replicas and pulls what differs, at
    /// once (not paced). Fails unless that many replicas answered.
    pub async fn reconcile(&self, partition: PartitionId, others: usize) -> Result<(), RepairError> {
        if others == 0 {
            return Ok(());
        }
        let scanned = self.node.storage.digest_partition(partition, |_| false).await?;
        let peers: Vec<(NodeId, String)> = {
            let map = self.node.map.borrow();
            let replicas = map.readable(partition).into_iter().filter(|n| *n != self.node.id);
            replicas.filter_map(|n| Some((n, map.addr(n)?.to_string()))).collect()
        };
        let mut answered = 0;
        let mut failures = Vec::new();
        for (peer, addr) in &peers {
            if answered == others {
                break;
            }
            match self.pull(partition, *peer, addr, &scanned.digest, None).await {
                Ok(_) => answered += 1,
                Err(e) => failures.push(e),
            }
        }
        if answered < others {
            return Err(RepairError::TooFew { partition, answered, needed: others, failures });
        }
        Ok(())
    }

    /// Compares with one peer and pulls the buckets that differ, paced by
    /// `pacer` if given; returns whether the peer agreed, or why it could
    /// not.
    async fn pull(
        &self,
        partition: PartitionId,
        peer: NodeId,
        addr: &str,
        ours: &PartitionDigest,
        mut pacer: Option<&mut Pacer>,
    ) -> Result<bool, RepairError> {
        let client = self.node.pool.get(addr);
        let theirs = match client.call(Request::PartitionDigest { partition }, PEER_TIMEOUT).await {
            Ok(Response::Digest(digest)) => digest,
            answer => return Err(RepairError::Answer { peer, asked: "digest", answer }),
        };
        let buckets = ours.differing(&theirs);
        if buckets.is_empty() {
            return Ok(true);
        }
        let mut after = None;
        loop {
            let request = Request::BucketEntries { partition, buckets: buckets.clone(), after: after.clone() };
            let (entries, done) = match client.call(request, PEER_TIMEOUT).await {
                Ok(Response::Bucket { entries, done }) => (entries, done),
                answer => return Err(RepairError::Answer { peer, asked: "pull", answer }),
            };
            let bytes: u64 = entries.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
            after = entries.last().map(|(k, _)| k.to_vec());
            let merged: Vec<(Vec<u8>, Vec<u8>)> = entries
                .into_iter()
                .map(|(k, v)| (ByteBuf::into_vec(k), ByteBuf::into_vec(v)))
                .filter(|(k, v)| {
                    let ok = acceptable(partition, k, v);
                    if !ok {
                        tracing::error!(partition, peer, "a replica sent a foreign key or a corrupt value; left out");
                    }
                    ok
                })
                .collect();
            let records = merged.len() as u64;
            if let Err(e) = self.node.storage.merge_encoded(merged).await {
                tracing::error!(partition, error = %e, "cannot merge what anti-entropy pulled");
                return Err(e.into());
            }
            self.update(|s| {
                s.pulled += records;
                s.bytes += bytes;
            });
            if let Some(pacer) = pacer.as_deref_mut() {
                pacer.pace(bytes).await;
            }
            if done || after.is_none() {
                break;
            }
        }
        tracing::debug!(partition, peer, buckets = buckets.len(), "pulled differing buckets");
        Ok(false)
    }
}

/// The partitions node `me` compares with their other replicas: those it
/// serves reads of that nothing else is copying (no move, no replica
/// refilling it). None before the map is formed.
fn comparable(map: &ClusterMap, me: NodeId) -> Vec<PartitionId> {
    if !map.is_ready() {
        return Vec::new();
    }
    (0..map.ring.partitions())
        .filter(|p| map.readable(*p).contains(&me))
        .filter(|p| !map.moves.contains_key(p) && !map.refilling_any(*p))
        .collect()
}

/// Whether a pulled record may be merged here: a key of `partition`, and a
/// value whose checksum holds.
fn acceptable(partition: PartitionId, key: &[u8], value: &[u8]) -> bool {
    key.starts_with(&partition.to_be_bytes()) && Header::read(value).is_ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use ringup_proto::keys::RecordKey;
    use ringup_proto::migration::Stage;
    use ringup_proto::moves::Refill;
    use ringup_proto::value::{StoredRecord, Version};

    use super::*;
    use crate::testing::{a_move, formed};

    #[test]
    fn a_node_compares_what_it_serves_and_nothing_being_copied() {
        assert!(comparable(&ClusterMap::default(), 1).is_empty(), "no map: nothing");
        let mut map = formed(16);
        let held: Vec<PartitionId> = (0..16).filter(|p| map.replicas(*p).contains(&1)).collect();
        assert_eq!(comparable(&map, 1), held);
        assert!(held.len() < 16, "with 4 members node 1 holds only some partitions");
        let (moving, refilling) = (held[0], held[1]);
        let replicas = map.replicas(moving).to_vec();
        map.moves.insert(moving, a_move(&replicas, &replicas, Stage::Streaming));
        let other = *map.replicas(refilling).iter().find(|n| **n != 1).unwrap();
        let partitions = BTreeSet::from([refilling]);
        map.refills.insert(other, Refill { epoch: 3, partitions, total: 1, copied: Default::default() });
        let expected: Vec<PartitionId> = held.iter().copied().filter(|p| ![moving, refilling].contains(p)).collect();
        assert_eq!(comparable(&map, 1), expected, "a moving partition and one a replica refills wait");
    }

    #[test]
    fn a_pulled_record_of_another_partition_or_with_a_bad_checksum_is_left_out() {
        let key =
            |partition| RecordKey { partition, shop: "s".into(), collection: "c".into(), id: "r".into() }.encode();
        let value = StoredRecord::tombstone(Version { hlc: 5, origin: 1 }, 0).encode();
        let mut corrupt = value.clone();
        corrupt[12] ^= 0x10;
        assert!(acceptable(3, &key(3), &value));
        assert!(!acceptable(3, &key(4), &value), "a foreign key");
        assert!(!acceptable(3, &key(3), &corrupt), "a corrupt value");
    }
}
