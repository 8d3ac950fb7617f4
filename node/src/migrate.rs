//! The node's side of partition moves: the I/O around the pure core in
//! [`ringup_proto::migration`].
//!
//! - [`Mover`] runs on every node. It watches the map, and for each move in
//!   which this node has work, does it and reports it through the metadata
//!   leader: a new replica of a `streaming` move copies the partition from
//!   its sources in SST chunks ([`Request::StreamChunk`]) and reports
//!   [`MapCommand::StreamDone`]; a replica due to drop a range (`cleanup`,
//!   `aborted`) waits for requests routed before the change to end, drops
//!   it with one range deletion and reports [`MapCommand::CleanedUp`]. A
//!   restarted node finds its unfinished work in the map and starts it
//!   again; a failed stream costs that partition's progress only.
//! - [`lead`] runs the stage [`Driver`] while this node leads the metadata
//!   group, and keeps the group's voters following the members: 3 voters
//!   (5 from 5 up members on), every other member a learner, removed
//!   members out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers};
use ringup_proto::NodeId;
use ringup_proto::backoff::Backoff;
use ringup_proto::cluster::{ClusterMap, MapCommand, MemberState};
use ringup_proto::formation::{self, Follow, Group, Membership};
use ringup_proto::migration::{Driver, Limits, Move, Observed, Stage, Streamed};
use ringup_proto::ring::PartitionId;
use ringup_proto::rpc::{Request, Response, RpcError};
use ringup_rpc::{Clock, Pool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::parts::Parts;
use crate::propose;
use crate::raft::{self, Raft};

/// How long a chunk request may take.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts at copying from the replica being replaced before copying from
/// every other old replica instead.
const PAIRED_ATTEMPTS: u32 = 3;
/// How long a replica waits after seeing a range due for dropping, so that
/// requests routed before the change have ended.
const DROP_DELAY: Duration = Duration::from_secs(1);
/// How often the leader's driver looks at the map when nothing changes.
const DRIVE_EVERY: Duration = Duration::from_millis(250);
/// How long the leader waits for a node to say which epoch it has.
const PING_TIMEOUT: Duration = Duration::from_millis(500);
/// How long an adoption may take.
const ADOPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a mover looks at the map when it does not change.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// The wait before asking a source that is behind again.
const BEHIND_WAIT: Duration = Duration::from_millis(100);
/// The wait after a failed copy, by failures in a row.
const COPY_RETRY: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
/// The wait after a failed range deletion.
const DROP_RETRY: Duration = Duration::from_secs(1);
/// How often a range deletion looks whether the stream into it has ended.
const STREAM_ENDED_EVERY: Duration = Duration::from_millis(50);

/// Why a copy stopped.
pub(crate) enum Copy {
    /// A source has not applied the move's stage yet: ask it again.
    Behind(String),
    /// Anything else: start over, and after a few tries use other sources.
    Failed(String),
}

/// One replica to copy a partition from, at the epoch its map must have
/// reached before it serves the copy.
pub(crate) struct Source {
    /// The replica.
    pub node: NodeId,
    /// The partition.
    pub partition: PartitionId,
    /// The epoch.
    pub epoch: u64,
}

/// Copies a partition from one replica into this node's storage, chunk by
/// chunk (checksummed SST files of merge entries, so that what arrives
/// merges by last-writer-wins with what is here), while `still` holds;
/// `copied` hears what each chunk brought. Returns what was copied.
pub(crate) async fn copy_partition(
    node: &Parts,
    from: &Source,
    timeout: Duration,
    still: impl Fn() -> bool,
    mut copied: impl FnMut(Streamed),
) -> Result<Streamed, Copy> {
    let Source { node: source, partition, epoch } = *from;
    let addr = node.map.borrow().addr(source).map(str::to_string);
    let client = node.pool.get(&addr.ok_or_else(|| Copy::Failed("the source is not a member".into()))?);
    let (mut streamed, mut after) = (Streamed::default(), None);
    loop {
        if !still() {
            return Err(Copy::Failed("the work is no longer wanted".into()));
        }
        let request = Request::StreamChunk { partition, epoch, after: after.clone() };
        let (sst, crc, records, last, done) = match client.call(request, timeout).await {
            Ok(Response::Chunk { sst, crc, records, last, done }) => (sst, crc, records, last, done),
            Ok(Response::Error(RpcError::Behind { known, needed })) => {
                return Err(Copy::Behind(format!("node {source} is at epoch {known}, not {needed}")));
            }
            Ok(Response::Error(e)) => return Err(Copy::Failed(format!("node {source} refused a chunk: {e}"))),
            Ok(other) => return Err(Copy::Failed(format!("node {source} answered {other:?}"))),
            Err(e) => return Err(Copy::Failed(format!("node {source}: {e}"))),
        };
        if crc32fast::hash(&sst) != crc {
            return Err(Copy::Failed(format!("a chunk from node {source} fails its checksum")));
        }
        let chunk = Streamed { bytes: sst.len() as u64, records };
        if !sst.is_empty() {
            node.storage.ingest_chunk(sst, &node.scratch).await.map_err(|e| Copy::Failed(e.to_string()))?;
        }
        streamed = streamed.plus(chunk);
        copied(streamed);
        if done {
            return Ok(streamed);
        }
        after = last;
    }
}

impl std::fmt::Display for Copy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Copy::Behind(e) | Copy::Failed(e) => f.write_str(e),
        }
    }
}

/// A piece of this node's work on one move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Work {
    /// Copy the partition here.
    Stream,
    /// Drop the partition's range here.
    Drop,
}

/// Does this node's work on the moves in the map.
pub struct Mover {
    node: Parts,
    /// Work in flight: partition, the epoch that started its move, kind.
    running: Mutex<BTreeSet<(PartitionId, u64, Work)>>,
    /// Work done and reported, which this node's map may not show yet.
    reported: Mutex<BTreeSet<(PartitionId, u64, Work)>>,
}

/// Takes a piece of work off the running set when it ends, however it ends.
struct Running<'a> {
    mover: &'a Mover,
    key: (PartitionId, u64, Work),
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.mover.running.lock().expect("running poisoned").remove(&self.key);
    }
}

impl Mover {
    /// The mover of the node.
    pub fn new(node: Parts) -> Self {
        Self { node, running: Mutex::default(), reported: Mutex::default() }
    }

    /// Starts the work the map gives this node, whenever the map changes,
    /// until `stop` is raised.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut map = self.node.map.clone();
        while !stop.is_cancelled() {
            let current = map.borrow_and_update().clone();
            self.reported
                .lock()
                .expect("reported poisoned")
                .retain(|(p, started, _)| current.moves.get(p).is_some_and(|m| m.started_epoch == *started));
            for (p, m) in &current.moves {
                if let Some(work) = work_on(self.node.id, m) {
                    self.start(*p, m.clone(), work);
                }
            }
            tokio::select! {
                _ = map.changed() => {}
                _ = stop.cancelled() => {}
                _ = self.node.clock.sleep(LOOK_EVERY) => {}
            }
        }
    }

    fn start(self: &Arc<Self>, partition: PartitionId, m: Move, work: Work) {
        let key = (partition, m.started_epoch, work);
        if self.reported.lock().expect("reported poisoned").contains(&key)
            || !self.running.lock().expect("running poisoned").insert(key)
        {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let _running = Running { mover: &this, key };
            let done = match work {
                Work::Stream => this.stream(partition, &m).await,
                Work::Drop => this.drop_range(partition, &m).await,
            };
            if done {
                this.reported.lock().expect("reported poisoned").insert(key);
            }
        });
    }

    /// Whether move `started` of `partition` is still in `stage`.
    fn still(&self, partition: PartitionId, started: u64, stage: Stage) -> bool {
        self.node.map.borrow().moves.get(&partition).is_some_and(|m| m.started_epoch == started && m.stage == stage)
    }

    /// Copies `partition` here, then reports it. Tries again, from the
    /// start of the range, until it succeeds or the move moves on; returns
    /// whether it reported.
    async fn stream(&self, partition: PartitionId, m: &Move) -> bool {
        let clock = self.node.clock;
        let started_at = clock.now();
        let mut attempt = 0;
        loop {
            if !self.still(partition, m.started_epoch, Stage::Streaming) {
                self.node.progress.clear(partition);
                return false;
            }
            let sources = {
                let map = self.node.map.borrow();
                copy_sources(self.node.id, m, attempt, |n| !map.can_source(n, partition))
            };
            match self.copy(partition, m, &sources).await {
                Err(Copy::Behind(e)) => {
                    // The source is alive but has not applied the stage
                    // yet: wait for it, without giving up on it.
                    tracing::debug!(partition, error = %e, "the source is behind; waiting");
                    clock.sleep(BEHIND_WAIT).await;
                }
                Ok(streamed) => {
                    tracing::info!(
                        partition,
                        ?sources,
                        bytes = streamed.bytes,
                        records = streamed.records,
                        ms = (clock.now() - started_at).as_millis() as u64,
                        "partition copied"
                    );
                    let done =
                        MapCommand::StreamDone { partition, started: m.started_epoch, node: self.node.id, streamed };
                    propose::report(&self.node, done).await;
                    self.node.progress.clear(partition);
                    return true;
                }
                Err(Copy::Failed(e)) => {
                    attempt += 1;
                    tracing::warn!(partition, ?sources, attempt, error = %e, "copying a partition failed; trying again");
                    clock.sleep(COPY_RETRY.after(attempt)).await;
                }
            }
        }
    }

    /// Copies the partition from each of `sources` in turn, chunk by chunk.
    async fn copy(&self, partition: PartitionId, m: &Move, sources: &[NodeId]) -> Result<Streamed, Copy> {
        if sources.is_empty() {
            return Err(Copy::Failed("no live replica to copy from".into()));
        }
        let mut streamed = Streamed::default();
        for source in sources {
            let from = Source { node: *source, partition, epoch: m.stage_epoch };
            let still = || self.still(partition, m.started_epoch, Stage::Streaming);
            let copied = copy_partition(&self.node, &from, CHUNK_TIMEOUT, still, |chunk| {
                self.node.progress.set(partition, m.started_epoch, streamed.plus(chunk));
            })
            .await?;
            streamed = streamed.plus(copied);
        }
        Ok(streamed)
    }

    /// Drops `partition`'s range here once requests routed before the
    /// change have ended and no stream into it is running, then reports it.
    async fn drop_range(&self, partition: PartitionId, m: &Move) -> bool {
        let clock = self.node.clock;
        clock.sleep(DROP_DELAY).await;
        let stream = (partition, m.started_epoch, Work::Stream);
        while self.running.lock().expect("running poisoned").contains(&stream) {
            clock.sleep(STREAM_ENDED_EVERY).await;
        }
        loop {
            match self.node.storage.delete_partition(partition).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(partition, error = %e, "cannot drop a partition's range; trying again");
                    clock.sleep(DROP_RETRY).await;
                }
            }
        }
        tracing::info!(partition, stage = %m.stage, "partition range dropped");
        let cleaned = MapCommand::CleanedUp { partition, started: m.started_epoch, node: self.node.id };
        propose::report(&self.node, cleaned).await;
        true
    }
}

/// What node `me` has left to do on move `m`.
fn work_on(me: NodeId, m: &Move) -> Option<Work> {
    match m.stage {
        Stage::Streaming if m.added().contains(&me) && !m.streamed.contains_key(&me) => Some(Work::Stream),
        Stage::Cleanup | Stage::Aborted if m.to_clean().contains(&me) && !m.cleaned.contains(&me) => Some(Work::Drop),
        _ => None,
    }
}

/// Where new replica `me` copies move `m`'s partition from after `attempt`
/// failed tries: the replica it replaces for the first
/// [`PAIRED_ATTEMPTS`], then every other old replica. None that is
/// `unusable` (gone, or refilling the partition: no full copy).
fn copy_sources(me: NodeId, m: &Move, attempt: u32, unusable: impl Fn(NodeId) -> bool) -> Vec<NodeId> {
    if attempt < PAIRED_ATTEMPTS {
        m.sources(me, unusable)
    } else {
        m.from.iter().copied().filter(|n| *n != me && !unusable(*n)).collect()
    }
}

/// While this node leads the metadata group: keeps the group's membership
/// following the map's members and proposes what the stage driver says,
/// until `stop` is raised.
pub async fn lead(
    raft: Raft,
    id: NodeId,
    pool: Arc<Pool>,
    clock: Clock,
    mut map: watch::Receiver<Arc<ClusterMap>>,
    limits: Limits,
    stop: CancellationToken,
) {
    let started = clock.now();
    let mut driver: Option<Driver> = None;
    while !stop.is_cancelled() {
        if raft.current_leader().await != Some(id) {
            driver = None;
        } else {
            let current = map.borrow_and_update().clone();
            if current.is_ready() {
                follow_members(&raft, &pool, &current).await;
                let driver = driver.get_or_insert_with(|| Driver::new(limits));
                let observed = Observed {
                    now_ms: (clock.now() - started).as_millis() as u64,
                    wall_ms: clock.wall_ms() as i64,
                    applied: if current.moves.is_empty() { BTreeMap::new() } else { applied(&pool, &current).await },
                };
                let mut commands = driver.step(&current, &observed);
                // One log entry for the whole step.
                let command = if commands.len() == 1 { commands.pop() } else { Some(MapCommand::Batch(commands)) };
                if let Some(command) = command.filter(|c| !matches!(c, MapCommand::Batch(b) if b.is_empty()))
                    && let Err(e) = raft::propose(&raft, command.clone()).await
                {
                    tracing::debug!(error = %e, ?command, "driver proposal not applied");
                }
            }
        }
        tokio::select! {
            _ = map.changed() => {}
            _ = stop.cancelled() => {}
            _ = clock.sleep(DRIVE_EVERY) => {}
        }
    }
}

/// The epoch each member that is not removed has applied, by a ping; those
/// that do not answer in time are left out.
async fn applied(pool: &Pool, map: &ClusterMap) -> BTreeMap<NodeId, u64> {
    let pings = map.members.values().filter(|m| m.state != MemberState::Removed).map(|m| {
        let client = pool.get(&m.addr);
        async move { (m.id, client.call(Request::Ping, PING_TIMEOUT).await) }
    });
    futures::future::join_all(pings)
        .await
        .into_iter()
        .filter_map(|(node, answer)| match answer {
            Ok(Response::Pong { epoch, .. }) => Some((node, epoch)),
            _ => None,
        })
        .collect()
}

/// One step towards a metadata group that follows the map
/// ([`formation::follow`]): a wiped member is taken out and refilled, new
/// members are adopted and become learners, the voters change, removed
/// members leave. Each membership change waits for the one before to
/// commit.
async fn follow_members(raft: &Raft, pool: &Pool, map: &ClusterMap) {
    let group = group_of(&raft.metrics().borrow());
    let wiped = match group.settled {
        true => waiting_members(pool, map, &group.known).await,
        false => BTreeSet::new(),
    };
    match formation::follow(map, &group, &wiped) {
        Follow::Nothing => {}
        Follow::Rejoin { node, leave } => {
            tracing::warn!(node, "a member came back with an empty data directory: it refills its partitions");
            if let Err(e) = raft::propose(raft, MapCommand::Rejoin { id: node }).await {
                tracing::warn!(node, error = %e, "cannot start the refill yet");
                return;
            }
            if let Err(e) = raft.change_membership(changes(leave), false).await {
                tracing::warn!(node, error = %e, "cannot take the wiped member out of the metadata group yet");
            }
        }
        Follow::Steps { adopt, change } => {
            for (node, reads_from) in adopt {
                let Some(addr) = map.addr(node).map(str::to_string) else { continue };
                let adopted = pool.get(&addr).call(Request::Adopt { id: node, reads_from }, ADOPT_TIMEOUT).await;
                if !matches!(adopted, Ok(Response::Adopted)) {
                    tracing::debug!(node, answer = ?adopted, "the new member does not take its id yet");
                    continue;
                }
                if let Err(e) = raft.add_learner(node, BasicNode { addr }, false).await {
                    tracing::warn!(node, error = %e, "cannot add a learner yet");
                }
            }
            if let Some(change) = change {
                tracing::info!(from = ?group.voters, %change, "changing the metadata group's membership");
                if let Err(e) = raft.change_membership(changes(change), true).await {
                    tracing::warn!(error = %e, "cannot change the metadata group's membership yet");
                }
            }
        }
    }
}

/// The group as the leader's metrics show it.
fn group_of(metrics: &openraft::RaftMetrics<NodeId, BasicNode>) -> Group {
    let stored = &metrics.membership_config;
    let applied = metrics.last_applied.map(|l| l.index);
    let membership = stored.membership();
    let committed = !stored.log_id().is_some_and(|l| applied.is_none_or(|a| a < l.index));
    let replication = metrics.replication.iter().flatten();
    Group {
        me: metrics.id,
        voters: membership.voter_ids().collect(),
        known: membership.nodes().map(|(n, _)| *n).collect(),
        settled: committed && membership.get_joint_config().len() <= 1,
        matched: replication.map(|(n, l)| (*n, l.map_or(0, |l| l.index))).collect(),
        last_index: metrics.last_log_index.unwrap_or(0),
    }
}

/// The members of the group that answer `Hello` as waiting: they came back
/// with an empty data directory.
async fn waiting_members(pool: &Pool, map: &ClusterMap, known: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
    let members = map.members.values().filter(|m| m.state != MemberState::Removed && known.contains(&m.id));
    let hellos = members.map(|m| async move {
        let answer = pool.get(&m.addr).call(Request::Hello, PING_TIMEOUT).await;
        (m.id, matches!(answer, Ok(Response::Hello { waiting: true, .. })))
    });
    futures::future::join_all(hellos).await.into_iter().filter(|(_, waiting)| *waiting).map(|(n, _)| n).collect()
}

/// A membership change as openraft takes it.
fn changes(change: Membership) -> ChangeMembers<NodeId, BasicNode> {
    match change {
        Membership::Voters(voters) => ChangeMembers::ReplaceAllVoters(voters),
        Membership::Remove(nodes) => ChangeMembers::RemoveNodes(nodes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Partition moved from nodes 1, 2, 3 to 1, 2, 4: node 4 replaces 3.
    fn a_move(stage: Stage) -> Move {
        crate::testing::a_move(&[1, 2, 3], &[1, 2, 4], stage)
    }

    #[test]
    fn only_the_new_replica_streams_and_only_until_it_has_reported() {
        let mut m = a_move(Stage::Streaming);
        let work: Vec<_> = (1..=4).map(|n| work_on(n, &m)).collect();
        assert_eq!(work, [None, None, None, Some(Work::Stream)]);
        m.streamed.insert(4, Streamed { bytes: 10, records: 1 });
        assert_eq!(work_on(4, &m), None, "reported: nothing left");
        for stage in [Stage::WriteBothReadOld, Stage::WriteBothReadNew, Stage::UseNew] {
            assert!((1..=4).all(|n| work_on(n, &a_move(stage)).is_none()), "{stage}: no replica has work");
        }
    }

    #[test]
    fn cleanup_drops_the_old_replica_and_an_abort_the_new_one() {
        let cleanup = a_move(Stage::Cleanup);
        let work: Vec<_> = (1..=4).map(|n| work_on(n, &cleanup)).collect();
        assert_eq!(work, [None, None, Some(Work::Drop), None]);
        let mut aborted = a_move(Stage::Aborted);
        let work: Vec<_> = (1..=4).map(|n| work_on(n, &aborted)).collect();
        assert_eq!(work, [None, None, None, Some(Work::Drop)]);
        aborted.cleaned.insert(4);
        assert_eq!(work_on(4, &aborted), None, "dropped and reported");
    }

    #[test]
    fn a_new_replica_copies_from_the_one_it_replaces_then_from_every_other() {
        let m = a_move(Stage::Streaming);
        let usable = |_| false;
        let tries: Vec<_> = (0..=PAIRED_ATTEMPTS).map(|attempt| copy_sources(4, &m, attempt, usable)).collect();
        assert_eq!(tries[..PAIRED_ATTEMPTS as usize], vec![vec![3]; PAIRED_ATTEMPTS as usize]);
        assert_eq!(tries[PAIRED_ATTEMPTS as usize], vec![1, 2, 3], "after the paired tries: every old replica");
        // The replaced replica gone or refilling: the others at once.
        assert_eq!(copy_sources(4, &m, 0, |n| n == 3), vec![1, 2]);
        assert_eq!(copy_sources(4, &m, PAIRED_ATTEMPTS, |n| n == 2), vec![1, 3]);
        assert_eq!(copy_sources(4, &m, 0, |_| true), Vec::<NodeId>::new(), "nothing usable: nothing to copy from");
    }
}
