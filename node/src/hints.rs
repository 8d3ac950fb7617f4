//! Hinted handoff: writes a replica missed, kept by another replica of the
//! same partition and replayed once the first answers again.
//!
//! When a write's call to a replica fails or times out, the coordinator
//! sends the write to a replica that took it as a [`Request::Hint`] for
//! the one that missed it. The hint goes into the `hints` column family
//! through the storage writer, under the fsync policy, keyed
//! `replica (u64 BE) | sequence (u64 BE)` so that one replica's hints are
//! one range, in the order they came.
//!
//! Each replica's hints are bounded in bytes ([`HintBudget`]); past the
//! bound the node stops hinting for it, logs that once, counts the hints
//! it refused, and leaves the rest to anti-entropy.
//!
//! Every second the [`Hints`] task pings each replica it holds hints for;
//! one that answers gets them replayed, a batch at a time with a few in
//! flight (last-writer-wins makes their order irrelevant), paced to a byte
//! rate, each deleted once acknowledged. A hint is dropped instead when its replica no
//! longer takes the partition's writes, or when its write is older than the
//! tombstone grace period (see [`ringup_proto::merkle`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use ringup_proto::NodeId;
use ringup_proto::frame;
use ringup_proto::merkle::{Admission, HintBudget, hint_replayable};
use ringup_proto::rpc::{BadRequest, CollectionRef, Request, Response, RpcError};
use ringup_proto::value::Header;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio_util::sync::CancellationToken;

use crate::pace::Pacer;
use crate::parts::Parts;
use crate::storage::StorageError;

/// How long a replica has to answer the ping before a replay.
const PING_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one replayed write may take.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of hints read from storage at once.
const READ_BYTES: usize = 256 << 10;
/// Hints replayed at once.
const IN_FLIGHT: usize = 8;
/// How often the replicas hints are held for are asked whether they answer.
const ROUND_EVERY: Duration = Duration::from_secs(1);

/// How hints are kept and replayed.
#[derive(Debug, Clone, Copy)]
pub struct HintSettings {
    /// Bytes of hints kept per replica; 0 turns hinting off.
    pub max_bytes_per_node: u64,
    /// Bytes of hints replayed per second, over all replicas.
    pub replay_bytes_per_sec: u64,
    /// Hints of writes older than this are dropped (the tombstone grace).
    pub grace_ms: u64,
}

/// One kept hint, as stored.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    target: CollectionRef,
    records: Vec<(String, ByteBuf)>,
}

/// Counts of what the hints did since the node started.
#[derive(Debug, Default)]
pub struct HintCounts {
    /// Hints kept.
    pub stored: AtomicU64,
    /// Hints refused because their replica's hints were over the bound.
    pub refused: AtomicU64,
    /// Hints replayed and acknowledged.
    pub replayed: AtomicU64,
    /// Hints dropped unreplayed (replica no longer takes the partition's
    /// writes, or the write is older than the grace period).
    pub dropped: AtomicU64,
}

/// This node's hints for other replicas.
pub struct Hints {
    node: Parts,
    settings: HintSettings,
    /// Bytes held per replica; held only to decide or count, never across
    /// an `.await`.
    budget: Mutex<HintBudget>,
    /// The next hint's sequence number.
    next: AtomicU64,
    /// What the hints did.
    pub counts: HintCounts,
}

impl Hints {
    /// Counts the hints already stored, and continues their sequence.
    pub fn open(node: Parts, settings: HintSettings) -> Result<Self, StorageError> {
        let mut budget = HintBudget::new(settings.max_bytes_per_node);
        let mut next = 0;
        for (key, bytes) in node.storage.hint_sizes()? {
            let Some((replica, seq)) = split_key(&key) else { continue };
            budget.force(replica, bytes as u64);
            next = next.max(seq + 1);
        }
        Ok(Self {
            node,
            settings,
            budget: Mutex::new(budget),
            next: AtomicU64::new(next),
            counts: HintCounts::default(),
        })
    }

    /// Keeps a write `for_node` missed; refuses it past the bound.
    pub async fn keep(
        &self,
        for_node: NodeId,
        target: CollectionRef,
        records: Vec<(String, ByteBuf)>,
    ) -> Result<(), RpcError> {
        let value = frame::to_bytes(&Stored { target, records })
            .map_err(|e| RpcError::BadRequest(BadRequest::Hint { reason: e.to_string() }))?;
        let admitted = self.budget.lock().expect("budget poisoned").admit(for_node, value.len() as u64);
        if admitted == Admission::OverLimit {
            if self.counts.refused.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    node = for_node,
                    limit = self.settings.max_bytes_per_node,
                    "hints for this replica are over their bound: no more are kept, anti-entropy repairs it"
                );
            }
            return Err(RpcError::HintsFull { node: for_node });
        }
        let key = hint_key(for_node, self.next.fetch_add(1, Ordering::Relaxed));
        let bytes = value.len() as u64;
        if let Err(e) = self.node.storage.put_hints(vec![(key, value)]).await {
            self.budget.lock().expect("budget poisoned").release(for_node, bytes);
            tracing::error!(error = %e, "cannot keep a hint");
            return Err(RpcError::Storage(e.fault()));
        }
        self.counts.stored.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes of hints held per replica.
    pub fn pending(&self) -> BTreeMap<NodeId, u64> {
        self.budget.lock().expect("budget poisoned").held().clone()
    }

    /// Replays hints to replicas that answer, every [`ROUND_EVERY`], until
    /// `stop`.
    pub async fn run(&self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            for replica in self.pending().into_keys() {
                if stop.is_cancelled() {
                    return;
                }
                // A removed member's hints are dropped, unsent.
                if self.node.map.borrow().is_gone(replica) || self.answers(replica).await {
                    self.replay(replica).await;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = self.node.clock.sleep(ROUND_EVERY) => {}
            }
        }
    }

    async fn answers(&self, replica: NodeId) -> bool {
        let Some(addr) = self.node.map.borrow().addr(replica).map(str::to_string) else { return false };
        matches!(self.node.pool.get(&addr).call(Request::Ping, PING_TIMEOUT).await, Ok(Response::Pong { .. }))
    }

    /// Replays `replica`'s hints, a batch at a time (up to [`IN_FLIGHT`]
    /// at once: last-writer-wins makes their order irrelevant), until they
    /// are all replayed or one cannot be.
    async fn replay(&self, replica: NodeId) {
        let prefix = replica.to_be_bytes().to_vec();
        let mut after = None;
        let mut pacer = Pacer::new(self.node.clock, self.settings.replay_bytes_per_sec);
        loop {
            let batch = match self.node.storage.hints(prefix.clone(), after.take(), READ_BYTES).await {
                Ok(batch) if !batch.is_empty() => batch,
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read hints");
                    return;
                }
            };
            let bytes: u64 = batch.iter().map(|(_, v)| v.len() as u64).sum();
            after = batch.last().map(|(k, _)| k.clone());
            let sends = batch.into_iter().map(|(key, value)| async move {
                let outcome = self.replay_one(replica, &value).await;
                (key, value.len() as u64, outcome)
            });
            let outcomes: Vec<_> = futures::stream::iter(sends).buffer_unordered(IN_FLIGHT).collect().await;
            let Settled { done, done_bytes, later } = settle(outcomes);
            if let Err(e) = self.node.storage.remove_hints(done).await {
                tracing::error!(error = %e, "cannot remove replayed hints");
                return;
            }
            self.budget.lock().expect("budget poisoned").release(replica, done_bytes);
            if later {
                return;
            }
            pacer.pace(bytes).await;
        }
    }

    /// Sends one hint to its replica.
    async fn replay_one(&self, replica: NodeId, value: &[u8]) -> Replayed {
        let Ok(Stored { mut target, records }) = frame::from_bytes::<Stored>(value) else {
            tracing::error!(node = replica, "a stored hint does not decode; dropped");
            return self.dropped();
        };
        let (addr, takes_writes, epoch) = {
            let map = self.node.map.borrow();
            let addr = map.addr(replica).map(str::to_string);
            (addr, map.write_targets(target.partition).contains(&replica), map.epoch)
        };
        let oldest_ms = records.iter().filter_map(|(_, v)| Header::read(v).ok()).map(|h| h.version.millis()).min();
        let send = still_wanted(takes_writes, oldest_ms, self.node.clock.wall_ms(), self.settings.grace_ms);
        let Some(addr) = addr.filter(|_| send) else { return self.dropped() };
        target.epoch = epoch;
        let request = Request::Write { target, records };
        let answer = self.node.pool.get(&addr).call(request, REPLAY_TIMEOUT).await;
        match replayed(&answer) {
            Replayed::Done => {
                self.counts.replayed.fetch_add(1, Ordering::Relaxed);
                Replayed::Done
            }
            Replayed::Dropped => self.dropped(),
            Replayed::Later => {
                tracing::debug!(node = replica, ?answer, "hint not replayed yet");
                Replayed::Later
            }
        }
    }

    fn dropped(&self) -> Replayed {
        self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        Replayed::Dropped
    }
}

/// Whether a hint is still worth sending: its replica still takes the
/// partition's writes, and its oldest write (`None`: no readable version)
/// is within the tombstone grace, past which anti-entropy may already have
/// dropped a tombstone the hint would bring back.
fn still_wanted(takes_writes: bool, oldest_ms: Option<u64>, now_ms: u64, grace_ms: u64) -> bool {
    takes_writes && oldest_ms.is_none_or(|ms| hint_replayable(ms, now_ms, grace_ms))
}

/// How a replica's answer to a replayed hint ends it.
fn replayed<E>(answer: &Result<Response, E>) -> Replayed {
    match answer {
        Ok(Response::Written) => Replayed::Done,
        // The replica no longer holds the partition: the hint is moot.
        Ok(Response::Error(RpcError::NotReplica { .. })) => Replayed::Dropped,
        _ => Replayed::Later,
    }
}

/// What a batch of replays leaves: the hints to delete, their bytes, and
/// whether any must wait for a later round.
#[derive(Debug, PartialEq, Eq)]
struct Settled {
    done: Vec<Vec<u8>>,
    done_bytes: u64,
    later: bool,
}

/// Settles a batch: hints replayed or dropped go; the others stay.
fn settle(outcomes: Vec<(Vec<u8>, u64, Replayed)>) -> Settled {
    let mut settled = Settled { done: Vec::new(), done_bytes: 0, later: false };
    for (key, bytes, outcome) in outcomes {
        match outcome {
            Replayed::Done | Replayed::Dropped => {
                settled.done.push(key);
                settled.done_bytes += bytes;
            }
            Replayed::Later => settled.later = true,
        }
    }
    settled
}

/// How one replay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replayed {
    /// The replica took it.
    Done,
    /// It is no longer wanted.
    Dropped,
    /// Not now: try again later.
    Later,
}

fn hint_key(replica: NodeId, seq: u64) -> Vec<u8> {
    let mut key = replica.to_be_bytes().to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn split_key(key: &[u8]) -> Option<(NodeId, u64)> {
    let (replica, seq) = key.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*replica), u64::from_be_bytes(seq.try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use ringup_proto::rpc::StorageFault;

    use super::*;

    #[test]
    fn a_hint_goes_only_to_a_replica_that_still_takes_writes_within_the_grace() {
        let (now, grace) = (1_000_000, 600_000);
        assert!(still_wanted(true, Some(now - 1000), now, grace));
        assert!(still_wanted(true, None, now, grace), "no readable version: sent, the replica checks it");
        assert!(!still_wanted(false, Some(now - 1000), now, grace), "moved away: dropped");
        assert!(!still_wanted(true, Some(now - grace - 1), now, grace), "past the grace: dropped");
    }

    #[test]
    fn only_an_acknowledgement_or_a_lost_replica_ends_a_hint() {
        let answer = |a: Response| replayed::<()>(&Ok(a));
        assert_eq!(answer(Response::Written), Replayed::Done);
        assert_eq!(answer(Response::Error(RpcError::NotReplica { partition: 3 })), Replayed::Dropped);
        assert_eq!(answer(Response::Error(RpcError::StaleEpoch { current: 9 })), Replayed::Later);
        assert_eq!(answer(Response::Error(RpcError::Storage(StorageFault::Engine))), Replayed::Later);
        assert_eq!(answer(Response::Error(RpcError::ShuttingDown)), Replayed::Later);
        assert_eq!(replayed::<&str>(&Err("timed out")), Replayed::Later);
    }

    #[test]
    fn a_batch_deletes_what_ended_and_keeps_the_rest_for_a_later_round() {
        let outcomes = vec![
            (hint_key(4, 1), 100, Replayed::Done),
            (hint_key(4, 2), 30, Replayed::Later),
            (hint_key(4, 3), 7, Replayed::Dropped),
        ];
        let settled = settle(outcomes);
        assert_eq!(settled, Settled { done: vec![hint_key(4, 1), hint_key(4, 3)], done_bytes: 107, later: true });
        assert!(!settle(vec![(hint_key(4, 4), 1, Replayed::Done)]).later);
    }

    #[test]
    fn one_replicas_hints_are_one_range_in_the_order_they_came() {
        let keys = [hint_key(2, 9), hint_key(3, 1), hint_key(3, 2), hint_key(3, 256), hint_key(4, 0)];
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "replica, then sequence, in byte order");
        assert!(keys[1..4].iter().all(|k| k.starts_with(&3u64.to_be_bytes())));
        assert_eq!(split_key(&hint_key(3, 256)), Some((3, 256)));
        assert_eq!(split_key(&[0; 5]), None);
    }
}
