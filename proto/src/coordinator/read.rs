//! What a read makes of its replicas' answers: the newest value, the
//! replicas to repair, and when the answer may stand.
//!
//! A read's answer stands only once `level` replicas hold the newest value,
//! counting the repairs, so a later read at the same level never sees an
//! older one. Repairs go first to the replicas that answered with an older
//! value (or none, or a corrupt one); if too few of those take it, to the
//! replicas that were not heard from.

use std::fmt;

use crate::consistency::Consistency;
use crate::placement::NodeId;
use crate::value;

use super::fanout::join;

/// One replica's answer to a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A value whose checksum was verified when it arrived.
    Value(Vec<u8>),
    /// The replica holds nothing under the key.
    Absent,
    /// The replica's value failed its checksum; it counts as absent.
    Corrupt,
}

/// The newest value among the answers, and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The newest value, if any replica had one.
    pub newest: Option<Vec<u8>>,
    /// The replicas that answered with the newest value.
    pub fresh: Vec<NodeId>,
    /// The replicas that answered with anything else.
    pub stale: Vec<NodeId>,
}

/// Picks the newest of the answers by last-writer-wins.
pub fn resolve(replies: Vec<(NodeId, Reply)>) -> Resolution {
    let newest = replies
        .iter()
        .filter_map(|(_, r)| match r {
            Reply::Value(v) => Some(v.as_slice()),
            Reply::Absent | Reply::Corrupt => None,
        })
        .reduce(value::merge)
        .map(<[u8]>::to_vec);
    let (mut fresh, mut stale) = (Vec::new(), Vec::new());
    for (node, reply) in &replies {
        match (reply, &newest) {
            (Reply::Value(v), Some(n)) if v == n => fresh.push(*node),
            // Nobody has the record: there is nothing to repair.
            (_, None) => fresh.push(*node),
            _ => stale.push(*node),
        }
    }
    Resolution { newest, fresh, stale }
}

/// The repair of one read, as a small state machine: which replicas to
/// write the newest value to, and whether the read may then answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    needed: usize,
    holders: usize,
    /// Replicas not heard from, the fallback for failed repairs.
    silent: Vec<NodeId>,
    stage: Stage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Writing to the stale replicas.
    Stale,
    /// Writing to the replicas not heard from.
    Silent,
    /// Decided.
    Done,
}

/// What the read does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairStep {
    /// Write the newest value to these replicas, then report how many took
    /// it with [`Repair::repaired`].
    Write(Vec<NodeId>),
    /// Enough replicas hold the newest value: answer.
    Done,
    /// Too few replicas hold the newest value, repairs included.
    Unavailable {
        /// How many do.
        holders: usize,
    },
}

impl Repair {
    /// Plans the repair of a read at `level` over `replicas` that resolved
    /// to `resolution`; returns the plan and its first step.
    pub fn start(level: Consistency, replicas: &[NodeId], resolution: &Resolution) -> (Self, RepairStep) {
        let heard = |n: &NodeId| resolution.fresh.contains(n) || resolution.stale.contains(n);
        let silent = replicas.iter().copied().filter(|n| !heard(n)).collect();
        let mut repair = Self {
            needed: level.required(replicas.len()),
            holders: resolution.fresh.len(),
            silent,
            stage: Stage::Stale,
        };
        let step =
            if resolution.stale.is_empty() { repair.decide() } else { RepairStep::Write(resolution.stale.clone()) };
        (repair, step)
    }

    /// Takes how many replicas took the last writes and says what to do
    /// next.
    pub fn repaired(&mut self, took: usize) -> RepairStep {
        assert!(self.stage != Stage::Done, "a repair reported after the read was decided");
        self.holders += took;
        self.decide()
    }

    fn decide(&mut self) -> RepairStep {
        if self.holders >= self.needed {
            self.stage = Stage::Done;
            return RepairStep::Done;
        }
        if self.stage == Stage::Stale && !self.silent.is_empty() {
            self.stage = Stage::Silent;
            return RepairStep::Write(std::mem::take(&mut self.silent));
        }
        self.stage = Stage::Done;
        RepairStep::Unavailable { holders: self.holders }
    }
}

impl fmt::Display for RepairStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepairStep::Write(nodes) => write!(f, "repair {}", join(nodes)),
            RepairStep::Done => f.write_str("done"),
            RepairStep::Unavailable { holders } => write!(f, "unavailable holders={holders}"),
        }
    }
}
