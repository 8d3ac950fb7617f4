//! Coordinates reads and writes across a partition's replica set: the
//! async side of the pure core in [`ringup_proto::coordinator`].
//!
//! A request is serialized once ([`Body`]) and sent to the replicas a
//! [`Fanout`] names: a write to every replica, a read only to as many as
//! its level needs, in [`preference`] order (live, then fast, equals in
//! turns). A read asks one more replica when one fails, or when those asked
//! have not answered within the speculative delay: the recent p99 of the
//! replicas asked, within a floor and a ceiling. The coordinator answers as
//! soon as the level is met; a write's calls still running then carry on in
//! one background task, so a slow replica still gets the write. A level
//! that cannot be met in time is an error: the API answers 503 and never
//! 200. A replica that reports a newer epoch makes the coordinator refresh
//! its map and route again.
//!
//! While a partition moves, the map names two sets: a write goes to both
//! and is met only once its level is met in each ([`Fanout::spanning`]),
//! and a read uses the set the move's stage names (the old one until the
//! data has arrived).
//!
//! Reads verify each value's checksum once, as it arrives, merge the
//! answers by last-writer-wins, and write the newest value back to stale
//! replicas before answering, as the core's [`Repair`] plans.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use ringup_proto::NodeId;
use ringup_proto::cluster::ClusterMap;
use ringup_proto::consistency::Consistency;
use ringup_proto::coordinator::fanout::{Event, Fanout, Mode, Step, preference};
use ringup_proto::coordinator::read::{self, Repair, RepairStep, Reply};
use ringup_proto::frame::{Body, FrameError};
use ringup_proto::heal;
use ringup_proto::hlc::{self, DEFAULT_MAX_SKEW_MS, Hlc};
use ringup_proto::rpc::{CollectionRef, Request, Response, RpcError};
use ringup_proto::value::{self, Header, StoredRecord, ValueError, Version};
use ringup_rpc::{CallError, Clock};
use serde_bytes::ByteBuf;
use thiserror::Error;

use crate::latency::Latencies;
use crate::metrics::{CallOutcome, CoordinatorCounters, HintOutcome};
use crate::view::ClusterView;

/// How many times a request is routed afresh after a stale-epoch refusal.
/// A partition's move changes its routing three times, in quick
/// succession, so a request may meet each of them.
const EPOCH_RETRIES: usize = 5;
/// How many scan rounds one list page may take when tombstones hide records.
const MAX_LIST_ROUNDS: usize = 16;
/// How many digests one count round asks each replica for.
const DIGEST_PAGE: usize = 50_000;

/// Why a coordinated request failed.
#[derive(Debug, Error)]
pub enum CoordError {
    /// The router has no cluster map yet.
    #[error("the router has no cluster map yet")]
    NoMap,
    /// Too few replicas answered in time.
    #[error("consistency level {level} needs {needed} of {replicas} replicas, {acked} answered")]
    Unavailable {
        /// The level asked for.
        level: Consistency,
        /// How many answers it needs.
        needed: usize,
        /// How many replicas the partition has.
        replicas: usize,
        /// How many answered.
        acked: usize,
    },
    /// A stored value failed to decode.
    #[error("corrupt value from a replica: {0}")]
    Corrupt(#[from] ValueError),
    /// The request cannot be serialized (too large for a frame).
    #[error("the request cannot be sent: {0}")]
    Encode(#[from] FrameError),
}

/// Where to read or write: one shop's collection.
#[derive(Debug, Clone)]
pub struct Collection {
    /// The shop.
    pub shop: String,
    /// The collection.
    pub collection: String,
}

/// How long a read waits for the replicas it asked before asking one more.
#[derive(Debug, Clone, Copy)]
pub struct Speculation {
    /// The shortest wait, whatever the replicas' p99.
    pub floor: Duration,
    /// The longest wait.
    pub ceiling: Duration,
}

impl Default for Speculation {
    fn default() -> Self {
        Self { floor: Duration::from_millis(5), ceiling: Duration::from_millis(200) }
    }
}

/// Coordinates requests; one per router.
pub struct Coordinator {
    view: Arc<ClusterView>,
    timeout: Duration,
    speculation: Speculation,
    latencies: Arc<Latencies>,
    /// Rotates the order among replicas of the same speed.
    turn: AtomicUsize,
    origin: u64,
    /// What the versions' wall-clock part is read from.
    clock: Clock,
    /// Held only to tick, never across an `.await`.
    hlc: Mutex<Hlc>,
    counters: CoordinatorCounters,
    /// Spaces out the warnings of requests that fail their level.
    failure_log: Throttle,
}

/// Lets something through at most once per second.
#[derive(Default)]
struct Throttle {
    /// When it last let something through, in ms since the epoch.
    last_ms: AtomicU64,
}

impl Throttle {
    /// Whether a second has passed since the last time it said yes, at
    /// wall-clock time `now` (ms).
    fn due(&self, now: u64) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        now >= last + 1000 && self.last_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

impl Coordinator {
    /// A coordinator over `view`, waiting at most `timeout` for replicas,
    /// with the default speculative delay.
    pub fn new(view: Arc<ClusterView>, timeout: Duration) -> Self {
        Self::with_speculation(view, timeout, Speculation::default())
    }

    /// A coordinator with the given speculative delay for reads.
    pub fn with_speculation(view: Arc<ClusterView>, timeout: Duration, speculation: Speculation) -> Self {
        Self {
            view,
            timeout,
            speculation,
            latencies: Arc::new(Latencies::new()),
            turn: AtomicUsize::new(0),
            origin: rand::random(),
            clock: Clock::system(),
            hlc: Mutex::new(Hlc::new()),
            counters: CoordinatorCounters::default(),
            failure_log: Throttle::default(),
        }
    }

    /// The same coordinator, counting its calls into `counters`.
    pub fn counting(self, counters: CoordinatorCounters) -> Self {
        Self { counters, ..self }
    }

    /// The same coordinator, reading the time from `clock`.
    pub fn on_clock(self, clock: Clock) -> Self {
        Self { clock, ..self }
    }

    /// A fresh version for a write.
    pub fn stamp(&self) -> Version {
        let hlc = self.hlc.lock().expect("hlc poisoned").tick(self.clock.wall_ms());
        Version { hlc, origin: self.origin }
    }

    /// Writes encoded records, answering once `level` replicas hold them.
    /// The batch is serialized once for all replicas.
    pub async fn write(
        &self,
        at: &Collection,
        records: Vec<(String, Vec<u8>)>,
        level: Consistency,
    ) -> Result<(), CoordError> {
        let records = records.into_iter().map(|(id, value)| (id, ByteBuf::from(value))).collect();
        self.route(at, level, Mode::All, |target| Request::Write { target, records }).await?;
        Ok(())
    }

    /// Takes note of a version read from a replica, so that this router's
    /// next stamp is newer: a read-modify-write (PATCH) then always wins
    /// over what it read, whichever router wrote that.
    ///
    /// A version further ahead of this router's clock than nodes accept is
    /// not observed (it came from a clock set wrong), so this router's
    /// stamps do not follow it.
    fn observe(&self, version: Version) {
        let now = self.clock.wall_ms();
        if !self.hlc.lock().expect("hlc poisoned").observe(version.hlc, now, DEFAULT_MAX_SKEW_MS) {
            let ahead_ms = hlc::ahead_ms(version.hlc, now);
            tracing::warn!(ahead_ms, origin = version.origin, "a stored version lies ahead of this router's clock");
        }
    }

    /// The newest version of one record, with stale replicas repaired.
    /// Deleted records come back as tombstones.
    ///
    /// The answer stands only once `level` replicas hold the newest value,
    /// counting the repairs (see [`Repair`]). A value that fails its
    /// checksum counts as absent, and its replica as stale.
    pub async fn get(&self, at: &Collection, id: &str, level: Consistency) -> Result<Option<StoredRecord>, CoordError> {
        let mut attempt = 0;
        loop {
            match self.get_once(at, id, level).await {
                // A repair refused because the partition's routing changed
                // meanwhile: read again under the newer map.
                Err(Read::RepairStale { node, epoch, .. }) if attempt < EPOCH_RETRIES => {
                    if let Some(map) = self.view.map()
                        && let Some(client) = self.view.client(&map, node)
                    {
                        self.view.refresh_from(&client, epoch, self.timeout).await;
                    }
                    attempt += 1;
                }
                Err(Read::RepairStale { error, .. } | Read::Failed(error)) => return Err(error),
                Ok(record) => return Ok(record),
            }
        }
    }

    /// One read under the current map, with its repairs.
    async fn get_once(&self, at: &Collection, id: &str, level: Consistency) -> Result<Option<StoredRecord>, Read> {
        let routed = self.route(at, level, Mode::Needed, |target| Request::Get { target, id: id.to_string() }).await?;
        let replies = routed
            .answers
            .into_iter()
            .filter_map(|(node, r)| match r {
                Response::Value(Some(v)) if valid(&v, node, id) => Some((node, Reply::Value(v))),
                Response::Value(Some(_)) => Some((node, Reply::Corrupt)),
                Response::Value(None) => Some((node, Reply::Absent)),
                _ => None,
            })
            .collect();
        let resolution = read::resolve(replies);
        let (mut repair, mut step) = Repair::start(level, &routed.replicas, &resolution);
        let Some(newest) = resolution.newest else {
            return Ok(None);
        };
        let record = StoredRecord::decode_verified(&newest).map_err(CoordError::from)?;
        self.observe(record.version);
        let fix = Request::Write { target: routed.target, records: vec![(id.to_string(), ByteBuf::from(newest))] };
        let fix = Body::encode(&fix).map_err(CoordError::from)?;
        let mut stale = None;
        loop {
            step = match step {
                RepairStep::Write(nodes) => {
                    let (took, refused_stale) = self.repair(&fix, nodes).await;
                    stale = stale.or(refused_stale);
                    repair.repaired(took)
                }
                RepairStep::Done => return Ok(Some(record)),
                RepairStep::Unavailable { holders } => {
                    let replicas = routed.replicas.len();
                    let error =
                        CoordError::Unavailable { level, needed: level.required(replicas), replicas, acked: holders };
                    return Err(match stale {
                        Some((node, epoch)) => Read::RepairStale { node, epoch, error },
                        None => Read::Failed(error),
                    });
                }
            };
        }
    }

    /// Up to `limit` live records after `after`, in id order, merged from
    /// `level` replicas, and the id to continue after if more may follow.
    pub async fn list(
        &self,
        at: &Collection,
        mut after: Option<String>,
        limit: usize,
        level: Consistency,
    ) -> Result<(Vec<(String, StoredRecord)>, Option<String>), CoordError> {
        let mut page = Vec::new();
        for _ in 0..MAX_LIST_ROUNDS {
            let ask = limit.saturating_sub(page.len());
            let request = |target| Request::Scan { target, after: after.clone(), limit: ask as u32 };
            let answers = self.route(at, level, Mode::Needed, request).await?.answers;
            let pages = answers.into_iter().filter_map(|(node, r)| match r {
                Response::Entries { entries, more } => {
                    let items = entries.into_iter().filter(|e| valid(&e.value, node, &e.id)).map(|e| (e.id, e.value));
                    Some(Page { items: items.collect(), more })
                }
                _ => None,
            });
            let (merged, bound) = merge_pages(pages.collect(), ask, |held, new| value::merge(held, new) == &new[..]);
            for (id, bytes) in merged {
                let record = StoredRecord::decode_verified(&bytes)?;
                self.observe(record.version);
                if !record.tombstone {
                    page.push((id, record));
                }
            }
            match bound {
                None => return Ok((page, None)),
                Some(bound) if page.len() >= limit => return Ok((page, Some(bound))),
                Some(bound) => after = Some(bound),
            }
        }
        // Many tombstones in a row: answer what there is and let the
        // client continue from where the scan stopped.
        Ok((page, after))
    }

    /// How many live records a collection holds, merged from `level`
    /// replicas a page of digests at a time.
    pub async fn count(&self, at: &Collection, level: Consistency) -> Result<u64, CoordError> {
        let (mut after, mut live) = (None, 0u64);
        loop {
            let request = |target| Request::Digests { target, after: after.clone(), limit: DIGEST_PAGE as u32 };
            let answers = self.route(at, level, Mode::Needed, request).await?.answers;
            let pages = answers.into_iter().filter_map(|(_, r)| match r {
                Response::Digests { digests, more } => {
                    Some(Page { items: digests.into_iter().map(|d| (d.id, (d.version, d.tombstone))).collect(), more })
                }
                _ => None,
            });
            let (merged, bound) = merge_pages(pages.collect(), DIGEST_PAGE, |held, new| new.0 > held.0);
            live += merged.iter().filter(|(_, (_, tombstone))| !tombstone).count() as u64;
            match bound {
                None => return Ok(live),
                Some(bound) => after = Some(bound),
            }
        }
    }

    /// Writes a read's newest value to `nodes` and waits for them; returns
    /// how many took it, and a replica that refused it for a newer epoch.
    async fn repair(&self, fix: &Body, nodes: Vec<NodeId>) -> (usize, Option<(NodeId, u64)>) {
        let Some(map) = self.view.map() else { return (0, None) };
        self.counters.repairs(nodes.len());
        let writes = nodes.into_iter().map(|node| {
            let call = self.call(&map, node, fix);
            async move {
                match call.await {
                    (_, Ok(Response::Written)) => Ok(()),
                    (node, Ok(Response::Error(RpcError::StaleEpoch { current }))) => Err(Some((node, current))),
                    (node, Ok(other)) => {
                        tracing::warn!(node, answer = ?other, "read repair refused");
                        Err(None)
                    }
                    (node, Err(e)) => {
                        tracing::warn!(node, error = %e, "read repair failed");
                        Err(None)
                    }
                }
            }
        });
        let results = futures::future::join_all(writes).await;
        let stale = results.iter().filter_map(|r| r.err().flatten()).max_by_key(|(_, epoch)| *epoch);
        (results.iter().filter(|r| r.is_ok()).count(), stale)
    }

    /// Routes a request to the shop's partition under the current map and
    /// runs rounds until the level is met, routing afresh after a stale
    /// epoch; returns the answers with where they were routed.
    async fn route(
        &self,
        at: &Collection,
        level: Consistency,
        mode: Mode,
        make: impl FnOnce(CollectionRef) -> Request,
    ) -> Result<Routed, CoordError> {
        let (mut map, target) = self.target(at)?;
        let mut request = make(target);
        let mut attempt = 0;
        loop {
            let target = request.target_mut().expect("only data requests are routed").clone();
            let body = Body::encode(&request)?;
            let sets = Sets::of(&map, target.partition, mode);
            let replicas = sets.order.clone();
            match self.round(&map, &sets, level, mode, &body).await {
                Round::Met(answers) => return Ok(Routed { target, replicas, answers }),
                Round::Failed { stale: Some((node, epoch)), .. } if attempt < EPOCH_RETRIES => {
                    if let Some(client) = self.view.client(&map, node) {
                        self.view.refresh_from(&client, epoch, self.timeout).await;
                    }
                    let target;
                    (map, target) = self.target(at)?;
                    *request.target_mut().expect("only data requests are routed") = target;
                    attempt += 1;
                }
                Round::Failed { acked, .. } => {
                    let needed = level.required(replicas.len());
                    return Err(CoordError::Unavailable { level, needed, replicas: replicas.len(), acked });
                }
            }
        }
    }

    /// What a write's last calls need to have its misses hinted once they
    /// end: the replica that keeps the hints, and the write.
    fn hinter(&self, map: &ClusterMap, body: &Body, answers: &[(NodeId, Response)]) -> Hinter {
        let took: Vec<NodeId> =
            answers.iter().filter(|(_, r)| matches!(r, Response::Written)).map(|(n, _)| *n).collect();
        let holder = took.first().and_then(|n| Some((*n, self.view.client(map, *n)?)));
        let gone = map.members.keys().copied().filter(|n| map.is_gone(*n)).collect();
        Hinter { took, gone, holder, body: body.clone(), timeout: self.timeout, counters: self.counters.clone() }
    }

    /// The current map and where the shop's collection lies under it.
    fn target(&self, at: &Collection) -> Result<(Arc<ClusterMap>, CollectionRef), CoordError> {
        let map = self.view.map().ok_or(CoordError::NoMap)?;
        let partition = map.partition_of(&at.shop);
        let target =
            CollectionRef { epoch: map.epoch, partition, shop: at.shop.clone(), collection: at.collection.clone() };
        Ok((map, target))
    }

    /// One round under one map: sends as the [`Fanout`] says and feeds it
    /// every answer, the speculative delay and the deadline.
    async fn round(&self, map: &ClusterMap, sets: &Sets, level: Consistency, mode: Mode, body: &Body) -> Round {
        let order = match mode {
            Mode::All => sets.order.clone(),
            Mode::Needed => {
                let turn = self.turn.fetch_add(1, Ordering::Relaxed);
                preference(&sets.order, |n| self.latencies.typical_us(n), |n| self.view.is_down(n), turn)
            }
        };
        let mut fanout = match mode {
            Mode::All => Fanout::spanning(mode, level, &order, &sets.sets),
            Mode::Needed => Fanout::reading(level, &order, sets.of),
        };
        let mut calls = FuturesUnordered::new();
        let mut answers = Vec::new();
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut speculate_at = None;
        let mut asked_before = false;
        // Replicas that did not take a write.
        let mut missed = Vec::new();
        // Why replicas failed, for the log when the level is not met.
        let mut why = Vec::new();
        let mut step = fanout.start();
        loop {
            step = match step {
                Step::Ask(nodes) => {
                    if asked_before {
                        self.counters.speculative(nodes.len());
                    }
                    asked_before = true;
                    calls.extend(nodes.iter().map(|node| self.call(map, *node, body)));
                    if mode == Mode::Needed {
                        let delay = self.latencies.speculative_delay(
                            &fanout.outstanding(),
                            self.speculation.floor,
                            self.speculation.ceiling,
                        );
                        speculate_at = Some(tokio::time::Instant::now() + delay);
                    }
                    Step::Wait
                }
                Step::Wait => {
                    let event = tokio::select! {
                        Some((node, answer)) = calls.next() => {
                            if let Some(reason) = failure(&answer) {
                                why.push(format!("node {node}: {reason}"));
                            }
                            event(node, answer, &mut answers)
                        }
                        _ = sleep_until(speculate_at) => {
                            speculate_at = None;
                            Event::Slow
                        }
                        _ = tokio::time::sleep_until(deadline) => Event::Deadline,
                    };
                    if let Event::Failed(node) | Event::Stale { node, .. } = event {
                        missed.push(node);
                    }
                    fanout.on(event)
                }
                Step::Met => {
                    match mode {
                        // The slower replicas still get the write; those
                        // that miss it are hinted.
                        Mode::All if !calls.is_empty() || !missed.is_empty() => {
                            let hinter = self.hinter(map, body, &answers);
                            tokio::spawn(async move {
                                while let Some((node, answer)) = calls.next().await {
                                    if !matches!(answer, Ok(Response::Written)) {
                                        missed.push(node);
                                    }
                                }
                                hinter.hint(&missed).await;
                            });
                        }
                        Mode::All => {}
                        // A read drops the calls it no longer needs; their
                        // replicas took at least this long.
                        Mode::Needed => {
                            for node in fanout.outstanding() {
                                self.latencies.answered(node, started.elapsed());
                            }
                        }
                    }
                    return Round::Met(answers);
                }
                Step::Failed { acked, stale } => {
                    let waited = fanout.outstanding();
                    if !waited.is_empty() {
                        why.push(format!("nodes {waited:?}: no answer in {:?}", started.elapsed()));
                    }
                    if self.failure_log.due(self.clock.wall_ms()) {
                        tracing::warn!(?level, acked, why = why.join("; "), "a request did not meet its level");
                    }
                    return Round::Failed { acked, stale };
                }
            };
        }
    }

    /// One call to one replica, timed into the node's latencies. Owns what
    /// it needs, so a write's last calls can finish in the background.
    fn call(
        &self,
        map: &ClusterMap,
        node: NodeId,
        body: &Body,
    ) -> impl Future<Output = (NodeId, Result<Response, CallError>)> + Send + 'static {
        // A removed member is gone for good: no call, a failure at once.
        let client = self.view.client(map, node).filter(|_| !map.is_gone(node));
        let (body, timeout, latencies, counters) =
            (body.clone(), self.timeout, self.latencies.clone(), self.counters.clone());
        async move {
            let Some(client) = client else {
                let reason = "not in the map".to_string();
                return (node, Err(CallError::Unreachable { addr: format!("node {node}"), reason }));
            };
            let started = Instant::now();
            let answer = client.send(&body, timeout).await;
            match &answer {
                Ok(response) => {
                    latencies.answered(node, started.elapsed());
                    let refused = matches!(response, Response::Error(_));
                    counters.call(if refused { CallOutcome::Refused } else { CallOutcome::Answered });
                }
                Err(_) => {
                    latencies.failed(node);
                    counters.call(CallOutcome::Failed);
                }
            }
            (node, answer)
        }
    }
}

/// Why a replica's answer does not count, if it does not.
fn failure(answer: &Result<Response, CallError>) -> Option<String> {
    match answer {
        Ok(Response::Error(e)) => Some(e.to_string()),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// What a replica's answer means to the round; useful answers are kept.
fn event(node: NodeId, answer: Result<Response, CallError>, answers: &mut Vec<(NodeId, Response)>) -> Event {
    match answer {
        Ok(Response::Error(RpcError::StaleEpoch { current })) => Event::Stale { node, epoch: current },
        Ok(Response::Error(e)) => {
            tracing::debug!(node, error = %e, "replica refused");
            Event::Failed(node)
        }
        Ok(response) => {
            answers.push((node, response));
            Event::Answered(node)
        }
        Err(e) => {
            tracing::debug!(node, error = %e, "replica failed");
            Event::Failed(node)
        }
    }
}

/// Sleeps until `at`, or forever when there is no `at`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Where one round goes: the replicas to ask, and the sets in each of
/// which the level must be met.
struct Sets {
    /// Every replica of the sets once.
    order: Vec<NodeId>,
    /// One set, or during a move both the old and the new.
    sets: Vec<Vec<NodeId>>,
    /// For a read: how many replicas its read set has, those refilling
    /// included; its level is reckoned over them.
    of: usize,
}

impl Sets {
    /// A write goes to every write set of the partition (both sets during a
    /// move), a read to the replicas of its read set that are not
    /// refilling it.
    fn of(map: &ClusterMap, partition: u32, mode: Mode) -> Self {
        match mode {
            Mode::All => Self {
                order: map.write_targets(partition),
                sets: map.write_sets(partition).into_iter().map(<[NodeId]>::to_vec).collect(),
                of: 0,
            },
            Mode::Needed => {
                // A replica refilling the partition after its data was
                // wiped serves no reads; the level still counts it.
                let reads = map.readable(partition);
                Self { order: reads.clone(), sets: vec![reads], of: map.read_set(partition).len() }
            }
        }
    }
}

/// Hints the replicas a write missed, once its calls have all ended: the
/// first replica that took it keeps them (see
/// [`ringup_proto::heal::hint_plan`]).
struct Hinter {
    took: Vec<NodeId>,
    /// Removed members: no hint is kept for them.
    gone: Vec<NodeId>,
    holder: Option<(NodeId, Arc<ringup_rpc::Client>)>,
    body: Body,
    timeout: Duration,
    counters: CoordinatorCounters,
}

impl Hinter {
    async fn hint(self, missed: &[NodeId]) {
        let Some((holder, for_nodes)) = heal::hint_plan(&self.took, missed) else { return };
        let Some((_, client)) = self.holder.filter(|(h, _)| *h == holder) else { return };
        let Ok(Request::Write { target, records }) = ringup_proto::frame::from_bytes::<Request>(self.body.bytes())
        else {
            return;
        };
        for for_node in for_nodes.into_iter().filter(|n| !self.gone.contains(n)) {
            let hint = Request::Hint { for_node, target: target.clone(), records: records.clone() };
            let outcome = match client.call(hint, self.timeout).await {
                Ok(Response::Written) => HintOutcome::Kept,
                Ok(Response::Error(RpcError::HintsFull { .. })) => HintOutcome::Refused,
                other => {
                    tracing::debug!(holder, for_node, answer = ?other, "a hint was not kept");
                    HintOutcome::Failed
                }
            };
            self.counters.hint(outcome);
        }
    }
}

/// Why one read failed.
enum Read {
    /// Its repairs fell short because a replica knows a newer epoch: read
    /// again after refreshing the map from `node`.
    RepairStale {
        /// The replica.
        node: NodeId,
        /// The epoch it knows.
        epoch: u64,
        /// The error to give if no more reads are tried.
        error: CoordError,
    },
    /// Anything else.
    Failed(CoordError),
}

impl From<CoordError> for Read {
    fn from(e: CoordError) -> Self {
        Read::Failed(e)
    }
}

/// A request that met its level.
struct Routed {
    /// Where it was routed, epoch included.
    target: CollectionRef,
    /// The partition's replica set under that map.
    replicas: Vec<NodeId>,
    /// The answers that met the level.
    answers: Vec<(NodeId, Response)>,
}

/// The end of one round.
enum Round {
    /// Enough replicas answered (a write's calls still out end in the
    /// background, and its misses are hinted).
    Met(Vec<(NodeId, Response)>),
    /// Too few answered; a replica may know a newer map.
    Failed { acked: usize, stale: Option<(NodeId, u64)> },
}

/// One replica's page of a scan: items in id order, and whether the
/// replica stopped before the end of the range.
pub struct Page<T> {
    /// Id and item, in id order.
    pub items: Vec<(String, T)>,
    /// Whether the replica may hold more after the last item.
    pub more: bool,
}

/// Merges pages from several replicas, keeping per id the item `newer`
/// prefers, and at most `limit` ids.
///
/// A replica that stopped early may hold more ids past its last one, so the
/// merge is complete only up to the smallest such last id: the bound,
/// returned as the cursor to continue after (`None` when every replica
/// reached the end).
pub fn merge_pages<T>(
    pages: Vec<Page<T>>,
    limit: usize,
    newer: impl Fn(&T, &T) -> bool,
) -> (Vec<(String, T)>, Option<String>) {
    let mut bound = pages.iter().filter(|p| p.more).filter_map(|p| p.items.last()).map(|(id, _)| id.clone()).min();
    let mut merged: BTreeMap<String, T> = BTreeMap::new();
    for (id, item) in pages.into_iter().flat_map(|p| p.items) {
        if bound.as_ref().is_some_and(|b| &id > b) {
            continue;
        }
        match merged.get_mut(&id) {
            Some(held) if newer(held, &item) => *held = item,
            Some(_) => {}
            None => {
                merged.insert(id, item);
            }
        }
    }
    let mut merged: Vec<(String, T)> = merged.into_iter().collect();
    if merged.len() > limit {
        merged.truncate(limit);
        bound = merged.last().map(|(id, _)| id.clone());
    }
    (merged, bound)
}

/// Whether a value from a replica passes its checksum; logs it if not.
fn valid(bytes: &[u8], node: NodeId, id: &str) -> bool {
    match Header::read(bytes) {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(node, id, error = %e, "a replica holds a corrupt value; ignoring it");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ids: &[(&str, u64)], more: bool) -> Page<u64> {
        Page { items: ids.iter().map(|(id, v)| (id.to_string(), *v)).collect(), more }
    }

    fn newer(held: &u64, new: &u64) -> bool {
        new > held
    }

    #[test]
    fn merged_pages_keep_the_newest_and_stop_at_the_first_unfinished_page() {
        let a = page(&[("a", 1), ("b", 5), ("c", 1)], true);
        let b = page(&[("a", 2), ("b", 1)], false);
        let (merged, bound) = merge_pages(vec![a, b], 3, newer);
        assert_eq!(bound.as_deref(), Some("c"));
        assert_eq!(merged, [("a".to_string(), 2), ("b".to_string(), 5), ("c".to_string(), 1)]);
    }

    #[test]
    fn an_unfinished_page_bounds_what_a_finished_one_may_add() {
        let unfinished = page(&[("a", 1), ("b", 1)], true);
        let finished_but_further = page(&[("a", 1), ("z", 1)], false);
        let (merged, bound) = merge_pages(vec![unfinished, finished_but_further], 2, newer);
        assert_eq!(bound.as_deref(), Some("b"));
        assert_eq!(merged.len(), 2, "z lies past the bound and must wait for the next page");
    }

    #[test]
    fn the_union_of_pages_is_cut_at_the_limit() {
        let a = page(&[("a", 1), ("c", 1), ("e", 1)], true);
        let b = page(&[("b", 1), ("d", 1)], false);
        let (merged, bound) = merge_pages(vec![a, b], 3, newer);
        let ids: Vec<&str> = merged.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(bound.as_deref(), Some("c"), "the next page starts after the last id returned");
    }

    #[test]
    fn pages_that_all_ended_have_no_bound() {
        let (merged, bound) = merge_pages(vec![page(&[("a", 1)], false), page(&[], false)], 5, newer);
        assert_eq!(merged.len(), 1);
        assert_eq!(bound, None);
    }
}
