//! What the cluster map records of changes in flight: partition moves and
//! their stages, an admin's change, the last finished one, and the refills
//! of wiped members. The rules that advance them live in
//! [`crate::migration`] and [`crate::heal`]; these types depend on neither,
//! so the map ([`crate::cluster`]) holds them without depending back on
//! the rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::placement::{NodeId, Placement};
use crate::ring::PartitionId;

/// Where one partition's move stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stage {
    /// The new replicas receive writes; reads use the old set.
    WriteBothReadOld,
    /// The new replicas copy the partition from the old ones.
    Streaming,
    /// Writes go to both sets; reads use the new one.
    WriteBothReadNew,
    /// The new set is the partition's replica set.
    UseNew,
    /// The replicas that left drop the partition's range.
    Cleanup,
    /// Given up before the switch: the old set serves, and the new replicas
    /// drop what they copied.
    Aborted,
}

impl Stage {
    /// The name used in the HTTP API.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::WriteBothReadOld => "write-both-read-old",
            Stage::Streaming => "streaming",
            Stage::WriteBothReadNew => "write-both-read-new",
            Stage::UseNew => "use-new",
            Stage::Cleanup => "cleanup",
            Stage::Aborted => "aborted",
        }
    }

    /// Whether reads have switched to the new set: an abort no longer
    /// sends the partition back at once, but moves it back anew once the
    /// move is done (see [`ClusterMap::apply`]'s abort).
    pub fn switched(self) -> bool {
        matches!(self, Stage::WriteBothReadNew | Stage::UseNew | Stage::Cleanup)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one new replica copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Streamed {
    /// Bytes of SST files received.
    pub bytes: u64,
    /// Records received.
    pub records: u64,
}

impl Streamed {
    /// Both copies together.
    pub fn plus(self, other: Streamed) -> Streamed {
        Streamed { bytes: self.bytes + other.bytes, records: self.records + other.records }
    }
}

/// One partition's move from its old replica set to a new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The replica set before the move.
    pub from: Vec<NodeId>,
    /// The replica set after it.
    pub to: Vec<NodeId>,
    /// Where it stands.
    pub stage: Stage,
    /// The epoch that started it: names this move among the partition's.
    pub started_epoch: u64,
    /// The epoch that committed the current stage.
    pub stage_epoch: u64,
    /// New replicas that finished copying, with what they copied.
    pub streamed: BTreeMap<NodeId, Streamed>,
    /// Replicas that dropped the range (in `cleanup` or `aborted`).
    pub cleaned: BTreeSet<NodeId>,
}

impl Move {
    /// The replicas the move adds, in set order.
    pub fn added(&self) -> Vec<NodeId> {
        self.to.iter().copied().filter(|n| !self.from.contains(n)).collect()
    }

    /// The replicas the move drops, in set order.
    pub fn dropped(&self) -> Vec<NodeId> {
        self.from.iter().copied().filter(|n| !self.to.contains(n)).collect()
    }

    /// The set reads use.
    pub fn read_set(&self) -> &[NodeId] {
        match self.stage {
            Stage::WriteBothReadOld | Stage::Streaming | Stage::Aborted => &self.from,
            Stage::WriteBothReadNew | Stage::UseNew | Stage::Cleanup => &self.to,
        }
    }

    /// The sets in each of which a write must meet its level.
    pub fn write_sets(&self) -> Vec<&[NodeId]> {
        match self.stage {
            Stage::WriteBothReadOld | Stage::Streaming | Stage::WriteBothReadNew => vec![&self.from, &self.to],
            Stage::UseNew | Stage::Cleanup => vec![&self.to],
            Stage::Aborted => vec![&self.from],
        }
    }

    /// The replicas that must drop the range before the move ends.
    pub fn to_clean(&self) -> Vec<NodeId> {
        match self.stage {
            Stage::Cleanup => self.dropped(),
            Stage::Aborted => self.added(),
            _ => Vec::new(),
        }
    }

    /// Where new replica `target` copies the partition from: the replica it
    /// replaces (the added and the dropped replicas pair up in set order),
    /// or, when there is none or it is gone (`gone` says so), every other
    /// old replica that is not gone.
    pub fn sources(&self, target: NodeId, gone: impl Fn(NodeId) -> bool) -> Vec<NodeId> {
        let replaced = self
            .added()
            .iter()
            .position(|n| *n == target)
            .and_then(|i| self.dropped().get(i).copied())
            .filter(|n| !gone(*n));
        match replaced {
            Some(source) => vec![source],
            None => self.from.iter().copied().filter(|n| *n != target && !gone(*n)).collect(),
        }
    }

    /// Whether every new replica that is not gone has copied the range.
    pub(crate) fn streamed_all(&self, gone: impl Fn(NodeId) -> bool) -> bool {
        self.added().iter().all(|n| gone(*n) || self.streamed.contains_key(n))
    }

    /// Whether every replica that must drop the range and is not gone has.
    pub(crate) fn cleaned_all(&self, gone: impl Fn(NodeId) -> bool) -> bool {
        self.to_clean().iter().all(|n| gone(*n) || self.cleaned.contains(n))
    }

    /// Whether `node` takes part in the streaming work of this move, as a
    /// new replica or as the one it replaces.
    pub(crate) fn involves(&self, node: NodeId) -> bool {
        self.from.contains(&node) != self.to.contains(&node)
    }
}

/// An admin's change in progress: where it started, where it goes, and
/// what it has moved so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The placement when the change began; an abort returns to it.
    pub origin: Placement,
    /// The placement the change moves to.
    pub target: Placement,
    /// When the change began, in epoch milliseconds (the proposer's clock).
    pub started_ms: i64,
    /// Partition moves finished.
    pub moves_done: u64,
    /// Partition moves given up.
    pub moves_aborted: u64,
    /// Bytes streamed by finished streams.
    pub bytes: u64,
    /// Records streamed by finished streams.
    pub records: u64,
}

/// What the last finished change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    /// When it began, epoch milliseconds.
    pub started_ms: i64,
    /// When it ended, epoch milliseconds.
    pub finished_ms: i64,
    /// Partition moves finished.
    pub moves_done: u64,
    /// Partition moves given up.
    pub moves_aborted: u64,
    /// Bytes streamed.
    pub bytes: u64,
    /// Records streamed.
    pub records: u64,
}

/// A member's refill after its data directory was wiped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refill {
    /// The epoch of the `Rejoin` that started it: sources serve its streams
    /// only once their map has reached it.
    pub epoch: u64,
    /// The partitions it still refills.
    pub partitions: BTreeSet<PartitionId>,
    /// How many it had to refill.
    pub total: u32,
    /// What it has copied so far.
    pub copied: Streamed,
}
