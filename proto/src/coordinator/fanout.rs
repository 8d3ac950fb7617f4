//! One round of requests to a replica set: which replicas to ask, when
//! to ask one more, when the level is met and when to give up.
//!
//! A write asks every replica at once: every copy should get it, and the
//! level only says how many answers to wait for. A read asks only as many
//! replicas as the level needs, in preference order, and asks the next one
//! when one of them fails, or when the caller reports that the ones asked
//! are slow (the speculative delay passed).
//!
//! The machine never sleeps or sends: the caller sends to the replicas a
//! [`Step::Ask`] names, feeds every answer back as an [`Event`], and acts on
//! the [`Step`] it gets.

use std::fmt;

use crate::consistency::{Consistency, Tally};
use crate::placement::NodeId;
use crate::rules::{self, Rule};

/// Whether a round asks every replica or only as many as the level needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Ask every replica at once (writes).
    All,
    /// Ask as many as the level needs, more only on failure or slowness
    /// (reads).
    Needed,
}

/// Where one replica stands in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replica {
    /// Not asked (yet).
    Idle,
    /// Asked, no answer yet.
    Asked,
    /// Answered usefully.
    Answered,
    /// Failed, refused or timed out.
    Failed,
}

/// What happened to one request of the round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The replica answered usefully.
    Answered(NodeId),
    /// The replica failed, refused or did not answer in time.
    Failed(NodeId),
    /// The replica refused because it knows a newer map.
    Stale {
        /// The replica.
        node: NodeId,
        /// The epoch it knows.
        epoch: u64,
    },
    /// The replicas asked have not all answered within the speculative
    /// delay.
    Slow,
    /// The round's deadline passed.
    Deadline,
}

/// What the caller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send the request to these replicas, then keep waiting.
    Ask(Vec<NodeId>),
    /// Wait for the next event.
    Wait,
    /// The level is met.
    Met,
    /// The level can no longer be met in this round.
    Failed {
        /// How many replicas answered usefully.
        acked: usize,
        /// A replica that knows a newer map, and its epoch: route again.
        stale: Option<(NodeId, u64)>,
    },
}

/// One round of requests to a replica set.
///
/// During a partition move a write goes to two sets, the old and the new,
/// and must meet its level in each: [`Fanout::spanning`].
#[derive(Debug, Clone)]
pub struct Fanout {
    mode: Mode,
    /// The sets in each of which the level must be met.
    sets: Vec<Vec<NodeId>>,
    /// How many useful answers each set needs.
    needs: Vec<usize>,
    /// Every replica of the sets once, in preference order.
    replicas: Vec<(NodeId, Replica)>,
    stale: Option<(NodeId, u64)>,
    done: bool,
}

impl Fanout {
    /// A round at `level` over `replicas`, given in preference order.
    pub fn new(mode: Mode, level: Consistency, replicas: &[NodeId]) -> Self {
        Self::spanning(mode, level, replicas, &[replicas.to_vec()])
    }

    /// A round over `order`, the union of `sets` in preference order, that
    /// meets `level` only once it is met in every one of `sets`.
    pub fn spanning(mode: Mode, level: Consistency, order: &[NodeId], sets: &[Vec<NodeId>]) -> Self {
        for node in sets.iter().flatten() {
            assert!(order.contains(node), "node {node} of a set is missing from the order {order:?}");
        }
        let replicas = order.iter().map(|n| (*n, Replica::Idle)).collect();
        let sets = match rules::holds(Rule::QuorumPerSet) {
            true => sets.to_vec(),
            false => sets.iter().take(1).cloned().collect(),
        };
        let needs = sets.iter().map(|set| level.required(set.len())).collect();
        Self { mode, sets, needs, replicas, stale: None, done: false }
    }

    /// A read at `level` from `readable`, the replicas of a read set of
    /// `of` that can answer (a replica refilling the partition cannot).
    /// QUORUM is reckoned over all `of`: a QUORUM write may be acknowledged
    /// by refilling replicas, so a read must reach a majority of the whole
    /// set among the others to meet it, and fails rather than answer from
    /// fewer. ONE and ALL ask what can answer: one of them, every one.
    pub fn reading(level: Consistency, readable: &[NodeId], of: usize) -> Self {
        let mut round = Self::new(Mode::Needed, level, readable);
        if level == Consistency::Quorum {
            round.needs = vec![level.required(of.max(readable.len()))];
        }
        round
    }

    /// How many useful answers the level needs in each set.
    pub fn required(&self) -> Vec<usize> {
        self.needs.clone()
    }

    /// How many replicas answered usefully so far.
    pub fn acked(&self) -> usize {
        self.count(Replica::Answered)
    }

    /// The replicas that answered usefully, in preference order.
    pub fn answered(&self) -> Vec<NodeId> {
        self.nodes_in(Replica::Answered)
    }

    /// The replicas still asked and unanswered.
    pub fn outstanding(&self) -> Vec<NodeId> {
        self.nodes_in(Replica::Asked)
    }

    /// The first requests of the round.
    pub fn start(&mut self) -> Step {
        if self.tally() == Tally::Failed {
            return self.fail();
        }
        match self.mode {
            Mode::All => self.ask(self.replicas.len()),
            Mode::Needed => self.ask_short(),
        }
    }

    /// Takes one event in and says what to do next.
    pub fn on(&mut self, event: Event) -> Step {
        assert!(!self.done, "event {event:?} after the round ended");
        match event {
            Event::Answered(node) => {
                self.settle(node, Replica::Answered);
                match self.tally() {
                    Tally::Met => self.finish(Step::Met),
                    Tally::Pending | Tally::Failed => Step::Wait,
                }
            }
            Event::Failed(node) => self.settle_failure(node),
            Event::Stale { node, epoch } => {
                if self.stale.is_none_or(|(_, known)| epoch > known) {
                    self.stale = Some((node, epoch));
                }
                self.settle_failure(node)
            }
            Event::Slow => self.ask(1),
            Event::Deadline => self.fail(),
        }
    }

    /// Met once every set has its answers; failed once some set has too
    /// few replicas left that could answer.
    fn tally(&self) -> Tally {
        let mut met = !self.sets.is_empty();
        for (set, &required) in self.sets.iter().zip(&self.needs) {
            let (answered, failed) = (self.count_in(set, Replica::Answered), self.count_in(set, Replica::Failed));
            if required == 0 || set.len() - failed < required {
                return Tally::Failed;
            }
            met &= answered >= required;
        }
        if met { Tally::Met } else { Tally::Pending }
    }

    fn settle_failure(&mut self, node: NodeId) -> Step {
        self.settle(node, Replica::Failed);
        if self.tally() == Tally::Failed {
            return self.fail();
        }
        // Replace the failed one if those asked can no longer meet the level.
        self.ask_short()
    }

    /// Asks, in each set, as many idle replicas as the answered and asked
    /// ones fall short of its level.
    fn ask_short(&mut self) -> Step {
        let mut asked = Vec::new();
        for i in 0..self.sets.len() {
            let set = &self.sets[i];
            let pending = self.count_in(set, Replica::Answered) + self.count_in(set, Replica::Asked);
            let short = self.needs[i].saturating_sub(pending);
            let idle: Vec<NodeId> = self
                .replicas
                .iter()
                .filter(|(n, s)| *s == Replica::Idle && set.contains(n))
                .map(|(n, _)| *n)
                .take(short)
                .collect();
            for node in idle {
                self.set_state(node, Replica::Asked);
                asked.push(node);
            }
        }
        if asked.is_empty() { Step::Wait } else { Step::Ask(asked) }
    }

    /// Asks up to `n` more replicas, the most preferred idle ones first.
    fn ask(&mut self, n: usize) -> Step {
        let mut asked = Vec::new();
        for (node, state) in self.replicas.iter_mut().filter(|(_, s)| *s == Replica::Idle).take(n) {
            *state = Replica::Asked;
            asked.push(*node);
        }
        if asked.is_empty() { Step::Wait } else { Step::Ask(asked) }
    }

    fn settle(&mut self, node: NodeId, to: Replica) {
        let state = self.state_mut(node);
        assert_eq!(*state, Replica::Asked, "node {node} answered without being asked, or twice");
        *state = to;
    }

    fn set_state(&mut self, node: NodeId, to: Replica) {
        *self.state_mut(node) = to;
    }

    fn state_mut(&mut self, node: NodeId) -> &mut Replica {
        self.replicas
            .iter_mut()
            .find(|(n, _)| *n == node)
            .map(|(_, s)| s)
            .unwrap_or_else(|| panic!("node {node} is not a replica of this round"))
    }

    fn count_in(&self, set: &[NodeId], state: Replica) -> usize {
        self.replicas.iter().filter(|(n, s)| *s == state && set.contains(n)).count()
    }

    fn fail(&mut self) -> Step {
        let failed = Step::Failed { acked: self.acked(), stale: self.stale };
        self.finish(failed)
    }

    fn finish(&mut self, step: Step) -> Step {
        self.done = true;
        step
    }

    fn count(&self, state: Replica) -> usize {
        self.replicas.iter().filter(|(_, s)| *s == state).count()
    }

    fn nodes_in(&self, state: Replica) -> Vec<NodeId> {
        self.replicas.iter().filter(|(_, s)| *s == state).map(|(n, _)| *n).collect()
    }
}

/// One line per replica state, for scenario tests and logs:
/// `1:answered 2:asked 3:idle`.
impl fmt::Display for Fanout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let states: Vec<String> = self
            .replicas
            .iter()
            .map(|(n, s)| {
                let s = match s {
                    Replica::Idle => "idle",
                    Replica::Asked => "asked",
                    Replica::Answered => "answered",
                    Replica::Failed => "failed",
                };
                format!("{n}:{s}")
            })
            .collect();
        f.write_str(&states.join(" "))
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Ask(nodes) => write!(f, "ask {}", join(nodes)),
            Step::Wait => f.write_str("wait"),
            Step::Met => f.write_str("met"),
            Step::Failed { acked, stale: None } => write!(f, "failed acked={acked}"),
            Step::Failed { acked, stale: Some((node, epoch)) } => {
                write!(f, "failed acked={acked} stale={node}@{epoch}")
            }
        }
    }
}

/// Node ids separated by spaces.
pub(crate) fn join(nodes: &[NodeId]) -> String {
    nodes.iter().map(NodeId::to_string).collect::<Vec<_>>().join(" ")
}

/// The order in which to ask a partition's replicas: live ones before those
/// the router believes down, faster before slower, and replicas of about
/// the same speed in turns, so that they share the load.
///
/// `latency_us` gives a replica's recent typical latency, if known; an
/// unknown one counts as fast, so that it gets measured. Latencies within
/// [`BAND`] of each other count as the same speed. `turn` rotates the
/// order among equals: pass a counter that changes per request.
pub fn preference(
    replicas: &[NodeId],
    latency_us: impl Fn(NodeId) -> Option<u64>,
    down: impl Fn(NodeId) -> bool,
    turn: usize,
) -> Vec<NodeId> {
    let n = replicas.len().max(1);
    let mut ranked: Vec<(bool, u32, usize, NodeId)> = replicas
        .iter()
        .enumerate()
        .map(|(i, &node)| (down(node), band(latency_us(node)), (i + n - turn % n) % n, node))
        .collect();
    ranked.sort_unstable();
    ranked.into_iter().map(|(_, _, _, node)| node).collect()
}

/// How much faster a replica must be to be preferred: latencies within this
/// factor of each other fall in the same band.
pub const BAND: f64 = 1.5;

/// The speed band of a latency: the whole number of [`BAND`] factors above
/// 100 µs.
fn band(latency_us: Option<u64>) -> u32 {
    match latency_us {
        None => 0,
        Some(us) => ((us.max(100) as f64 / 100.0).ln() / BAND.ln()) as u32,
    }
}
