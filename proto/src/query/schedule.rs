//! Which replica scans which partition of a report, and what happens
//! when one fails: a synchronous state machine the router drives.
//!
//! Each partition goes to one of its replicas, spread evenly; partitions
//! are sent in batches, a few batches in flight per node. A batch is
//! whole or nothing: when it fails, its node is dropped for the rest of
//! the report and its partitions (and the node's unsent ones) go to the
//! other replicas, so no partition is counted twice or left out.

use std::collections::{BTreeMap, BTreeSet};

use crate::placement::NodeId;
use crate::ring::PartitionId;

/// A batch of partitions sent to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Names the batch in [`Schedule::succeeded`] and [`Schedule::failed`].
    pub id: u64,
    /// The node that scans it.
    pub node: NodeId,
    /// The partitions.
    pub partitions: Vec<PartitionId>,
}

/// A partition none of whose replicas is left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("partition {partition} has no replica left to scan it (tried {tried:?})")]
pub struct NoReplica {
    /// The partition.
    pub partition: PartitionId,
    /// The nodes that failed.
    pub tried: Vec<NodeId>,
}

/// The report's progress over its partitions.
#[derive(Debug)]
pub struct Schedule {
    candidates: BTreeMap<PartitionId, Vec<NodeId>>,
    failed_nodes: BTreeSet<NodeId>,
    unsent: BTreeMap<NodeId, Vec<PartitionId>>,
    in_flight: BTreeMap<u64, Batch>,
    next_id: u64,
    finished: usize,
    batch: usize,
    per_node: usize,
}

impl Schedule {
    /// A schedule of every partition over its candidate replicas, live
    /// ones first; `batch` partitions per request, `per_node` requests in
    /// flight per node.
    pub fn new(
        candidates: impl IntoIterator<Item = (PartitionId, Vec<NodeId>)>,
        batch: usize,
        per_node: usize,
    ) -> Result<Self, NoReplica> {
        let mut s = Self {
            candidates: candidates.into_iter().collect(),
            failed_nodes: BTreeSet::new(),
            unsent: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            next_id: 0,
            finished: 0,
            batch: batch.max(1),
            per_node: per_node.max(1),
        };
        let partitions: Vec<PartitionId> = s.candidates.keys().copied().collect();
        for p in partitions {
            s.assign(p)?;
        }
        Ok(s)
    }

    /// Gives `p` to the candidate with the fewest unsent partitions.
    fn assign(&mut self, p: PartitionId) -> Result<(), NoReplica> {
        let candidates = &self.candidates[&p];
        let node = candidates
            .iter()
            .filter(|n| !self.failed_nodes.contains(n))
            .min_by_key(|n| self.unsent.get(n).map_or(0, Vec::len))
            .copied()
            .ok_or_else(|| NoReplica { partition: p, tried: self.failed_nodes.iter().copied().collect() })?;
        self.unsent.entry(node).or_default().push(p);
        Ok(())
    }

    /// The batches to send now.
    pub fn to_send(&mut self) -> Vec<Batch> {
        let mut out = Vec::new();
        for (node, unsent) in &mut self.unsent {
            let busy = self.in_flight.values().filter(|b| b.node == *node).count();
            for _ in busy..self.per_node {
                if unsent.is_empty() {
                    break;
                }
                let partitions: Vec<PartitionId> = unsent.drain(..self.batch.min(unsent.len())).collect();
                let batch = Batch { id: self.next_id, node: *node, partitions };
                self.next_id += 1;
                self.in_flight.insert(batch.id, batch.clone());
                out.push(batch);
            }
        }
        self.unsent.retain(|_, u| !u.is_empty());
        out
    }

    /// A batch came back whole; its part may be merged.
    pub fn succeeded(&mut self, id: u64) {
        if let Some(b) = self.in_flight.remove(&id) {
            self.finished += b.partitions.len();
        }
    }

    /// A batch failed: its node is dropped for the rest of the report, and
    /// its partitions and the node's unsent ones go to other replicas.
    pub fn failed(&mut self, id: u64) -> Result<(), NoReplica> {
        let Some(b) = self.in_flight.remove(&id) else { return Ok(()) };
        self.failed_nodes.insert(b.node);
        let mut orphans = b.partitions;
        orphans.extend(self.unsent.remove(&b.node).unwrap_or_default());
        orphans.into_iter().try_for_each(|p| self.assign(p))
    }

    /// A batch was refused because the partitions' replicas changed: they
    /// are scheduled again over their new candidates (the node is not
    /// blamed).
    pub fn moved(&mut self, id: u64, candidates: impl Fn(PartitionId) -> Vec<NodeId>) -> Result<(), NoReplica> {
        let Some(b) = self.in_flight.remove(&id) else { return Ok(()) };
        for p in b.partitions {
            self.candidates.insert(p, candidates(p));
            self.assign(p)?;
        }
        Ok(())
    }

    /// Batches sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Partitions whose part was merged, of all.
    pub fn progress(&self) -> (usize, usize) {
        (self.finished, self.candidates.len())
    }

    /// Whether every partition's part was merged.
    pub fn is_done(&self) -> bool {
        self.finished == self.candidates.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(batches: &[Batch]) -> String {
        batches.iter().map(|b| format!("#{} n{} {:?}", b.id, b.node, b.partitions)).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn a_failed_node_hands_its_partitions_to_the_other_replicas() {
        // Six partitions on nodes 1-3, two per batch, one batch per node.
        let mut s = Schedule::new((0..6).map(|p| (p, vec![1, 2, 3])), 2, 1).unwrap();
        let first = s.to_send();
        assert_eq!(show(&first), "#0 n1 [0, 3]; #1 n2 [1, 4]; #2 n3 [2, 5]");
        assert!(s.to_send().is_empty(), "one batch in flight per node");

        s.succeeded(0);
        s.failed(1).unwrap();
        assert_eq!(s.progress(), (2, 6));
        // Node 2's partitions go to 1 and 3, which has one batch in flight.
        assert_eq!(show(&s.to_send()), "#3 n1 [1]");
        s.succeeded(2);
        assert_eq!(show(&s.to_send()), "#4 n3 [4]");
        s.succeeded(3);
        s.succeeded(4);
        assert!(s.is_done());
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn a_partition_without_replicas_left_fails_the_report() {
        let mut s = Schedule::new([(0, vec![1, 2]), (1, vec![2])], 8, 1).unwrap();
        let batches = s.to_send();
        assert_eq!(show(&batches), "#0 n1 [0]; #1 n2 [1]");
        let e = s.failed(1).unwrap_err();
        assert_eq!(e, NoReplica { partition: 1, tried: vec![2] });
    }

    #[test]
    fn moved_partitions_follow_their_new_replicas() {
        let mut s = Schedule::new([(0, vec![1]), (1, vec![1])], 8, 1).unwrap();
        let b = s.to_send();
        assert_eq!(show(&b), "#0 n1 [0, 1]");
        s.moved(0, |_| vec![4]).unwrap();
        assert_eq!(show(&s.to_send()), "#1 n4 [0, 1]");
        s.succeeded(1);
        assert!(s.is_done());
    }
}
