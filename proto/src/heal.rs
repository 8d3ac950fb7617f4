//! Refilling a member whose data directory was wiped: the map's side.
//!
//! A node that starts on an empty data directory while the map lists it
//! waits, without starting the metadata group, until the metadata leader
//! notices (it answers `Hello` as waiting). The leader then proposes
//! [`MapCommand::Rejoin`], takes the node out of the metadata group and adds
//! it back as a new learner, so that the node, which forgot its votes,
//! never votes twice in one term. `Rejoin` marks every partition the node
//! takes writes for as *refilling* on it:
//!
//! - it takes writes as before, and they count towards a write's level: a
//!   write it acknowledges is on its disk;
//! - it takes no reads: [`ClusterMap::readable`] leaves it out, so a read's
//!   level is met only by replicas that did not lose their data, and a node
//!   refuses reads of a partition it refills;
//! - it copies the partition from every other replica (a write
//!   acknowledged by a quorum may live on the wiped node and just one
//!   other), then reports [`MapCommand::Refilled`]. With a replica down the
//!   partition stays refilling until it comes back.
//!
//! No move starts on a partition while one of its replicas refills it, and
//! a refilling replica is no source for a move's stream.
//!
//! The leader's `Adopt` tells the node the `Rejoin` epoch; until its map has
//! reached it, the node serves no reads at all, even to a router whose map
//! is newer than its own (which it otherwise trusts): before that epoch it
//! cannot know which partitions it must not read.

use std::collections::BTreeSet;

use crate::cluster::{ClusterMap, MapError, MemberState};
pub use crate::moves::{Refill, Streamed};
use crate::placement::NodeId;
use crate::ring::PartitionId;
use crate::rules::{self, Rule};

/// Who keeps the hints of a write that met its level but missed some
/// replicas: the first replica that took it, for each replica that did not
/// (each once, in order). `None` when no hint is needed or nobody can keep
/// one.
pub fn hint_plan(took: &[NodeId], missed: &[NodeId]) -> Option<(NodeId, Vec<NodeId>)> {
    let holder = *took.first()?;
    let mut for_nodes: Vec<NodeId> = Vec::new();
    for node in missed {
        if !took.contains(node) && !for_nodes.contains(node) {
            for_nodes.push(*node);
        }
    }
    (!for_nodes.is_empty()).then_some((holder, for_nodes))
}

impl ClusterMap {
    /// Whether `node` is refilling `partition`.
    pub fn is_refilling(&self, node: NodeId, partition: PartitionId) -> bool {
        self.refills.get(&node).is_some_and(|r| r.partitions.contains(&partition))
    }

    /// The replicas of `partition` that serve reads: its read set without
    /// those refilling it.
    pub fn readable(&self, partition: PartitionId) -> Vec<NodeId> {
        let barrier = rules::holds(Rule::RefillBarrier);
        self.read_set(partition).iter().copied().filter(|n| !barrier || !self.is_refilling(*n, partition)).collect()
    }

    /// Whether any replica of `partition` (old or new) refills it.
    pub fn refilling_any(&self, partition: PartitionId) -> bool {
        self.write_targets(partition).iter().any(|n| self.is_refilling(*n, partition))
    }

    /// Whether `node` can give a copy of `partition`: it is a member and
    /// not refilling it.
    pub fn can_source(&self, node: NodeId, partition: PartitionId) -> bool {
        !self.is_gone(node) && !self.is_refilling(node, partition)
    }

    /// Where `node` copies `partition` from: every other replica a write
    /// to it goes to, but those gone or refilling it themselves.
    pub fn refill_sources(&self, node: NodeId, partition: PartitionId) -> Vec<NodeId> {
        self.write_targets(partition).into_iter().filter(|n| *n != node && self.can_source(*n, partition)).collect()
    }

    /// `Rejoin`: member `id` came back with no data; it refills every
    /// partition it takes writes for.
    pub(crate) fn rejoin(&mut self, id: NodeId) -> Result<(), MapError> {
        self.placement()?;
        if self.member_state(id)? == MemberState::Removed {
            return Err(MapError::Conflict(format!("node {id} is removed")));
        }
        let partitions: BTreeSet<PartitionId> =
            (0..self.ring.partitions()).filter(|p| self.write_targets(*p).contains(&id)).collect();
        if partitions.is_empty() {
            // It held nothing (a node just added): nothing to refill.
            self.refills.remove(&id);
            return Ok(());
        }
        let refill =
            Refill { epoch: self.epoch + 1, total: partitions.len() as u32, partitions, copied: Streamed::default() };
        self.refills.insert(id, refill);
        Ok(())
    }

    /// `Refilled`: member `id` copied `partitions` (or no longer takes
    /// writes for them) in the refill started at `epoch`.
    pub(crate) fn refilled(
        &mut self,
        id: NodeId,
        epoch: u64,
        partitions: &[PartitionId],
        copied: Streamed,
    ) -> Result<(), MapError> {
        let refill = self
            .refills
            .get_mut(&id)
            .filter(|r| r.epoch == epoch)
            .ok_or_else(|| MapError::Conflict(format!("node {id} has no refill started at epoch {epoch}")))?;
        if !partitions.iter().any(|p| refill.partitions.contains(p)) {
            return Err(MapError::Unchanged);
        }
        for p in partitions {
            refill.partitions.remove(p);
        }
        refill.copied = refill.copied.plus(copied);
        if refill.partitions.is_empty() {
            self.refills.remove(&id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_replica_that_took_a_write_keeps_a_hint_for_each_that_missed_it() {
        assert_eq!(hint_plan(&[2, 3], &[1]), Some((2, vec![1])));
        assert_eq!(hint_plan(&[3], &[1, 2, 1]), Some((3, vec![1, 2])), "each once");
        assert_eq!(hint_plan(&[2, 3], &[]), None, "nothing missed");
        assert_eq!(hint_plan(&[], &[1]), None, "nobody took it");
        assert_eq!(hint_plan(&[2], &[2]), None, "a replica that failed once and then took it is no miss");
    }
}
