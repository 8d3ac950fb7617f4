//! The router's view of the cluster: the newest map it has heard of, and
//! which nodes answer.
//!
//! One task follows the map with a long-poll on the epoch against any node
//! that answers; a coordinator told of a newer epoch by a node asks that
//! node directly. Another task pings every member each second, on
//! connections of its own (see [`ClusterView`]'s `pings`). The router
//! keeps nothing else: restart it and it learns everything again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringup_proto::NodeId;
use ringup_proto::cluster::{ClusterMap, MapCommand};
use ringup_proto::rpc::{Request, Response, RpcError, Unavailable};
use ringup_rpc::{Client, Clock, Pool};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long one map long-poll waits on a node.
const LONG_POLL: Duration = Duration::from_secs(10);
/// How often members are pinged.
const PING_EVERY: Duration = Duration::from_secs(1);
/// How long a ping may take.
const PING_TIMEOUT: Duration = Duration::from_millis(800);
/// How many nodes one proposal asks, redirects included.
const MAX_PROPOSE_HOPS: usize = 12;
/// How long a node without a map, or one that failed, rests before the
/// next map poll.
const POLL_AGAIN: Duration = Duration::from_millis(200);
/// How often a wait for an epoch asks again.
const EPOCH_AGAIN: Duration = Duration::from_millis(50);

/// What the router last saw of one node.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// Whether the last ping was answered.
    pub live: bool,
    /// When the node last answered.
    pub last_seen: Option<Instant>,
}

/// The cluster as this router sees it.
pub struct ClusterView {
    pool: Arc<Pool>,
    /// Connections of their own for the liveness pings, with the same TLS:
    /// a ping queued behind megabytes of batches on a busy data connection
    /// would time out, and its timeout would close that connection and
    /// fail the batches with it.
    pings: Pool,
    seeds: Vec<String>,
    map: watch::Sender<Option<Arc<ClusterMap>>>,
    /// Held only to read or update entries, never across an `.await`.
    liveness: Mutex<BTreeMap<NodeId, Liveness>>,
    /// What the polls and pings sleep on.
    clock: Clock,
}

impl ClusterView {
    /// A view that will learn the map from `seeds`.
    pub fn new(pool: Arc<Pool>, seeds: Vec<String>) -> Self {
        let pings = Pool::with_tls(pool.tls().cloned());
        let clock = Clock::system();
        Self { pool, pings, seeds, map: watch::Sender::new(None), liveness: Mutex::default(), clock }
    }

    /// The same view, sleeping on `clock`.
    pub fn on_clock(self, clock: Clock) -> Self {
        Self { clock, ..self }
    }

    /// The connection pool shared with the coordinator.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The newest map, if any has been learned.
    pub fn map(&self) -> Option<Arc<ClusterMap>> {
        self.map.borrow().clone().filter(|m| m.is_ready())
    }

    /// The client of a member.
    pub fn client(&self, map: &ClusterMap, node: NodeId) -> Option<Arc<Client>> {
        map.addr(node).map(|addr| self.pool.get(addr))
    }

    /// Liveness of every member pinged so far.
    pub fn liveness(&self) -> BTreeMap<NodeId, Liveness> {
        self.liveness.lock().expect("liveness poisoned").clone()
    }

    /// Whether the last ping of `node` went unanswered.
    pub fn is_down(&self, node: NodeId) -> bool {
        self.liveness.lock().expect("liveness poisoned").get(&node).is_some_and(|l| !l.live)
    }

    /// Keeps `map` if it is valid and newer than the one held.
    fn offer(&self, map: ClusterMap) {
        if let Err(e) = map.validate() {
            tracing::error!(epoch = map.epoch, error = %e, "ignoring an invalid cluster map");
            return;
        }
        self.map.send_if_modified(|held| {
            let newer = held.as_ref().is_none_or(|h| map.epoch > h.epoch);
            if newer {
                tracing::info!(epoch = map.epoch, "cluster map updated");
                *held = Some(Arc::new(map));
            }
            newer
        });
    }

    fn epoch(&self) -> u64 {
        self.map.borrow().as_ref().map_or(0, |m| m.epoch)
    }

    /// Asks `node` for its map because it reported an epoch newer than
    /// ours; returns once we hold at least `epoch` or the node fails to
    /// answer in `timeout`.
    pub async fn refresh_from(&self, client: &Client, epoch: u64, timeout: Duration) {
        if self.epoch() >= epoch {
            return;
        }
        let request = Request::GetMap { known_epoch: self.epoch(), wait_ms: 0 };
        if let Ok(Response::Map(map)) = client.call(request, timeout).await {
            self.offer(*map);
        }
    }

    /// Waits until the view holds a map of at least `epoch`, asking the
    /// members for it; returns whether it does within `timeout`.
    pub async fn wait_epoch(&self, epoch: u64, timeout: Duration) -> bool {
        let deadline = self.clock.now() + timeout;
        while self.epoch() < epoch {
            for addr in self.candidates() {
                self.refresh_from(&self.pool.get(&addr), epoch, Duration::from_millis(500)).await;
                if self.epoch() >= epoch {
                    return true;
                }
            }
            if self.clock.now() >= deadline {
                return false;
            }
            self.clock.sleep(EPOCH_AGAIN).await;
        }
        true
    }

    /// Applies a map command through the metadata leader: asks the members
    /// in turn, following redirects; returns the new epoch.
    pub async fn propose(&self, command: MapCommand, timeout: Duration) -> Result<u64, RpcError> {
        let mut last = RpcError::Unavailable(Unavailable::NoNode);
        let mut addrs = self.candidates();
        let mut asked = 0;
        while let Some(addr) = addrs.get(asked).cloned() {
            asked += 1;
            let request = Request::Propose { command: command.clone() };
            last = match self.pool.get(&addr).call(request, timeout).await {
                Ok(Response::Proposed { epoch }) => return Ok(epoch),
                Ok(Response::Error(RpcError::NotLeader { leader: Some(leader) })) if asked < MAX_PROPOSE_HOPS => {
                    addrs.insert(asked, leader.clone());
                    RpcError::NotLeader { leader: Some(leader) }
                }
                Ok(Response::Error(e @ RpcError::Refused(_))) => return Err(e),
                Ok(Response::Error(e)) => e,
                Ok(other) => RpcError::Unavailable(Unavailable::UnexpectedAnswer {
                    addr: addr.clone(),
                    answer: format!("{other:?}"),
                }),
                Err(e) => RpcError::Unavailable(Unavailable::Unreachable { addr: addr.clone(), reason: e.to_string() }),
            };
        }
        Err(last)
    }

    /// Follows the map forever: long-polls one node at a time, moving on to
    /// the next when one fails.
    pub async fn follow(self: Arc<Self>) {
        let mut turn = 0usize;
        loop {
            let addrs = self.candidates();
            let addr = &addrs[turn % addrs.len()];
            let request = Request::GetMap { known_epoch: self.epoch(), wait_ms: LONG_POLL.as_millis() as u32 };
            match self.pool.get(addr).call(request, LONG_POLL + Duration::from_secs(2)).await {
                Ok(Response::Map(map)) if map.is_ready() => {
                    // A node with nothing newer after the whole wait may be
                    // one left behind (a removed member): ask another next.
                    if map.epoch <= self.epoch() {
                        turn += 1;
                    }
                    self.offer(*map)
                }
                Ok(_) => {
                    // The node has no map yet: ask again shortly.
                    self.clock.sleep(POLL_AGAIN).await;
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "map poll failed; trying another node");
                    turn += 1;
                    self.clock.sleep(POLL_AGAIN).await;
                }
            }
        }
    }

    /// Seeds first, then every member the map names; addresses of removed
    /// members only are left out, unless nothing else is left.
    fn candidates(&self) -> Vec<String> {
        let mut addrs = self.seeds.clone();
        if let Some(map) = self.map() {
            addrs.extend(map.members.values().map(|m| m.addr.clone()).filter(|a| !self.seeds.contains(a)));
            let removed_only = |a: &String| map.member_at(a).is_none() && map.members.values().any(|m| m.addr == *a);
            let live: Vec<String> = addrs.iter().filter(|a| !removed_only(a)).cloned().collect();
            if !live.is_empty() {
                addrs = live;
            }
        }
        addrs
    }

    /// Pings every member each second and records who answers.
    pub async fn watch_liveness(self: Arc<Self>) {
        // Ping as soon as there is a map to name the members.
        let _ = self.map.subscribe().wait_for(|m| m.as_ref().is_some_and(|m| m.is_ready())).await;
        let mut tick = self.clock.interval(PING_EVERY);
        loop {
            tick.tick().await;
            let Some(map) = self.map() else { continue };
            let pings =
                map.members.values().filter(|m| !map.is_gone(m.id)).map(|m| {
                    let client = self.pings.get(&m.addr);
                    async move {
                        (m.id, matches!(client.call(Request::Ping, PING_TIMEOUT).await, Ok(Response::Pong { .. })))
                    }
                });
            let answers = futures::future::join_all(pings).await;
            let now = self.clock.now();
            let mut liveness = self.liveness.lock().expect("liveness poisoned");
            for (node, live) in answers {
                let entry = liveness.entry(node).or_insert(Liveness { live, last_seen: None });
                entry.live = live;
                if live {
                    entry.last_seen = Some(now);
                }
            }
        }
    }
}
