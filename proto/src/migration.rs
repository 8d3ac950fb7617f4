//! Membership changes: partition moves through committed stages, and the
//! driver that advances them.
//!
//! An admin's change (a join, a decommission, the removal of a dead node)
//! sets a target placement, computed by [`Placement::rebalance`] from the
//! placement in force. The partitions whose replica set differs from the
//! target then move, a few at a time, each through these stages, every
//! stage change one command in the metadata log:
//!
//! | stage                 | writes go to      | reads from | what happens                                |
//! |-----------------------|-------------------|------------|---------------------------------------------|
//! | `write-both-read-old` | old ∪ new         | old        | the new replicas receive every write        |
//! | `streaming`           | old ∪ new         | old        | the new replicas copy the partition's range |
//! | `write-both-read-new` | old ∪ new         | new        | reads switch once the data has arrived      |
//! | `use-new`             | new               | new        | the placement now names the new set         |
//! | `cleanup`             | new               | new        | the replicas that left drop the range       |
//! | `aborted`             | old               | old        | the new replicas drop what they copied      |
//!
//! While both sets take writes, a write's level must be met in each of them
//! (QUORUM means a quorum of the old set and a quorum of the new one), so
//! either set alone holds every acknowledged write. A new replica copies the
//! partition from the replica it replaces (each added replica pairs with
//! one dropped): whatever a quorum of the old set held, a quorum of the new set
//! then holds. When that replica is gone, it copies from every other old
//! replica instead.
//!
//! Two rules keep reads and writes meeting while routers and nodes learn
//! a stage at different times. Writes stop going to the old set
//! (`use-new`) only once every replica of both sets has applied
//! `write-both-read-new`: from then on each of them refuses requests
//! routed before it, so no read can still use the old set. And an abort
//! sends back only moves whose reads have not switched (`write-both-read-old`,
//! `streaming`): their old set took every write, so a read routed either
//! way meets it. A move already reading from the new set finishes, and the
//! target placement moves the partition back afterwards. The exception is
//! a new replica that died and was removed: its moves go back at once,
//! since a read of the new set cannot reach it.
//!
//! Every stage change that alters where a partition's requests go records
//! the epoch in the partition's `changed_at`; nodes refuse a request routed
//! with an older epoch only for that partition, so a move never disturbs
//! requests to the others.
//!
//! The [`Driver`] is a pure state machine: given the map and the time, it
//! says which commands the metadata leader proposes next. Nodes report what
//! they did (a stream finished, a range dropped) as commands of their own.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{ClusterMap, MapCommand, MapError, MemberState};
pub use crate::moves::{Change, Finished, Move, Stage, Streamed};
use crate::placement::{NodeId, Placement};
use crate::ring::PartitionId;
use crate::rules::{self, Rule};

/// The membership commands of the map, applied by [`ClusterMap::apply`].
impl ClusterMap {
    /// Members that hold, or are about to hold, data: up or joining.
    pub fn active_members(&self) -> BTreeSet<NodeId> {
        self.members
            .values()
            .filter(|m| matches!(m.state, MemberState::Up | MemberState::Joining))
            .map(|m| m.id)
            .collect()
    }

    /// Whether `node` is a removed member (or none at all).
    pub fn is_gone(&self, node: NodeId) -> bool {
        self.members.get(&node).is_none_or(|m| m.state == MemberState::Removed)
    }

    /// The member listening at `addr`, removed ones left out.
    pub fn member_at(&self, addr: &str) -> Option<NodeId> {
        self.members.values().find(|m| m.addr == addr && m.state != MemberState::Removed).map(|m| m.id)
    }

    pub(crate) fn add_node(&mut self, id: Option<NodeId>, addr: &str, at_ms: i64) -> Result<(), MapError> {
        self.placement()?;
        if let Some(existing) = self.member_at(addr) {
            return Err(MapError::AlreadyMember { addr: addr.to_string(), id: existing });
        }
        let id = match id {
            Some(id) if self.members.contains_key(&id) => return Err(MapError::IdTaken(id)),
            Some(id) => id,
            None => self.members.keys().max().map_or(1, |max| max + 1),
        };
        self.members.insert(id, crate::cluster::Member { id, addr: addr.to_string(), state: MemberState::Joining });
        self.replan(at_ms);
        Ok(())
    }

    pub(crate) fn decommission(&mut self, id: NodeId, at_ms: i64) -> Result<(), MapError> {
        self.placement()?;
        match self.member_state(id)? {
            MemberState::Up => {}
            state => return Err(MapError::Conflict(format!("node {id} is {}, not up", state.as_str()))),
        }
        self.check_enough_left(id)?;
        self.set_state(id, MemberState::Leaving);
        self.replan(at_ms);
        Ok(())
    }

    pub(crate) fn remove_node(&mut self, id: NodeId, at_ms: i64) -> Result<(), MapError> {
        self.placement()?;
        if self.member_state(id)? == MemberState::Removed {
            return Err(MapError::Conflict(format!("node {id} is already removed")));
        }
        self.check_enough_left(id)?;
        self.set_state(id, MemberState::Removed);
        // Moves onto the dead node cannot finish; those not yet switched
        // go back to their old sets.
        let epoch = self.epoch + 1;
        let doomed: Vec<PartitionId> =
            self.moves.iter().filter(|(_, m)| m.stage < Stage::UseNew && m.to.contains(&id)).map(|(p, _)| *p).collect();
        for p in doomed {
            self.abort_move(p, epoch);
        }
        self.replan(at_ms);
        Ok(())
    }

    pub(crate) fn abort_change(&mut self) -> Result<(), MapError> {
        let Some(change) = &self.change else {
            return Err(MapError::Conflict("no membership change is in flight".into()));
        };
        let origin = change.origin.clone();
        // Joining members leave again and leaving ones stay: enough must
        // remain to hold every replica (a dead node removed meanwhile does
        // not come back).
        let left = self.members.values().filter(|m| matches!(m.state, MemberState::Up | MemberState::Leaving)).count();
        let rf = usize::from(self.replication_factor);
        if left < rf {
            return Err(MapError::TooFewNodes { left, replication_factor: rf });
        }
        let epoch = self.epoch + 1;
        let unswitched: Vec<PartitionId> = self
            .moves
            .iter()
            .filter(|(_, m)| !m.stage.switched() && m.stage != Stage::Aborted)
            .map(|(p, _)| *p)
            .collect();
        for p in unswitched {
            self.abort_move(p, epoch);
        }
        for member in self.members.values_mut() {
            member.state = match member.state {
                MemberState::Joining => MemberState::Leaving,
                MemberState::Leaving => MemberState::Up,
                other => other,
            };
        }
        let active = self.active_members();
        let change = self.change.as_mut().expect("checked above");
        change.target = origin.rebalance(&active, rf);
        Ok(())
    }

    pub(crate) fn start_move(&mut self, p: PartitionId, to: &[NodeId]) -> Result<(), MapError> {
        let placement = self.placement()?;
        self.partition_in_range(p)?;
        if self.change.is_none() {
            return Err(MapError::Conflict("no membership change is in flight".into()));
        }
        if self.moves.contains_key(&p) {
            return Err(MapError::Conflict(format!("partition {p} is already moving")));
        }
        let from = placement.replicas(p).to_vec();
        let distinct: BTreeSet<_> = to.iter().collect();
        let valid = !to.is_empty()
            && distinct.len() == to.len()
            && to.iter().all(|n| self.active_members().contains(n) || from.contains(n));
        if !valid || from == to {
            return Err(MapError::InvalidMove(format!("partition {p}: {from:?} → {to:?}")));
        }
        let epoch = self.epoch + 1;
        let moving = Move {
            from,
            to: to.to_vec(),
            stage: Stage::WriteBothReadOld,
            started_epoch: epoch,
            stage_epoch: epoch,
            streamed: BTreeMap::new(),
            cleaned: BTreeSet::new(),
        };
        self.moves.insert(p, moving);
        self.changed_at[p as usize] = epoch;
        Ok(())
    }

    pub(crate) fn advance(&mut self, p: PartitionId, started: u64, to: Stage) -> Result<(), MapError> {
        let epoch = self.epoch + 1;
        let gone = |n| self.is_gone(n);
        let m = self.moves.get(&p).filter(|m| m.started_epoch == started).ok_or(MapError::NoSuchMove(p))?;
        let allowed = match (m.stage, to) {
            (Stage::WriteBothReadOld, Stage::Streaming) => true,
            (Stage::Streaming, Stage::WriteBothReadNew) => m.streamed_all(gone),
            (Stage::WriteBothReadNew, Stage::UseNew) | (Stage::UseNew, Stage::Cleanup) => true,
            _ => false,
        };
        if !allowed {
            return Err(MapError::InvalidMove(format!("partition {p} cannot go from {} to {to}", m.stage)));
        }
        let new_set = m.to.clone();
        let m = self.moves.get_mut(&p).expect("found above");
        m.stage = to;
        m.stage_epoch = epoch;
        if matches!(to, Stage::WriteBothReadNew | Stage::UseNew) {
            self.changed_at[p as usize] = epoch;
        }
        if to == Stage::UseNew {
            self.placement.as_mut().expect("checked by the caller").set_replicas(p, new_set);
        }
        Ok(())
    }

    pub(crate) fn stream_done(
        &mut self,
        p: PartitionId,
        started: u64,
        node: NodeId,
        streamed: Streamed,
    ) -> Result<(), MapError> {
        let m = self.moves.get_mut(&p).filter(|m| m.started_epoch == started).ok_or(MapError::NoSuchMove(p))?;
        if m.stage != Stage::Streaming || !m.added().contains(&node) {
            return Err(MapError::InvalidMove(format!("partition {p} is {}, not streaming to node {node}", m.stage)));
        }
        if m.streamed.insert(node, streamed).is_some() {
            return Err(MapError::Unchanged);
        }
        if let Some(change) = &mut self.change {
            change.bytes += streamed.bytes;
            change.records += streamed.records;
        }
        Ok(())
    }

    pub(crate) fn cleaned_up(&mut self, p: PartitionId, started: u64, node: NodeId) -> Result<(), MapError> {
        let m = self.moves.get_mut(&p).filter(|m| m.started_epoch == started).ok_or(MapError::NoSuchMove(p))?;
        if !m.to_clean().contains(&node) {
            return Err(MapError::InvalidMove(format!("node {node} has nothing to drop for partition {p}")));
        }
        if !m.cleaned.insert(node) {
            return Err(MapError::Unchanged);
        }
        Ok(())
    }

    pub(crate) fn finish_move(&mut self, p: PartitionId, started: u64) -> Result<(), MapError> {
        let gone = |n| self.is_gone(n);
        let m = self.moves.get(&p).filter(|m| m.started_epoch == started).ok_or(MapError::NoSuchMove(p))?;
        if !matches!(m.stage, Stage::Cleanup | Stage::Aborted) || !m.cleaned_all(gone) {
            return Err(MapError::InvalidMove(format!("partition {p} is {} and not cleaned up", m.stage)));
        }
        let aborted = m.stage == Stage::Aborted;
        self.moves.remove(&p);
        if let Some(change) = &mut self.change {
            if aborted {
                change.moves_aborted += 1;
            } else {
                change.moves_done += 1;
            }
        }
        Ok(())
    }

    pub(crate) fn complete_change(&mut self, at_ms: i64) -> Result<(), MapError> {
        let placement = self.placement()?;
        let done = self.change.as_ref().is_some_and(|c| self.moves.is_empty() && c.target == *placement);
        if !done {
            return Err(MapError::Conflict("the change has moves left".into()));
        }
        let change = self.change.take().expect("checked above");
        self.last_change = Some(Finished {
            started_ms: change.started_ms,
            finished_ms: at_ms,
            moves_done: change.moves_done,
            moves_aborted: change.moves_aborted,
            bytes: change.bytes,
            records: change.records,
        });
        for member in self.members.values_mut() {
            member.state = match member.state {
                MemberState::Joining => MemberState::Up,
                MemberState::Leaving => MemberState::Removed,
                other => other,
            };
        }
        Ok(())
    }

    /// Partition moves left in the change in flight: those moving (aborted
    /// ones aside) and those not started whose replica set still differs
    /// from the target.
    pub fn moves_remaining(&self) -> usize {
        let (Some(change), Some(_)) = (&self.change, &self.placement) else { return 0 };
        let heading = self.heading();
        let moving = self.moves.values().filter(|m| m.stage != Stage::Aborted).count();
        let unstarted = (0..heading.partitions())
            .filter(|p| !self.moves.contains_key(p) && heading.replicas(*p) != change.target.replicas(*p))
            .count();
        let after_moving = self
            .moves
            .iter()
            .filter(|(p, m)| m.stage != Stage::Aborted && heading.replicas(**p) != change.target.replicas(**p))
            .count();
        moving + unstarted + after_moving
    }

    /// The placement once the moves in flight have switched: where the
    /// data is headed now.
    fn heading(&self) -> Placement {
        let mut heading = self.placement.clone().expect("checked by the caller");
        for (p, m) in self.moves.iter().filter(|(_, m)| m.stage != Stage::Aborted) {
            heading.set_replicas(*p, m.to.clone());
        }
        heading
    }

    /// Sets the target placement for the current membership, starting a
    /// change if none is in flight. The target is planned from where the
    /// moves in flight are headed, with as few further moves as possible;
    /// moves planned but not started are planned afresh.
    fn replan(&mut self, at_ms: i64) {
        let active = self.active_members();
        let rf = usize::from(self.replication_factor);
        let target = self.heading().rebalance(&active, rf);
        let placement = self.placement.as_ref().expect("checked by the caller");
        match &mut self.change {
            Some(change) => change.target = target,
            None => {
                self.change = Some(Change {
                    origin: placement.clone(),
                    target,
                    started_ms: at_ms,
                    moves_done: 0,
                    moves_aborted: 0,
                    bytes: 0,
                    records: 0,
                })
            }
        }
    }

    fn abort_move(&mut self, p: PartitionId, epoch: u64) {
        let m = self.moves.get_mut(&p).expect("the caller found it");
        m.stage = Stage::Aborted;
        m.stage_epoch = epoch;
        m.cleaned.clear();
        self.changed_at[p as usize] = epoch;
    }

    pub(crate) fn placement(&self) -> Result<&Placement, MapError> {
        self.placement.as_ref().ok_or(MapError::NotBootstrapped)
    }

    fn partition_in_range(&self, p: PartitionId) -> Result<(), MapError> {
        if p < self.ring.partitions() { Ok(()) } else { Err(MapError::InvalidMove(format!("no partition {p}"))) }
    }

    pub(crate) fn member_state(&self, id: NodeId) -> Result<MemberState, MapError> {
        self.members.get(&id).map(|m| m.state).ok_or(MapError::UnknownNode(id))
    }

    fn set_state(&mut self, id: NodeId, state: MemberState) {
        self.members.get_mut(&id).expect("checked by the caller").state = state;
    }

    /// Refuses to let `leaving` go if fewer active members than the
    /// replication factor would remain.
    fn check_enough_left(&self, leaving: NodeId) -> Result<(), MapError> {
        let left = self.active_members().into_iter().filter(|n| *n != leaving).count();
        let rf = usize::from(self.replication_factor);
        if left < rf {
            return Err(MapError::TooFewNodes { left, replication_factor: rf });
        }
        Ok(())
    }
}

/// How hard the driver pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Moves in flight (before the switch) that one node takes part in, as a
    /// new replica or as the one replaced.
    pub moves_per_node: usize,
    /// How long a switched partition waits before its old replicas drop it,
    /// so that requests routed before the switch have ended.
    pub settle_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { moves_per_node: 4, settle_ms: 2000 }
    }
}

/// What the driver's caller observed before a step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// A monotonic clock, in milliseconds.
    pub now_ms: u64,
    /// The wall clock, in epoch milliseconds, for the record.
    pub wall_ms: i64,
    /// The map epoch each node has applied; nodes that did not answer are
    /// absent.
    pub applied: BTreeMap<NodeId, u64>,
}

/// Advances the moves of a change; runs on the metadata leader.
///
/// Pure: [`Driver::step`] takes the map and a monotonic clock in
/// milliseconds and returns the commands to propose. It remembers only when
/// it first saw each stage, so a new leader's driver, which starts with no
/// memory, merely waits one settle period again.
#[derive(Debug, Clone, Default)]
pub struct Driver {
    limits: Limits,
    /// When each (partition, stage epoch) was first seen.
    seen: BTreeMap<(PartitionId, u64), u64>,
}

impl Driver {
    /// A driver with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits, seen: BTreeMap::new() }
    }

    /// The commands to propose next, given the map and what the leader
    /// observed.
    pub fn step(&mut self, map: &ClusterMap, observed: &Observed) -> Vec<MapCommand> {
        let (now_ms, applied) = (observed.now_ms, &observed.applied);
        let (Some(change), Some(placement)) = (&map.change, &map.placement) else {
            self.seen.clear();
            return Vec::new();
        };
        self.seen.retain(|(p, epoch), _| map.moves.get(p).is_some_and(|m| m.stage_epoch == *epoch));
        let gone = |n| map.is_gone(n);
        let mut commands = Vec::new();
        for (&p, m) in &map.moves {
            let seen = *self.seen.entry((p, m.stage_epoch)).or_insert(now_ms);
            let settled = now_ms.saturating_sub(seen) >= self.limits.settle_ms;
            // Every replica of both sets, but the removed, knows the stage.
            let known =
                m.from.iter().chain(&m.to).all(|n| gone(*n) || applied.get(n).is_some_and(|e| *e >= m.stage_epoch));
            let started = m.started_epoch;
            let next = match m.stage {
                Stage::WriteBothReadOld => Some(Stage::Streaming),
                Stage::Streaming if m.streamed_all(gone) => Some(Stage::WriteBothReadNew),
                Stage::WriteBothReadNew if known || !rules::holds(Rule::UseNewBarrier) => Some(Stage::UseNew),
                Stage::UseNew if settled && known => Some(Stage::Cleanup),
                Stage::Cleanup | Stage::Aborted if m.cleaned_all(gone) => {
                    commands.push(MapCommand::FinishMove { partition: p, started });
                    None
                }
                _ => None,
            };
            if let Some(stage) = next {
                commands.push(MapCommand::Advance { partition: p, started, stage });
            }
        }
        commands.extend(self.new_moves(map, change, placement));
        if commands.is_empty() && map.moves.is_empty() && change.target == *placement {
            commands.push(MapCommand::CompleteChange { at_ms: observed.wall_ms });
        }
        commands
    }

    /// Starts moves towards the target while every node involved has a
    /// free slot.
    fn new_moves(&self, map: &ClusterMap, change: &Change, placement: &Placement) -> Vec<MapCommand> {
        let mut busy: BTreeMap<NodeId, usize> = BTreeMap::new();
        for m in map.moves.values().filter(|m| m.stage < Stage::UseNew) {
            for node in m.from.iter().chain(&m.to).filter(|n| m.involves(**n) && !map.is_gone(**n)) {
                *busy.entry(*node).or_default() += 1;
            }
        }
        let mut commands = Vec::new();
        for p in 0..placement.partitions() {
            let (from, to) = (placement.replicas(p), change.target.replicas(p));
            // A partition being refilled moves once the refill is done.
            if from == to || map.moves.contains_key(&p) || map.refilling_any(p) {
                continue;
            }
            let involved: Vec<NodeId> = from
                .iter()
                .chain(to)
                .copied()
                .filter(|n| from.contains(n) != to.contains(n) && !map.is_gone(*n))
                .collect();
            if involved.iter().any(|n| busy.get(n).copied().unwrap_or(0) >= self.limits.moves_per_node) {
                continue;
            }
            for n in &involved {
                *busy.entry(*n).or_default() += 1;
            }
            commands.push(MapCommand::StartMove { partition: p, to: to.to_vec() });
        }
        commands
    }
}
