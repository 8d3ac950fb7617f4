//! The cluster map: epoch, ring shape, members, placement and the moves in
//! flight.
//!
//! The map lives in the metadata Raft group's state machine. Every change is
//! one [`MapCommand`] in the Raft log and raises the epoch by one, so two
//! processes holding the same epoch hold the same map. [`ClusterMap::apply`]
//! is pure: the node persists what it returns. Membership changes and their
//! partition moves are in [`crate::migration`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::auth::TokenEntry;
use crate::moves::{Change, Finished, Move, Refill, Stage, Streamed};
use crate::placement::{NodeId, Placement};
use crate::ring::{PartitionId, Ring};

/// The default replication factor.
pub const DEFAULT_REPLICATION_FACTOR: u8 = 3;

/// Where a member is in its life in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// Added, still receiving its data.
    Joining,
    /// Serving its partitions.
    Up,
    /// Handing its partitions to others before it goes.
    Leaving,
    /// Gone; kept so its id is never reused.
    Removed,
}

impl MemberState {
    /// The lower-case name used in the HTTP API.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Up => "up",
            MemberState::Leaving => "leaving",
            MemberState::Removed => "removed",
        }
    }
}

/// One node of the cluster, as the map knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's id.
    pub id: NodeId,
    /// The `host:port` of the node's internal RPC.
    pub addr: String,
    /// Where the node is in its life.
    pub state: MemberState,
}

/// A change to the map: one Raft log entry each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapCommand {
    /// Creates the map of a fresh cluster from its initial nodes.
    Bootstrap {
        /// The partition count, a power of two.
        partitions: u32,
        /// How many replicas each partition has.
        replication_factor: u8,
        /// The initial nodes: id and RPC address.
        members: Vec<(NodeId, String)>,
        /// A random id naming the cluster, so that a node refuses a data
        /// directory of another cluster.
        cluster_id: u64,
    },
    /// Records a member's new RPC address (a node restarted elsewhere).
    SetAddress {
        /// The member.
        id: NodeId,
        /// Its new `host:port`.
        addr: String,
    },
    /// Adds a waiting node as `joining` and plans the moves onto it.
    AddNode {
        /// Its id; the next free one when absent.
        id: Option<NodeId>,
        /// Its RPC `host:port`.
        addr: String,
        /// The proposer's wall clock, epoch milliseconds.
        at_ms: i64,
    },
    /// Marks a member `leaving` and plans the moves off it.
    Decommission {
        /// The member.
        id: NodeId,
        /// The proposer's wall clock, epoch milliseconds.
        at_ms: i64,
    },
    /// Marks a dead member `removed` and plans the re-replication of its
    /// partitions from the survivors.
    RemoveNode {
        /// The member.
        id: NodeId,
        /// The proposer's wall clock, epoch milliseconds.
        at_ms: i64,
    },
    /// Gives up the change in flight: moves not yet switched return to
    /// their old sets, and the target goes back to where the change began.
    AbortChange,
    /// Starts moving a partition to a new replica set
    /// (`write-both-read-old`).
    StartMove {
        /// The partition.
        partition: PartitionId,
        /// Its new replica set.
        to: Vec<NodeId>,
    },
    /// Moves a partition's move on to its next stage.
    Advance {
        /// The partition.
        partition: PartitionId,
        /// The epoch that started the move.
        started: u64,
        /// The next stage.
        stage: Stage,
    },
    /// A new replica finished copying a partition.
    StreamDone {
        /// The partition.
        partition: PartitionId,
        /// The epoch that started the move.
        started: u64,
        /// The new replica.
        node: NodeId,
        /// What it copied.
        streamed: Streamed,
    },
    /// A replica dropped a partition's range after a move or an abort.
    CleanedUp {
        /// The partition.
        partition: PartitionId,
        /// The epoch that started the move.
        started: u64,
        /// The replica.
        node: NodeId,
    },
    /// Ends a move whose range is dropped wherever it must be.
    FinishMove {
        /// The partition.
        partition: PartitionId,
        /// The epoch that started the move.
        started: u64,
    },
    /// Ends a change that has reached its target: joining members are up,
    /// leaving ones removed.
    CompleteChange {
        /// The proposer's wall clock, epoch milliseconds.
        at_ms: i64,
    },
    /// A member came back with an empty data directory: it refills every
    /// partition it takes writes for, and serves no reads of one until
    /// then (see [`crate::heal`]).
    Rejoin {
        /// The member.
        id: NodeId,
    },
    /// A refilling member copied some of its partitions.
    Refilled {
        /// The member.
        id: NodeId,
        /// The epoch of the `Rejoin` that started the refill.
        epoch: u64,
        /// The partitions it copied, or no longer takes writes for.
        partitions: Vec<PartitionId>,
        /// What it copied for them.
        copied: Streamed,
    },
    /// Adds an API token (its secret's digest only).
    CreateToken(TokenEntry),
    /// Revokes an API token: it is forgotten at once.
    RevokeToken {
        /// The token's id.
        id: String,
    },
    /// Several commands in one log entry, applied in order; each that
    /// applies raises the epoch. The entry fails only if none applies.
    Batch(Vec<MapCommand>),
}

/// Why a command could not be applied; the map is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum MapError {
    /// The cluster already has a map.
    #[error("the cluster is already bootstrapped")]
    AlreadyBootstrapped,
    /// The command needs a map and there is none yet.
    #[error("the cluster has no map yet")]
    NotBootstrapped,
    /// A bootstrap with nothing to place.
    #[error("invalid bootstrap: {0}")]
    InvalidBootstrap(String),
    /// A command that would change nothing; the epoch stays.
    #[error("the command changes nothing")]
    Unchanged,
    /// A command naming a node the map does not hold.
    #[error("node {0} is not a member")]
    UnknownNode(NodeId),
    /// The address already belongs to a member.
    #[error("{addr} is already node {id}")]
    AlreadyMember {
        /// The address.
        addr: String,
        /// The member listening there.
        id: NodeId,
    },
    /// The id was given to another node already.
    #[error("node id {0} is taken")]
    IdTaken(NodeId),
    /// The change would leave fewer data-holding nodes than replicas.
    #[error("only {left} nodes would be left for a replication factor of {replication_factor}")]
    TooFewNodes {
        /// Up and joining members that would remain.
        left: usize,
        /// The replication factor.
        replication_factor: usize,
    },
    /// The command clashes with the state of a member or a change.
    #[error("{0}")]
    Conflict(String),
    /// A command about a move that is not (or no longer) in flight.
    #[error("partition {0} has no such move in flight")]
    NoSuchMove(PartitionId),
    /// A move command that does not fit the move's stage.
    #[error("invalid move: {0}")]
    InvalidMove(String),
    /// A token command naming a token the map does not hold.
    #[error("no token {0}")]
    UnknownToken(String),
    /// A token that cannot be created as given.
    #[error("invalid token: {0}")]
    InvalidToken(String),
}

/// The cluster map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Raised by one on every change; 0 means no map yet.
    pub epoch: u64,
    /// Names the cluster; chosen at bootstrap.
    pub cluster_id: u64,
    /// The partition ring.
    pub ring: Ring,
    /// Replicas per partition.
    pub replication_factor: u8,
    /// Every member ever added, by id.
    pub members: BTreeMap<NodeId, Member>,
    /// Each partition's replica set.
    pub placement: Option<Placement>,
    /// Per partition, the epoch at which the partition's reads or writes
    /// last changed where they go.
    pub changed_at: Vec<u64>,
    /// The partition moves in flight, at most one per partition.
    pub moves: BTreeMap<PartitionId, Move>,
    /// The membership change in flight, if any.
    pub change: Option<Change>,
    /// What the last finished change did.
    pub last_change: Option<Finished>,
    /// Members refilling after their data directory was wiped.
    pub refills: BTreeMap<NodeId, Refill>,
    /// The API tokens, by id.
    pub tokens: BTreeMap<String, TokenEntry>,
}

impl Default for ClusterMap {
    fn default() -> Self {
        Self {
            epoch: 0,
            cluster_id: 0,
            ring: Ring::default(),
            replication_factor: DEFAULT_REPLICATION_FACTOR,
            members: BTreeMap::new(),
            placement: None,
            changed_at: Vec::new(),
            moves: BTreeMap::new(),
            change: None,
            last_change: None,
            refills: BTreeMap::new(),
            tokens: BTreeMap::new(),
        }
    }
}

impl ClusterMap {
    /// Whether the cluster has been bootstrapped.
    pub fn is_ready(&self) -> bool {
        self.placement.is_some()
    }

    /// The partition of `shop`.
    pub fn partition_of(&self, shop: &str) -> PartitionId {
        self.ring.partition_of(shop)
    }

    /// The replica set of `partition`; empty before bootstrap.
    pub fn replicas(&self, partition: PartitionId) -> &[NodeId] {
        self.placement.as_ref().map_or(&[], |p| p.replicas(partition))
    }

    /// The replicas reads of `partition` use: during a move, the old set
    /// until the data has arrived, then the new one.
    pub fn read_set(&self, partition: PartitionId) -> &[NodeId] {
        match self.moves.get(&partition) {
            Some(m) => m.read_set(),
            None => self.replicas(partition),
        }
    }

    /// The sets in each of which a write to `partition` must meet its
    /// level: one, or during a move both the old and the new.
    pub fn write_sets(&self, partition: PartitionId) -> Vec<&[NodeId]> {
        match self.moves.get(&partition) {
            Some(m) => m.write_sets(),
            None => vec![self.replicas(partition)],
        }
    }

    /// Every replica a write to `partition` goes to, each once.
    pub fn write_targets(&self, partition: PartitionId) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = Vec::new();
        for node in self.write_sets(partition).into_iter().flatten() {
            if !nodes.contains(node) {
                nodes.push(*node);
            }
        }
        nodes
    }

    /// The epoch at which `partition`'s routing last changed.
    pub fn changed_at(&self, partition: PartitionId) -> u64 {
        self.changed_at.get(partition as usize).copied().unwrap_or(self.epoch)
    }

    /// The RPC address of `node`.
    pub fn addr(&self, node: NodeId) -> Option<&str> {
        self.members.get(&node).map(|m| m.addr.as_str())
    }

    /// Checks what a map received from elsewhere must hold before it is
    /// used: a placement covering the ring, naming members only, with
    /// distinct replicas.
    pub fn validate(&self) -> Result<(), String> {
        if !self.ring.partitions().is_power_of_two() {
            return Err(format!("the ring has {} partitions, not a power of two", self.ring.partitions()));
        }
        let Some(placement) = &self.placement else { return Ok(()) };
        if placement.partitions() != self.ring.partitions() {
            return Err(format!(
                "placement covers {} of {} partitions",
                placement.partitions(),
                self.ring.partitions()
            ));
        }
        if self.changed_at.len() != placement.partitions() as usize {
            return Err(format!("changed_at covers {} partitions", self.changed_at.len()));
        }
        for p in 0..placement.partitions() {
            let set = placement.replicas(p);
            let distinct: BTreeSet<_> = set.iter().collect();
            if set.is_empty() || distinct.len() != set.len() || set.iter().any(|n| !self.members.contains_key(n)) {
                return Err(format!("partition {p} has an invalid replica set {set:?}"));
            }
        }
        Ok(())
    }

    /// Applies one command, raising the epoch, and returns the new epoch.
    pub fn apply(&mut self, command: &MapCommand) -> Result<u64, MapError> {
        match command {
            MapCommand::Bootstrap { partitions, replication_factor, members, cluster_id } => {
                self.bootstrap(*partitions, *replication_factor, members)?;
                self.cluster_id = *cluster_id;
            }
            MapCommand::SetAddress { id, addr } => {
                let member = self.members.get_mut(id).ok_or(MapError::UnknownNode(*id))?;
                if member.addr == *addr {
                    return Err(MapError::Unchanged);
                }
                member.addr = addr.clone();
            }
            MapCommand::AddNode { id, addr, at_ms } => self.add_node(*id, addr, *at_ms)?,
            MapCommand::Decommission { id, at_ms } => self.decommission(*id, *at_ms)?,
            MapCommand::RemoveNode { id, at_ms } => {
                self.remove_node(*id, *at_ms)?;
                self.refills.remove(id);
            }
            MapCommand::AbortChange => self.abort_change()?,
            MapCommand::StartMove { partition, to } => self.start_move(*partition, to)?,
            MapCommand::Advance { partition, started, stage } => self.advance(*partition, *started, *stage)?,
            MapCommand::StreamDone { partition, started, node, streamed } => {
                self.stream_done(*partition, *started, *node, *streamed)?
            }
            MapCommand::CleanedUp { partition, started, node } => self.cleaned_up(*partition, *started, *node)?,
            MapCommand::FinishMove { partition, started } => self.finish_move(*partition, *started)?,
            MapCommand::CompleteChange { at_ms } => self.complete_change(*at_ms)?,
            MapCommand::Rejoin { id } => self.rejoin(*id)?,
            MapCommand::Refilled { id, epoch, partitions, copied } => {
                self.refilled(*id, *epoch, partitions, *copied)?
            }
            MapCommand::CreateToken(token) => {
                token.validate().map_err(|e| MapError::InvalidToken(e.to_string()))?;
                if self.tokens.contains_key(&token.id) {
                    return Err(MapError::InvalidToken(format!("the id {} is taken", token.id)));
                }
                self.tokens.insert(token.id.clone(), token.clone());
            }
            MapCommand::RevokeToken { id } => {
                self.tokens.remove(id).ok_or_else(|| MapError::UnknownToken(id.clone()))?;
            }
            MapCommand::Batch(commands) => return self.apply_batch(commands),
        }
        self.epoch += 1;
        Ok(self.epoch)
    }

    fn apply_batch(&mut self, commands: &[MapCommand]) -> Result<u64, MapError> {
        let mut first_error = None;
        let mut applied = 0;
        for command in commands {
            let result = match command {
                MapCommand::Batch(_) => Err(MapError::InvalidMove("a batch inside a batch".into())),
                other => self.apply(other),
            };
            match result {
                Ok(_) => applied += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if applied == 0 => Err(e),
            _ => Ok(self.epoch),
        }
    }

    fn bootstrap(&mut self, partitions: u32, rf: u8, members: &[(NodeId, String)]) -> Result<(), MapError> {
        if self.is_ready() {
            return Err(MapError::AlreadyBootstrapped);
        }
        if members.is_empty() || rf == 0 || !partitions.is_power_of_two() {
            return Err(MapError::InvalidBootstrap(format!(
                "{} members, replication factor {rf}, {partitions} partitions",
                members.len()
            )));
        }
        let ids: BTreeSet<NodeId> = members.iter().map(|(id, _)| *id).collect();
        self.ring = Ring::new(partitions);
        self.replication_factor = rf;
        self.members = members
            .iter()
            .map(|(id, addr)| (*id, Member { id: *id, addr: addr.clone(), state: MemberState::Up }))
            .collect();
        self.placement = Some(Placement::initial(self.ring, &ids, rf as usize));
        self.changed_at = vec![self.epoch + 1; partitions as usize];
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrap() -> MapCommand {
        MapCommand::Bootstrap {
            partitions: 16,
            replication_factor: 3,
            members: vec![(1, "a:1".into()), (2, "b:2".into()), (3, "c:3".into())],
            cluster_id: 7,
        }
    }

    #[test]
    fn bootstrap_places_every_partition_and_raises_the_epoch() {
        let mut map = ClusterMap::default();
        assert!(!map.is_ready());
        assert_eq!(map.apply(&bootstrap()), Ok(1));
        assert!(map.is_ready());
        assert_eq!(map.members.len(), 3);
        assert!((0..16).all(|p| map.replicas(p).len() == 3));
    }

    #[test]
    fn a_second_bootstrap_is_refused_and_changes_nothing() {
        let mut map = ClusterMap::default();
        map.apply(&bootstrap()).unwrap();
        let before = map.clone();
        assert_eq!(map.apply(&bootstrap()), Err(MapError::AlreadyBootstrapped));
        assert_eq!(map, before);
    }

    #[test]
    fn a_bootstrapped_map_is_valid_and_a_mangled_one_is_not() {
        let mut map = ClusterMap::default();
        map.apply(&bootstrap()).unwrap();
        assert_eq!(map.validate(), Ok(()));
        map.members.remove(&2);
        assert!(map.validate().is_err(), "a replica set names a node that is not a member");
        let mut short = ClusterMap::default();
        short.apply(&bootstrap()).unwrap();
        short.ring = Ring::new(32);
        assert!(short.validate().is_err(), "the placement covers 16 of 32 partitions");
    }

    #[test]
    fn set_address_needs_a_member() {
        let mut map = ClusterMap::default();
        map.apply(&bootstrap()).unwrap();
        assert_eq!(map.apply(&MapCommand::SetAddress { id: 2, addr: "b:9".into() }), Ok(2));
        assert_eq!(map.addr(2), Some("b:9"));
        assert_eq!(map.apply(&MapCommand::SetAddress { id: 2, addr: "b:9".into() }), Err(MapError::Unchanged));
        assert_eq!(map.apply(&MapCommand::SetAddress { id: 7, addr: "x:1".into() }), Err(MapError::UnknownNode(7)));
        assert_eq!(map.epoch, 2);
    }

    #[test]
    fn tokens_are_created_once_and_revoked_once() {
        use crate::auth::Role;
        let mut map = ClusterMap::default();
        map.apply(&bootstrap()).unwrap();
        let token = TokenEntry {
            id: "00000000000000aa".into(),
            role: Role::Shop,
            shop: Some("s1".into()),
            digest: [1; 32],
            created_ms: 5,
            name: None,
        };
        assert_eq!(map.apply(&MapCommand::CreateToken(token.clone())), Ok(2));
        assert_eq!(map.tokens.get("00000000000000aa"), Some(&token));
        assert!(matches!(map.apply(&MapCommand::CreateToken(token.clone())), Err(MapError::InvalidToken(_))));
        let shopless = TokenEntry { id: "00000000000000bb".into(), shop: None, ..token.clone() };
        assert!(matches!(map.apply(&MapCommand::CreateToken(shopless)), Err(MapError::InvalidToken(_))));
        let revoke = MapCommand::RevokeToken { id: "00000000000000aa".into() };
        assert_eq!(map.apply(&revoke), Ok(3));
        assert!(map.tokens.is_empty());
        assert_eq!(map.apply(&revoke), Err(MapError::UnknownToken("00000000000000aa".into())));
        assert_eq!(map.epoch, 3);
    }
}
