//! How a node starts, and how the metadata group follows the cluster's
//! members, as pure decisions. The node observes (what its data directory
//! holds, the initial nodes' answers, the group's membership, the map) and
//! carries out what these functions return; they do no I/O and keep no
//! clock.
//!
//! - [`start`]: a node's first step, from what its data directory holds.
//! - [`probed`]: on a fresh directory, a round of the initial nodes'
//!   answers decides between forming a new cluster and waiting to be
//!   adopted into the one that exists (the directory was wiped: the group
//!   must never be initialized a second time).
//! - [`initializes`]: whether this node initializes the group, and with
//!   which voters.
//! - [`bootstrap`]: what the first leader of a new cluster does next.
//! - [`follow`]: the next change that brings the group's membership to the
//!   map's members: 3 voters (5 from 5 up members on), every other member
//!   a learner, removed members out, a wiped member taken out and refilled.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use crate::NodeId;
use crate::cluster::{ClusterMap, MemberState};

/// Voters of the group while fewer than [`MAX_VOTERS`] members are up.
pub const VOTERS: usize = 3;
/// Voters of the group from that many up members on.
pub const MAX_VOTERS: usize = 5;
/// How many entries behind the leader's log a learner may be to become a
/// voter.
pub const CAUGHT_UP: u64 = 16;
/// How long the first leader waits for every initial node to serve before
/// it creates the map without the missing ones.
pub const FORMATION_WAIT: Duration = Duration::from_secs(10);

/// How a node was told to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// The id it was given, if any.
    pub id: Option<NodeId>,
    /// The ids of the nodes that form a fresh cluster (this one among
    /// them, if it is one of them).
    pub initial: BTreeSet<NodeId>,
}

/// A node's first step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The directory holds its id: it restarts as that node, with its log,
    /// votes and map where it left them.
    Restart(NodeId),
    /// A fresh directory and a place among the initial nodes: ask them
    /// whether the cluster exists ([`probed`]).
    Probe(NodeId),
    /// A fresh directory and no id or no initial nodes: wait to be added.
    Wait,
    /// The directory belongs to another node.
    Mismatch {
        /// The id the directory holds.
        stored: NodeId,
        /// The id the node was given.
        given: NodeId,
    },
}

/// The first step of a node set up as `setup` whose directory holds the
/// id `stored`.
pub fn start(setup: &Setup, stored: Option<NodeId>) -> Start {
    match (stored, setup.id) {
        (Some(stored), Some(given)) if stored != given => Start::Mismatch { stored, given },
        (Some(id), _) => Start::Restart(id),
        (None, Some(id)) if !setup.initial.is_empty() => Start::Probe(id),
        (None, _) => Start::Wait,
    }
}

/// An initial node's answer to `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// It holds the cluster's map at this epoch (0: no map yet).
    Map(u64),
    /// It is alive and still deciding how to start.
    Starting,
    /// No answer.
    Silent,
}

/// What a fresh node does after a round of answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probed {
    /// A node holds a map: the cluster exists and this directory was
    /// wiped. Wait to be adopted again and refilled; never form.
    Wiped {
        /// The epoch seen.
        epoch: u64,
    },
    /// A majority of the initial nodes (this one included) answered and
    /// none holds a map: form the new cluster.
    Form,
    /// Too few answered: ask again.
    AskAgain {
        /// How many answered, this node included.
        answered: usize,
        /// How many must.
        majority: usize,
    },
}

/// Decides from the other initial nodes' `answers` (a node missing from
/// them is silent) how the fresh node `me` of `setup` goes on.
pub fn probed(setup: &Setup, me: NodeId, answers: &BTreeMap<NodeId, Answer>) -> Probed {
    let others =
        || setup.initial.iter().filter(|n| **n != me).map(|n| answers.get(n).copied().unwrap_or(Answer::Silent));
    if let Some(epoch) = others().find_map(|a| match a {
        Answer::Map(epoch) if epoch > 0 => Some(epoch),
        _ => None,
    }) {
        return Probed::Wiped { epoch };
    }
    let answered = 1 + others().filter(|a| *a != Answer::Silent).count();
    let majority = setup.initial.len() / 2 + 1;
    if answered >= majority { Probed::Form } else { Probed::AskAgain { answered, majority } }
}

/// The voters node `me` initializes the group with: the first [`VOTERS`]
/// initial nodes, if `me` is the lowest of them and the group is not
/// initialized yet; otherwise none. A node that was adopted never does.
pub fn initializes(setup: &Setup, me: NodeId, initialized: bool) -> Option<BTreeSet<NodeId>> {
    let lowest = setup.initial.first().copied();
    (lowest == Some(me) && !initialized).then(|| setup.initial.iter().copied().take(VOTERS).collect())
}

/// What the first leader sees while the cluster forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forming {
    /// Whether this node leads the group.
    pub leader: bool,
    /// The group's members, voters and learners.
    pub membership: BTreeSet<NodeId>,
    /// Whether the map exists.
    pub map_ready: bool,
    /// How long this node has been forming.
    pub waited: Duration,
}

/// When the first leader creates the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMap {
    /// Not now: not the leader, or the map exists.
    No,
    /// Once every other initial node serves (answers `Hello` with its
    /// service): one that starts after the map exists cannot tell itself
    /// from one whose directory was wiped, and is refilled.
    IfAllServe,
    /// Now, with whichever nodes serve: the wait is over.
    Now,
}

/// The first leader's next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// Initial nodes to add to the group as learners.
    pub learners: BTreeSet<NodeId>,
    /// Whether to create the map.
    pub create_map: CreateMap,
    /// The map exists and every initial node is in the group: formation
    /// is over.
    pub done: bool,
}

/// The next step of forming the cluster of the `initial` nodes.
pub fn bootstrap(initial: &BTreeSet<NodeId>, now: &Forming) -> Bootstrap {
    let done = now.map_ready && initial.is_subset(&now.membership);
    let learners = match now.leader && !done {
        true => initial.difference(&now.membership).copied().collect(),
        false => BTreeSet::new(),
    };
    let create_map = match (now.leader, now.map_ready) {
        (true, false) if now.waited >= FORMATION_WAIT => CreateMap::Now,
        (true, false) => CreateMap::IfAllServe,
        _ => CreateMap::No,
    };
    Bootstrap { learners, create_map, done }
}

/// The metadata group as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The leader's id.
    pub me: NodeId,
    /// The voters.
    pub voters: BTreeSet<NodeId>,
    /// Voters and learners.
    pub known: BTreeSet<NodeId>,
    /// Whether the last membership change is applied and not joint: only
    /// then may the next one start.
    pub settled: bool,
    /// The index each member's log matches up to.
    pub matched: BTreeMap<NodeId, u64>,
    /// The leader's last log index.
    pub last_index: u64,
}

/// A change of the group's voters or members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// The voters become these.
    Voters(BTreeSet<NodeId>),
    /// These leave the group.
    Remove(BTreeSet<NodeId>),
}

/// The leader's next step towards a group that follows the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    /// Nothing to do, or a change is still in flight: look again later.
    Nothing,
    /// `node` came back with a wiped directory: propose its refill
    /// (`MapCommand::Rejoin`) and take it out of the group, so that it
    /// joins again as a new learner with no votes to forget.
    Rejoin {
        /// The wiped member.
        node: NodeId,
        /// How it leaves the group.
        leave: Membership,
    },
    /// Give each new member its id (and the epoch before which it serves
    /// no reads) and add it as a learner; then change the membership.
    Steps {
        /// Members to adopt and add as learners.
        adopt: Vec<(NodeId, u64)>,
        /// The membership change, if any.
        change: Option<Membership>,
    },
}

/// The next step for the group `group` to follow `map`'s members, given
/// the members that answer `Hello` as waiting (`wiped`).
pub fn follow(map: &ClusterMap, group: &Group, wiped: &BTreeSet<NodeId>) -> Follow {
    if !group.settled {
        return Follow::Nothing;
    }
    let present = |state: MemberState| state != MemberState::Removed;
    let in_group = map.members.values().filter(|m| present(m.state) && group.known.contains(&m.id));
    if let Some(node) = in_group.map(|m| m.id).find(|n| wiped.contains(n)) {
        let leave = match group.voters.contains(&node) {
            true => Membership::Voters(group.voters.iter().copied().filter(|v| *v != node).collect()),
            false => Membership::Remove(BTreeSet::from([node])),
        };
        return Follow::Rejoin { node, leave };
    }
    // A member adopted again after its directory was wiped serves no reads
    // before its map shows what it refills.
    let adopt: Vec<(NodeId, u64)> = map
        .members
        .values()
        .filter(|m| present(m.state) && !group.known.contains(&m.id))
        .map(|m| (m.id, map.refills.get(&m.id).map_or(0, |r| r.epoch)))
        .collect();
    let change = voters(map, group).or_else(|| {
        let removed: BTreeSet<NodeId> = map
            .members
            .values()
            .filter(|m| !present(m.state) && group.known.contains(&m.id) && !group.voters.contains(&m.id))
            .map(|m| m.id)
            .collect();
        (!removed.is_empty()).then_some(Membership::Remove(removed))
    });
    if adopt.is_empty() && change.is_none() { Follow::Nothing } else { Follow::Steps { adopt, change } }
}

/// The voters the group should have now, if they differ from its voters:
/// the up voters, topped up with caught-up up members to [`VOTERS`] (or
/// [`MAX_VOTERS`]), the highest ids but the leader's dropped past that,
/// and never topped up to an even number.
fn voters(map: &ClusterMap, group: &Group) -> Option<Membership> {
    let up: Vec<NodeId> = map
        .members
        .values()
        .filter(|m| m.state == MemberState::Up && group.known.contains(&m.id))
        .map(|m| m.id)
        .collect();
    let want = if up.len() >= MAX_VOTERS { MAX_VOTERS } else { up.len().min(VOTERS) };
    let caught_up = |n: &NodeId| group.matched.get(n).copied().unwrap_or(0) + CAUGHT_UP >= group.last_index;
    let mut next: BTreeSet<NodeId> = group.voters.iter().copied().filter(|v| up.contains(v)).collect();
    for candidate in &up {
        if next.len() >= want {
            break;
        }
        if caught_up(candidate) {
            next.insert(*candidate);
        }
    }
    while next.len() > want {
        let Some(drop) = next.iter().rev().copied().find(|v| *v != group.me) else { break };
        next.remove(&drop);
    }
    // An even number of voters tolerates no more failures than one fewer:
    // a member that would make it even waits until another catches up.
    if next.len().is_multiple_of(2)
        && let Some(newest) = next.iter().rev().copied().find(|v| !group.voters.contains(v))
    {
        next.remove(&newest);
    }
    (!next.is_empty() && next != group.voters).then_some(Membership::Voters(next))
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids = |s: &BTreeSet<NodeId>| s.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
        match self {
            Membership::Voters(v) => write!(f, "voters become {}", ids(v)),
            Membership::Remove(r) => write!(f, "remove {}", ids(r)),
        }
    }
}
