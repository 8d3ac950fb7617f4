//! Refilling this node after its data directory was wiped: the I/O around
//! [`ringup_proto::heal`].
//!
//! While the map says this node refills partitions, the [`Refiller`] copies
//! each (a few at a time) from every other replica that takes its writes,
//! with the streaming of partition moves ([`crate::migrate::copy_partition`]),
//! and reports those copied in one [`MapCommand::Refilled`] per round. A
//! partition with a move in flight waits for the move to end; one whose
//! sources do not all answer stays refilling and is tried again, so that a
//! write a quorum acknowledged on this node and one other is never missed.
//! The node serves no reads of a partition until the map shows it refilled.

use std::collections::BTreeSet;
use std::time::Duration;

use ringup_proto::cluster::MapCommand;
use ringup_proto::migration::Streamed;
use ringup_proto::ring::PartitionId;
use tokio_util::sync::CancellationToken;

use crate::migrate::{Copy, Source, copy_partition};
use crate::parts::Parts;
use crate::propose;

/// Partitions copied at once.
const PARALLEL: usize = 4;
/// How long one chunk may take.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(20);
/// The pause after a round in which a partition could not be copied.
const RETRY: Duration = Duration::from_secs(1);
/// How often the map is looked at again when there is nothing to refill.
const IDLE: Duration = Duration::from_secs(5);

/// Copies the partitions the map says this node refills.
pub struct Refiller {
    node: Parts,
    /// Partitions reported refilled in the refill started at this epoch,
    /// which the node's map may not show yet.
    reported: (u64, BTreeSet<PartitionId>),
}

impl Refiller {
    /// The refiller of the node.
    pub fn new(node: Parts) -> Self {
        Self { node, reported: (0, BTreeSet::new()) }
    }

    /// Refills whatever the map names, until `stop` is raised.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut map = self.node.map.clone();
        while !stop.is_cancelled() {
            map.borrow_and_update();
            let pause = match self.round().await {
                Round::Idle => IDLE,
                Round::Copied => Duration::ZERO,
                Round::Failed => RETRY,
            };
            tokio::select! {
                _ = map.changed(), if pause > Duration::ZERO => {}
                _ = stop.cancelled() => {}
                _ = self.node.clock.sleep(pause) => {}
            }
        }
    }

    /// Copies up to [`PARALLEL`] partitions and reports those copied.
    async fn round(&mut self) -> Round {
        let (epoch, todo) = {
            let map = self.node.map.borrow();
            let Some(refill) = map.refills.get(&self.node.id) else { return Round::Idle };
            if self.reported.0 != refill.epoch {
                self.reported = (refill.epoch, BTreeSet::new());
            }
            let todo: Vec<PartitionId> = refill
                .partitions
                .iter()
                .copied()
                .filter(|p| !map.moves.contains_key(p) && !self.reported.1.contains(p))
                .take(PARALLEL)
                .collect();
            (refill.epoch, todo)
        };
        if todo.is_empty() {
            return Round::Failed;
        }
        let this = &*self;
        let copies = todo.iter().map(|p| async move { (*p, this.copy(*p, epoch).await) });
        let (mut done, mut copied, mut failed) = (Vec::new(), Streamed::default(), false);
        for (partition, result) in futures::future::join_all(copies).await {
            match result {
                Ok(streamed) => {
                    done.push(partition);
                    copied = copied.plus(streamed);
                }
                Err(e) => {
                    failed = true;
                    tracing::info!(partition, error = %e, "cannot refill the partition yet; trying again");
                }
            }
        }
        if !done.is_empty() {
            tracing::info!(partitions = ?done, bytes = copied.bytes, records = copied.records, "partitions refilled");
            self.reported.1.extend(done.iter().copied());
            let report = MapCommand::Refilled { id: self.node.id, epoch, partitions: done, copied };
            propose::report(&self.node, report).await;
        }
        if failed { Round::Failed } else { Round::Copied }
    }

    /// Copies `partition` from every other replica that takes its writes.
    async fn copy(&self, partition: PartitionId, epoch: u64) -> Result<Streamed, Copy> {
        let sources = {
            let map = self.node.map.borrow();
            if !map.write_targets(partition).contains(&self.node.id) {
                // The partition moved away meanwhile: nothing to refill.
                return Ok(Streamed::default());
            }
            map.refill_sources(self.node.id, partition)
        };
        if sources.is_empty() {
            return Err(Copy::Failed("no replica holds a full copy".into()));
        }
        let mut total = Streamed::default();
        for node in sources {
            let still = || self.node.map.borrow().is_refilling(self.node.id, partition);
            let from = Source { node, partition, epoch };
            let copied = copy_partition(&self.node, &from, CHUNK_TIMEOUT, still, |so_far| {
                self.node.progress.set(partition, epoch, total.plus(so_far));
            })
            .await;
            match copied {
                Ok(streamed) => total = total.plus(streamed),
                Err(e) => {
                    self.node.progress.clear(partition);
                    return Err(e);
                }
            }
        }
        self.node.progress.clear(partition);
        Ok(total)
    }
}

/// How a round of the refiller ended.
enum Round {
    /// Nothing to refill.
    Idle,
    /// Every partition tried was copied.
    Copied,
    /// Some could not be copied, or all wait for moves.
    Failed,
}
