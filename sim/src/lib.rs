//! A deterministic simulation of a whole ringup cluster: 3 to 6 nodes and
//! two routers, run over the protocol's pure cores, with faults, for many
//! seeds. Each seed replays bit for bit.
//!
//! **Why our own executor.** The protocol's decisions are already pure
//! functions and state machines in `ringup-proto`: the map and its
//! commands ([`ClusterMap::apply`]), the stage driver ([`Driver`]), a
//! coordinator's round ([`Fanout`]) and its reading of answers
//! ([`read::resolve`]), a node's epoch check ([`check_route`]), the refill
//! rules, the hybrid logical clock and the merge of values
//! ([`value::merge`]). A discrete-event loop that calls them, with one
//! seeded random source and one simulated clock, is all the simulation
//! needs: no runtime, no threads, nothing that can make two runs of a
//! seed differ, and a thousand seeds take seconds. `turmoil` or `madsim`
//! would run the real async node instead, which the process and container
//! tests already do, at the cost of a runtime per seed and the RocksDB
//! path that cannot be simulated. Storage here is a model: a map from key
//! to the stored value's bytes, merged by the real [`value::merge`]. The
//! metadata group is modelled as the log it provides: commands apply one
//! at a time, in order, and each node and router learns the new maps
//! later, some of them much later.
//!
//! **What runs.** Clients write and read a few dozen records at QUORUM
//! through either router. Messages between routers and nodes are delayed,
//! dropped, duplicated and reordered; nodes crash and restart with their
//! data or with an empty directory (then the map refills them), get cut
//! off for a while; admins add, decommission and remove nodes and abort
//! changes in the middle of it all. The routers' clocks drift within the
//! skew bound. Then the faults heal, anti-entropy runs, and the checks
//! below must hold.
//!
//! **What it checks**, against its own record of what was acknowledged:
//! - no acknowledged write is lost: after healing, every replica of a
//!   record holds a version at least as new as every write acknowledged
//!   for it;
//! - a QUORUM read never returns a value older than a write acknowledged
//!   before the read began;
//! - the copies of every partition converge once the faults heal;
//! - the map's invariants hold after every command.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt::Write as _;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringup_proto::NodeId;
use ringup_proto::cluster::{ClusterMap, MapCommand, MemberState};
use ringup_proto::consistency::Consistency;
use ringup_proto::coordinator::fanout::{Event, Fanout, Mode, Step};
use ringup_proto::coordinator::read::{self, Reply};
use ringup_proto::hlc::Hlc;
use ringup_proto::migration::{Driver, Limits, Observed, Stage, Streamed};
use ringup_proto::ring::PartitionId;
use ringup_proto::route::{Access, check_route};
use ringup_proto::rpc::{CollectionRef, RpcError};
use ringup_proto::value::{self, Field, Header, StoredRecord, Version};

/// The shape of one run.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Partitions of the ring.
    pub partitions: u32,
    /// Records the clients write and read.
    pub keys: u32,
    /// How long clients send requests and faults happen, in simulated ms.
    pub duration_ms: u64,
    /// How far the routers' clocks may drift from true time.
    pub max_skew_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { partitions: 16, keys: 32, duration_ms: 6_000, max_skew_ms: 400 }
    }
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct Run {
    /// The seed.
    pub seed: u64,
    /// Every event, one line each, in order.
    pub trace: Vec<String>,
    /// The first broken promise, if any.
    pub violation: Option<Violation>,
    /// Writes and reads acknowledged, and faults injected.
    pub counts: Counts,
}

/// A broken promise and the partition it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// What went wrong.
    pub what: String,
    /// The partition, when one record shows it.
    pub partition: Option<PartitionId>,
}

/// What happened in a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Writes acknowledged at QUORUM.
    pub writes: u64,
    /// Reads answered at QUORUM.
    pub reads: u64,
    /// Requests that failed their level.
    pub failed: u64,
    /// Crashes, wipes and cuts.
    pub faults: u64,
    /// Admin changes the map took.
    pub changes: u64,
}

impl Run {
    /// The shortest trace that shows the violation: the map's changes and
    /// the events of the partition concerned, up to the violation.
    pub fn shortest_trace(&self) -> String {
        let Some(violation) = &self.violation else { return String::new() };
        let tag = violation.partition.map(|p| format!("p{p} "));
        let keep = |line: &&String| {
            line.contains("map ")
                || line.contains("VIOLATION")
                || tag.as_ref().is_none_or(|t| line.contains(t.as_str()))
        };
        let lines: Vec<&String> = self.trace.iter().filter(keep).collect();
        let mut out = String::new();
        for line in &lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "({} of {} trace lines)", lines.len(), self.trace.len());
        out
    }
}

/// Runs the simulation of `seed`.
pub fn run(seed: u64, settings: Settings) -> Run {
    let mut sim = Sim::new(seed, settings);
    sim.run();
    Run { seed, trace: sim.trace, violation: sim.violation, counts: sim.counts }
}

const RF: u8 = 3;
/// How long a router waits for its replicas.
const TIMEOUT_MS: u64 = 150;
/// Routes a request takes at most after stale-epoch refusals.
const ATTEMPTS: u32 = 3;

/// One node's state.
struct Node {
    up: bool,
    /// Cut off from everyone until then.
    cut_until: u64,
    /// The stored values by key.
    data: BTreeMap<u32, Vec<u8>>,
    /// The map epoch it has applied.
    epoch: u64,
    /// Reads are served only once its map has reached this epoch.
    reads_from: u64,
    /// Gone for good: removed from the map while down.
    dead: bool,
}

struct Router {
    epoch: u64,
    /// Learns no newer map until then: its polls of the nodes fail.
    stalled_until: u64,
    hlc: Hlc,
    origin: u64,
    /// How far its clock is off true time, in ms.
    offset: i64,
}

#[derive(Debug, Clone)]
enum Req {
    Write { key: u32, value: Vec<u8> },
    Read { key: u32 },
}

#[derive(Debug, Clone)]
enum Answer {
    Written,
    Value(Option<Vec<u8>>),
    Stale(u64),
    Refused,
}

enum Ev {
    Client,
    Deliver { op: u64, attempt: u32, to: NodeId, target: CollectionRef, req: Req },
    Reply { op: u64, attempt: u32, from: NodeId, answer: Answer },
    Timeout { op: u64, attempt: u32 },
    Spread,
    Drive,
    Work,
    Fault,
    Restart { node: NodeId, wipe: bool },
}

struct Op {
    key: u32,
    partition: PartitionId,
    router: usize,
    write: Option<Vec<u8>>,
    version: Option<Version>,
    fanout: Fanout,
    attempt: u32,
    replies: Vec<(NodeId, Reply)>,
    /// The replicas heard from in this attempt: a duplicated answer counts once.
    heard: BTreeSet<NodeId>,
    started: u64,
    /// For reads: the newest version acknowledged before it started.
    floor: Option<Version>,
}

struct Sim {
    settings: Settings,
    rng: StdRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Ev>,
    /// The map as the metadata group has committed it.
    map: ClusterMap,
    /// Every map by epoch.
    maps: Vec<Arc<ClusterMap>>,
    driver: Driver,
    nodes: BTreeMap<NodeId, Node>,
    routers: Vec<Router>,
    ops: BTreeMap<u64, Op>,
    next_op: u64,
    /// Versions acknowledged per key, with when.
    acked: BTreeMap<u32, Vec<(Version, u64)>>,
    trace: Vec<String>,
    violation: Option<Violation>,
    counts: Counts,
    next_id: NodeId,
}

impl Sim {
    fn new(seed: u64, settings: Settings) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = rng.random_range(3..=6u64);
        let nodes = (1..=n)
            .map(|id| {
                (id, Node { up: true, cut_until: 0, data: BTreeMap::new(), epoch: 0, reads_from: 0, dead: false })
            })
            .collect();
        let skew = settings.max_skew_ms as i64;
        let routers = (0..2u64)
            .map(|i| Router {
                epoch: 0,
                stalled_until: 0,
                hlc: Hlc::new(),
                origin: 100 + i,
                offset: rng.random_range(-skew / 2..=skew / 2),
            })
            .collect();
        let limits = Limits { moves_per_node: rng.random_range(1..=3), settle_ms: 200 };
        let mut sim = Sim {
            settings,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            map: ClusterMap::default(),
            maps: vec![Arc::new(ClusterMap::default())],
            driver: Driver::new(limits),
            nodes,
            routers,
            ops: BTreeMap::new(),
            next_op: 0,
            acked: BTreeMap::new(),
            trace: Vec::new(),
            violation: None,
            counts: Counts::default(),
            next_id: n + 1,
        };
        let members = (1..=n).map(|id| (id, format!("n{id}"))).collect();
        let partitions = settings.partitions;
        sim.commit(MapCommand::Bootstrap { partitions, replication_factor: RF, members, cluster_id: 1 });
        for node in sim.nodes.values_mut() {
            node.epoch = 1;
        }
        for router in &mut sim.routers {
            router.epoch = 1;
        }
        sim.log(format!("start: {n} nodes, {partitions} partitions, RF {RF}"));
        sim
    }

    fn log(&mut self, line: String) {
        self.trace.push(format!("{:>6} {line}", self.now));
    }

    fn at(&mut self, delay: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((self.now + delay, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn fail(&mut self, what: String, partition: Option<PartitionId>) {
        if self.violation.is_none() {
            self.log(format!("VIOLATION {what}"));
            self.violation = Some(Violation { what, partition });
        }
    }

    /// Applies a command as the metadata group commits it, and checks the
    /// map's invariants.
    fn commit(&mut self, command: MapCommand) -> bool {
        let before = self.map.epoch;
        match self.map.apply(&command) {
            Ok(epoch) => {
                self.maps.resize(epoch as usize + 1, Arc::new(self.map.clone()));
                self.maps[epoch as usize] = Arc::new(self.map.clone());
                let shown = format!("{command:?}");
                let shown: String = shown.chars().take(160).collect();
                self.log(format!("map {before} -> {epoch}: {shown}"));
                if let Err(broken) = invariants(&self.map) {
                    self.fail(format!("map invariant at epoch {epoch}: {broken}"), None);
                }
                true
            }
            Err(_) => false,
        }
    }

    fn latest(&self) -> u64 {
        self.map.epoch
    }

    fn reachable(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.up && !n.dead && n.cut_until <= self.now)
    }

    fn run(&mut self) {
        self.at(1, Ev::Client);
        self.at(5, Ev::Spread);
        self.at(7, Ev::Drive);
        self.at(9, Ev::Work);
        self.at(300, Ev::Fault);
        let end = self.settings.duration_ms;
        while let Some(Reverse((time, seq))) = self.queue.pop() {
            if self.violation.is_some() {
                return;
            }
            let ev = self.events.remove(&seq).expect("every queued event is stored");
            self.now = time;
            let running = time < end;
            match ev {
                Ev::Client if running => {
                    self.client();
                    let next = self.rng.random_range(1..=6);
                    self.at(next, Ev::Client);
                }
                Ev::Fault if running => {
                    self.fault();
                    let next = self.rng.random_range(200..=900);
                    self.at(next, Ev::Fault);
                }
                Ev::Client | Ev::Fault => {}
                Ev::Deliver { op, attempt, to, target, req } => self.deliver(op, attempt, to, target, req),
                Ev::Reply { op, attempt, from, answer } => self.reply(op, attempt, from, answer),
                Ev::Timeout { op, attempt } => self.event(op, attempt, Event::Deadline),
                Ev::Spread => {
                    self.spread(running);
                    if running || !self.settled() {
                        self.at(10, Ev::Spread);
                    }
                }
                Ev::Drive => {
                    self.drive();
                    if running || !self.settled() {
                        self.at(50, Ev::Drive);
                    }
                }
                Ev::Work => {
                    self.work();
                    if running || !self.settled() {
                        self.at(40, Ev::Work);
                    }
                }
                Ev::Restart { node, wipe } => self.restart(node, wipe),
            }
            if !running && self.queue.is_empty() {
                break;
            }
            if self.now > end + 120_000 {
                let nodes: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|(id, n)| format!("{id}: up {} dead {} epoch {}", n.up, n.dead, n.epoch))
                    .collect();
                let what = format!(
                    "the cluster did not settle within 120 s of the faults' end: epoch {}, moves {:?}, change {}, \
                     refills {:?}, requests in flight {}, nodes {}",
                    self.map.epoch,
                    self.map.moves.keys().collect::<Vec<_>>(),
                    self.map.change.is_some(),
                    self.map.refills,
                    self.ops.len(),
                    nodes.join(", ")
                );
                self.fail(what, None);
                return;
            }
        }
        if self.violation.is_none() {
            self.heal_and_check();
        }
    }

    /// Whether nothing is left in flight: every node up and current, no
    /// move, change or refill.
    fn settled(&self) -> bool {
        let latest = self.latest();
        self.map.moves.is_empty()
            && self.map.change.is_none()
            && self.map.refills.is_empty()
            && self.nodes.values().filter(|n| !n.dead).all(|n| n.up && n.epoch == latest)
            && self.ops.is_empty()
    }

    fn client(&mut self) {
        let key = self.rng.random_range(0..self.settings.keys);
        let router = self.rng.random_range(0..self.routers.len());
        let write = self.rng.random_bool(0.6);
        let partition = key % self.settings.partitions;
        let op = self.next_op;
        self.next_op += 1;
        let (value, version) = if write {
            let r = &mut self.routers[router];
            let wall = (self.now as i64 + r.offset).max(0) as u64 + 1_000_000;
            let version = Version { hlc: r.hlc.tick(wall), origin: r.origin };
            let record =
                StoredRecord { version, ts: 0, tombstone: false, fields: vec![("v".into(), Field::Int(op as i64))] };
            (Some(record.encode()), Some(version))
        } else {
            (None, None)
        };
        let floor = match write {
            true => None,
            false => self.acked.get(&key).and_then(|a| a.iter().map(|(v, _)| *v).max()),
        };
        let fanout = Fanout::new(Mode::All, Consistency::Quorum, &[]);
        let entry = Op {
            key,
            partition,
            router,
            write: value,
            version,
            fanout,
            attempt: 0,
            replies: Vec::new(),
            heard: BTreeSet::new(),
            started: self.now,
            floor,
        };
        self.ops.insert(op, entry);
        self.route(op);
    }

    /// Sends op's request with its router's map, from the first attempt
    /// or after a refusal.
    fn route(&mut self, op: u64) {
        let Some(o) = self.ops.get_mut(&op) else { return };
        let router = &self.routers[o.router];
        let map = self.maps[router.epoch as usize].clone();
        let p = o.partition;
        let (mode, order, sets) = match o.write {
            Some(_) => {
                let sets: Vec<Vec<NodeId>> = map.write_sets(p).into_iter().map(<[NodeId]>::to_vec).collect();
                (Mode::All, map.write_targets(p), sets)
            }
            None => {
                let readable = map.readable(p);
                (Mode::Needed, readable.clone(), vec![readable])
            }
        };
        o.fanout = match mode {
            Mode::All => Fanout::spanning(mode, Consistency::Quorum, &order, &sets),
            Mode::Needed => Fanout::reading(Consistency::Quorum, &order, map.read_set(p).len()),
        };
        o.replies.clear();
        o.heard.clear();
        let attempt = o.attempt;
        let step = o.fanout.start();
        let kind = if o.write.is_some() { "write" } else { "read" };
        let (key, epoch) = (o.key, router.epoch);
        self.log(format!("p{p} op {op} {kind} k{key} attempt {attempt} via epoch {epoch} to {order:?}"));
        self.at(TIMEOUT_MS, Ev::Timeout { op, attempt });
        self.step(op, step);
    }

    fn step(&mut self, op: u64, step: Step) {
        match step {
            Step::Ask(nodes) => {
                let Some(o) = self.ops.get(&op) else { return };
                let epoch = self.routers[o.router].epoch;
                let target =
                    CollectionRef { epoch, partition: o.partition, shop: String::new(), collection: String::new() };
                let req = match &o.write {
                    Some(value) => Req::Write { key: o.key, value: value.clone() },
                    None => Req::Read { key: o.key },
                };
                let attempt = o.attempt;
                for to in nodes {
                    self.send(Ev::Deliver { op, attempt, to, target: target.clone(), req: req.clone() }, Some(to));
                }
            }
            Step::Wait => {}
            Step::Met => self.met(op),
            Step::Failed { stale, .. } => {
                let Some(o) = self.ops.get_mut(&op) else { return };
                if let Some((_, epoch)) = stale
                    && o.attempt + 1 < ATTEMPTS
                {
                    let router = &mut self.routers[o.router];
                    router.epoch = router.epoch.max(epoch);
                    o.attempt += 1;
                    self.route(op);
                    return;
                }
                let o = self.ops.remove(&op).expect("just seen");
                self.counts.failed += 1;
                self.log(format!("p{} op {op} failed its level", o.partition));
            }
        }
    }

    /// Sends a message over the network: delayed, sometimes dropped or
    /// duplicated; never to or from a node that is cut off or down.
    fn send(&mut self, ev: Ev, node: Option<NodeId>) {
        if node.is_some_and(|n| !self.reachable(n)) || self.rng.random_bool(0.04) {
            return;
        }
        let copies = if self.rng.random_bool(0.01) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = self.rng.random_range(1..=30);
            let copy = match &ev {
                Ev::Deliver { op, attempt, to, target, req } => {
                    Ev::Deliver { op: *op, attempt: *attempt, to: *to, target: target.clone(), req: req.clone() }
                }
                Ev::Reply { op, attempt, from, answer } => {
                    Ev::Reply { op: *op, attempt: *attempt, from: *from, answer: answer.clone() }
                }
                _ => unreachable!("only requests and replies travel"),
            };
            self.at(delay, copy);
        }
    }

    /// A node handles a request as the real service does: the epoch check,
    /// then the merge or the read.
    fn deliver(&mut self, op: u64, attempt: u32, to: NodeId, target: CollectionRef, req: Req) {
        if !self.reachable(to) {
            return;
        }
        let node = self.nodes.get_mut(&to).expect("a known node");
        let map = self.maps[node.epoch as usize].clone();
        let access = if matches!(req, Req::Write { .. }) { Access::Write } else { Access::Read };
        let behind = access == Access::Read && node.epoch < node.reads_from;
        let answer = match check_route(&map, to, &target, access) {
            _ if behind => Answer::Refused,
            Err(RpcError::StaleEpoch { current }) => Answer::Stale(current),
            Err(_) => Answer::Refused,
            Ok(()) => match req {
                Req::Write { key, value } => {
                    let merged = match node.data.get(&key) {
                        Some(old) => value::merge(old, &value).to_vec(),
                        None => value,
                    };
                    node.data.insert(key, merged);
                    Answer::Written
                }
                Req::Read { key } => Answer::Value(node.data.get(&key).cloned()),
            },
        };
        self.send(Ev::Reply { op, attempt, from: to, answer }, Some(to));
    }

    fn reply(&mut self, op: u64, attempt: u32, from: NodeId, answer: Answer) {
        let Some(o) = self.ops.get_mut(&op) else { return };
        if o.attempt != attempt || !o.heard.insert(from) {
            return;
        }
        let event = match answer {
            Answer::Written => Event::Answered(from),
            Answer::Value(value) => {
                o.replies.push((from, value.map_or(Reply::Absent, Reply::Value)));
                Event::Answered(from)
            }
            Answer::Stale(epoch) => Event::Stale { node: from, epoch },
            Answer::Refused => Event::Failed(from),
        };
        self.event(op, attempt, event);
    }

    fn event(&mut self, op: u64, attempt: u32, event: Event) {
        let Some(o) = self.ops.get_mut(&op) else { return };
        if o.attempt != attempt {
            return;
        }
        let step = o.fanout.on(event);
        self.step(op, step);
    }

    /// The level is met: a write is acknowledged, a read answers.
    fn met(&mut self, op: u64) {
        let o = self.ops.remove(&op).expect("a met op is in flight");
        let p = o.partition;
        if let Some(version) = o.version {
            self.acked.entry(o.key).or_default().push((version, self.now));
            self.counts.writes += 1;
            self.log(format!("p{p} op {op} write k{} acked {version:?}", o.key));
            return;
        }
        self.counts.reads += 1;
        let resolution = read::resolve(o.replies);
        let got = resolution.newest.as_deref().and_then(|v| Header::read(v).ok()).map(|h| h.version);
        self.log(format!("p{p} op {op} read k{} answered {got:?}", o.key));
        if let Some(floor) = o.floor
            && got.is_none_or(|g| g < floor)
        {
            let what = format!(
                "stale read: op {op} read k{} (partition {p}) and got {got:?}, but {floor:?} was acknowledged before it \
                 began at {}",
                o.key, o.started
            );
            self.fail(what, Some(p));
        }
    }

    /// Nodes and routers learn newer maps, each at its own pace; one that
    /// is cut off or down learns nothing.
    fn spread(&mut self, running: bool) {
        let latest = self.latest();
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let reachable = self.reachable(id);
            let chance = if running { 0.15 } else { 1.0 };
            let learn = self.rng.random_bool(chance);
            let node = self.nodes.get_mut(&id).expect("a known node");
            if reachable && learn && node.epoch < latest {
                node.epoch = (node.epoch + 1).max(node.reads_from.min(latest)).min(latest);
            }
        }
        for i in 0..self.routers.len() {
            let learn = self.rng.random_bool(if running { 0.2 } else { 1.0 });
            let stalled = running && self.routers[i].stalled_until > self.now;
            if learn && !stalled && self.routers[i].epoch < latest {
                self.routers[i].epoch = latest;
            }
        }
    }

    /// The metadata leader's stage driver.
    fn drive(&mut self) {
        let applied = self.nodes.iter().filter(|(id, _)| self.reachable(**id)).map(|(id, n)| (*id, n.epoch)).collect();
        let observed = Observed { now_ms: self.now, wall_ms: self.now as i64, applied };
        let commands = self.driver.step(&self.map, &observed);
        if !commands.is_empty() {
            self.commit(MapCommand::Batch(commands));
        }
    }

    /// Each node does its move and refill work, as its own map shows it.
    fn work(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            if !self.reachable(id) {
                continue;
            }
            let map = self.maps[self.nodes[&id].epoch as usize].clone();
            for (p, m) in &map.moves {
                match m.stage {
                    Stage::Streaming if m.added().contains(&id) && !m.streamed.contains_key(&id) => {
                        let sources = m.sources(id, |n| map.is_gone(n));
                        if self.copy(id, *p, &sources, m.stage_epoch) {
                            let done = MapCommand::StreamDone {
                                partition: *p,
                                started: m.started_epoch,
                                node: id,
                                streamed: Streamed::default(),
                            };
                            self.commit(done);
                        }
                    }
                    Stage::Cleanup | Stage::Aborted if m.to_clean().contains(&id) && !m.cleaned.contains(&id) => {
                        let partitions = self.settings.partitions;
                        self.nodes.get_mut(&id).expect("a known node").data.retain(|k, _| k % partitions != *p);
                        self.log(format!("p{p} node {id} dropped the range"));
                        self.commit(MapCommand::CleanedUp { partition: *p, started: m.started_epoch, node: id });
                    }
                    _ => {}
                }
            }
            if let Some(refill) = map.refills.get(&id) {
                let epoch = refill.epoch;
                for p in refill.partitions.iter().copied().filter(|p| !map.moves.contains_key(p)).collect::<Vec<_>>() {
                    let sources = map.refill_sources(id, p);
                    if !sources.is_empty() && self.copy(id, p, &sources, epoch) {
                        let copied = Streamed::default();
                        self.commit(MapCommand::Refilled { id, epoch, partitions: vec![p], copied });
                    }
                }
            }
        }
    }

    /// Copies partition `p` from every one of `sources` into `to`, as a
    /// stream does; false if a source is unreachable or behind `epoch`.
    fn copy(&mut self, to: NodeId, p: PartitionId, sources: &[NodeId], epoch: u64) -> bool {
        if sources.is_empty() || sources.iter().any(|s| !self.reachable(*s) || self.nodes[s].epoch < epoch) {
            return false;
        }
        let partitions = self.settings.partitions;
        let mut copied: Vec<(u32, Vec<u8>)> = Vec::new();
        for s in sources {
            copied
                .extend(self.nodes[s].data.iter().filter(|(k, _)| *k % partitions == p).map(|(k, v)| (*k, v.clone())));
        }
        let node = self.nodes.get_mut(&to).expect("a known node");
        for (key, value) in copied {
            let merged = match node.data.get(&key) {
                Some(old) => value::merge(old, &value).to_vec(),
                None => value,
            };
            node.data.insert(key, merged);
        }
        self.log(format!("p{p} node {to} copied from {sources:?}"));
        true
    }

    /// A crash, a wipe, a cut or an admin's change; one node out at a time.
    fn fault(&mut self) {
        let out = self.nodes.values().filter(|n| !n.dead && (!n.up || n.cut_until > self.now)).count();
        let live: Vec<NodeId> = self.nodes.iter().filter(|(id, _)| self.reachable(**id)).map(|(id, _)| *id).collect();
        let members = |state: MemberState| self.map.members.values().filter(move |m| m.state == state).count();
        let up = members(MemberState::Up);
        match self.rng.random_range(0..11) {
            0..=1 if out == 0 && !live.is_empty() => {
                let node = live[self.rng.random_range(0..live.len())];
                self.nodes.get_mut(&node).expect("live").up = false;
                // One lost disk at a time: a wipe while another node still
                // refills could take every copy of a write.
                let wipe = self.map.refills.is_empty() && self.rng.random_bool(0.4);
                let back = self.rng.random_range(200..=2_000);
                self.counts.faults += 1;
                self.log(format!(
                    "node {node} crashes; back in {back} ms{}",
                    if wipe { " with a wiped directory" } else { "" }
                ));
                self.at(back, Ev::Restart { node, wipe });
            }
            2 if out == 0 && !live.is_empty() => {
                let node = live[self.rng.random_range(0..live.len())];
                let until = self.now + self.rng.random_range(200..=1_500);
                self.nodes.get_mut(&node).expect("live").cut_until = until;
                self.counts.faults += 1;
                self.log(format!("node {node} is cut off until {until}"));
            }
            8..=9 => {
                let router = self.rng.random_range(0..self.routers.len());
                let until = self.now + self.rng.random_range(100..=1_000);
                self.routers[router].stalled_until = until;
                self.log(format!("router {router} learns no map until {until}"));
            }
            3..=4 if self.map.members.len() < 6 && self.map.change.is_none() => {
                let id = self.next_id;
                self.next_id += 1;
                self.nodes.insert(
                    id,
                    Node {
                        up: true,
                        cut_until: 0,
                        data: BTreeMap::new(),
                        epoch: self.latest(),
                        reads_from: 0,
                        dead: false,
                    },
                );
                if self.commit(MapCommand::AddNode { id: Some(id), addr: format!("n{id}"), at_ms: 0 }) {
                    self.counts.changes += 1;
                }
            }
            5 if up > RF as usize && self.map.change.is_none() => {
                let ups: Vec<NodeId> =
                    self.map.members.values().filter(|m| m.state == MemberState::Up).map(|m| m.id).collect();
                let node = ups[self.rng.random_range(0..ups.len())];
                if self.commit(MapCommand::Decommission { id: node, at_ms: 0 }) {
                    self.counts.changes += 1;
                }
            }
            6 if self.map.change.is_some() && self.rng.random_bool(0.3) => {
                self.commit(MapCommand::AbortChange);
            }
            7 if self.map.change.is_none() => {
                // A crashed node that will not come back is removed.
                let present = self.map.members.values().filter(|m| m.state != MemberState::Removed).count();
                let down = self.nodes.iter().find(|(_, n)| !n.up && !n.dead).map(|(id, _)| *id);
                if let Some(node) = down.filter(|_| present > RF as usize)
                    && self.commit(MapCommand::RemoveNode { id: node, at_ms: 0 })
                {
                    self.nodes.get_mut(&node).expect("a known node").dead = true;
                    self.counts.changes += 1;
                }
            }
            _ => {}
        }
    }

    /// A crashed node starts again: with its data, or wiped (then the
    /// metadata leader sees it waiting and the map refills it).
    fn restart(&mut self, id: NodeId, wipe: bool) {
        let node = self.nodes.get_mut(&id).expect("a known node");
        if node.dead {
            return;
        }
        node.up = true;
        if !wipe {
            self.log(format!("node {id} restarts with its data"));
            return;
        }
        node.data.clear();
        node.epoch = 0;
        self.log(format!("node {id} restarts with an empty directory"));
        if self.commit(MapCommand::Rejoin { id }) {
            let epoch = self.latest();
            let node = self.nodes.get_mut(&id).expect("a known node");
            node.reads_from = epoch;
        }
        // The adoption hands it the map it must reach before reads.
        let node = self.nodes.get_mut(&id).expect("a known node");
        node.epoch = node.reads_from.max(1).min(self.map.epoch);
    }

    /// The faults are over: anti-entropy merges every partition's replicas,
    /// then the checks run.
    fn heal_and_check(&mut self) {
        let partitions = self.settings.partitions;
        for p in 0..partitions {
            let replicas: Vec<NodeId> = self.map.replicas(p).to_vec();
            let mut merged: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
            for r in &replicas {
                for (k, v) in self.nodes[r].data.iter().filter(|(k, _)| *k % partitions == p) {
                    let newest = match merged.get(k) {
                        Some(old) => value::merge(old, v).to_vec(),
                        None => v.clone(),
                    };
                    merged.insert(*k, newest);
                }
            }
            for r in &replicas {
                let node = self.nodes.get_mut(r).expect("a replica");
                node.data.extend(merged.iter().map(|(k, v)| (*k, v.clone())));
            }
        }
        self.log("healed: anti-entropy merged every partition's replicas".into());
        let acked = std::mem::take(&mut self.acked);
        for (key, versions) in &acked {
            let p = key % partitions;
            let Some(newest) = versions.iter().map(|(v, _)| *v).max() else { continue };
            for r in self.map.replicas(p).to_vec() {
                let held = self.nodes[&r].data.get(key).and_then(|v| Header::read(v).ok()).map(|h| h.version);
                if held.is_none_or(|h| h < newest) {
                    let what = format!(
                        "lost write: k{key} (partition {p}) holds {held:?} on node {r} after healing, but {newest:?} was \
                         acknowledged"
                    );
                    self.fail(what, Some(p));
                    return;
                }
            }
        }
        for p in 0..partitions {
            let replicas = self.map.replicas(p).to_vec();
            let copies: Vec<Vec<(&u32, &Vec<u8>)>> = replicas
                .iter()
                .map(|r| self.nodes[r].data.iter().filter(|(k, _)| *k % partitions == p).collect())
                .collect();
            if copies.windows(2).any(|w| w[0] != w[1]) {
                self.fail(format!("partition {p}: its replicas {replicas:?} differ after healing"), Some(p));
                return;
            }
        }
    }
}

/// The map's invariants: every partition has RF distinct replicas, and a
/// partition that moves goes from or to its replicas, to distinct nodes.
fn invariants(map: &ClusterMap) -> Result<(), String> {
    let Some(placement) = &map.placement else { return Ok(()) };
    for p in 0..map.ring.partitions() {
        let replicas = placement.replicas(p);
        let distinct: BTreeSet<&NodeId> = replicas.iter().collect();
        if distinct.len() != replicas.len() || replicas.len() != usize::from(map.replication_factor) {
            return Err(format!("partition {p} has replicas {replicas:?}"));
        }
        if let Some(m) = map.moves.get(&p) {
            let to: BTreeSet<&NodeId> = m.to.iter().collect();
            if to.len() != m.to.len() || (m.from != replicas && m.to != replicas) {
                return Err(format!("partition {p}'s move {:?} -> {:?} is not from or to its replicas", m.from, m.to));
            }
        }
    }
    Ok(())
}
