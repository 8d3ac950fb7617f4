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

use ringup_proto::NodeId;
use ringup_proto::cluster::{ClusterMap, MapCommand};
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
        let Some((epoch, todo)) = next_batch(&self.node.map.borrow(), self.node.id, &mut self.reported) else {
            return Round::Idle;
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
/// The refill's epoch and the next partitions node `me` refills, at most
/// [`PARALLEL`]: those its refill still lists, but any moving (the move
/// copies them) and any already reported at this epoch; `None` when it
/// refills nothing. A refill of a later epoch starts its reports afresh.
fn next_batch(
    map: &ClusterMap,
    me: NodeId,
    reported: &mut (u64, BTreeSet<PartitionId>),
) -> Option<(u64, Vec<PartitionId>)> {
    let refill = map.refills.get(&me)?;
    if reported.0 != refill.epoch {
        *reported = (refill.epoch, BTreeSet::new());
    }
    let todo = refill.partitions.iter().copied().filter(|p| !map.moves.contains_key(p) && !reported.1.contains(p));
    Some((refill.epoch, todo.take(PARALLEL).collect()))
}

enum Round {
    /// Nothing to refill.
    Idle,
    /// Every partition tried was copied.
    Copied,
    /// Some could not be copied, or all wait for moves.
    Failed,
}

#[cfg(test)]
mod tests {
    use ringup_proto::migration::Stage;
    use ringup_proto::moves::Refill;

    use super::*;
    use crate::testing::a_move;

    fn refilling(epoch: u64, partitions: impl IntoIterator<Item = PartitionId>) -> ClusterMap {
        let mut map = ClusterMap::default();
        let partitions: BTreeSet<_> = partitions.into_iter().collect();
        let total = partitions.len() as u32;
        map.refills.insert(2, Refill { epoch, partitions, total, copied: Streamed::default() });
        map
    }

    #[test]
    fn a_refill_goes_a_few_partitions_at_a_time_skipping_moves_and_reported_ones() {
        let mut reported = (0, BTreeSet::new());
        assert_eq!(next_batch(&refilling(5, 0..10), 1, &mut reported), None, "node 1 refills nothing");
        let mut map = refilling(5, 0..10);
        map.moves.insert(1, a_move(&[1, 2, 3], &[1, 2, 4], Stage::Streaming));
        assert_eq!(next_batch(&map, 2, &mut reported), Some((5, vec![0, 2, 3, 4])), "partition 1 is moving");
        reported.1.extend([0, 2, 3, 4]);
        assert_eq!(
            next_batch(&map, 2, &mut reported),
            Some((5, vec![5, 6, 7, 8])),
            "reported ones are not copied again"
        );
        reported.1.extend([5, 6, 7, 8, 9]);
        assert_eq!(next_batch(&map, 2, &mut reported), Some((5, vec![])), "all reported: waiting for the map");
        // The node was wiped again: a new refill, its reports start afresh.
        assert_eq!(next_batch(&refilling(8, [0, 1]), 2, &mut reported), Some((8, vec![0, 1])));
        assert_eq!(reported, (8, BTreeSet::new()));
    }
}
