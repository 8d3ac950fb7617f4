//! A model check of membership changes: random joins, decommissions,
//! removals of dead nodes, wiped disks, aborts, leader changes and writes
//! at QUORUM, with the stage driver and the nodes' streams, cleanups and
//! refills interleaved.
//!
//! The model keeps, for every acknowledged write, the nodes that hold a
//! copy: a write lands on the nodes that acknowledged it (a quorum of each
//! write set, chosen at random), a stream copies everything its sources
//! hold for the partition, a cleanup drops the partition, a node that
//! dies loses everything, and so does a wiped node, which then refills
//! each partition from every other replica that takes its writes. After
//! every step, every QUORUM read of the replicas that serve reads (the read
//! set without those refilling) must meet a copy of every acknowledged
//! write, counting copies lost with dead nodes as held; and every change
//! ends with each partition on RF live replicas and no copies left where
//! the map puts none.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use ringup_proto::NodeId;
use ringup_proto::cluster::{ClusterMap, MapCommand, MemberState};
use ringup_proto::consistency::Consistency;
use ringup_proto::migration::{Driver, Limits, Observed, Stage, Streamed};
use ringup_proto::ring::PartitionId;

const Q: u32 = 16;
const RF: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Join,
    Decommission(usize),
    KillAndRemove(usize),
    Wipe(usize),
    Abort,
    Write(PartitionId, u64),
    Drive,
    NodeWork(u64),
    LeaderChange,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Join),
        1 => (0usize..8).prop_map(Op::Decommission),
        1 => (0usize..8).prop_map(Op::KillAndRemove),
        1 => (0usize..8).prop_map(Op::Wipe),
        1 => Just(Op::Abort),
        6 => (0..Q, any::<u64>()).prop_map(|(p, seed)| Op::Write(p, seed)),
        6 => Just(Op::Drive),
        6 => any::<u64>().prop_map(Op::NodeWork),
        1 => Just(Op::LeaderChange),
    ]
}

/// One acknowledged write.
struct Write {
    partition: PartitionId,
    holders: BTreeSet<NodeId>,
    /// Copies that were on nodes that died.
    lost: usize,
}

struct Model {
    map: ClusterMap,
    driver: Driver,
    now: u64,
    alive: BTreeSet<NodeId>,
    writes: Vec<Write>,
    next_addr: u64,
}

impl Model {
    fn new() -> Self {
        let mut map = ClusterMap::default();
        let members = (1..=3).map(|n| (n, format!("n{n}"))).collect();
        map.apply(&MapCommand::Bootstrap { partitions: Q, replication_factor: RF as u8, members, cluster_id: 1 })
            .unwrap();
        let limits = Limits { moves_per_node: 2, settle_ms: 1000 };
        Self { map, driver: Driver::new(limits), now: 0, alive: (1..=3).collect(), writes: Vec::new(), next_addr: 4 }
    }

    fn members_in(&self, state: MemberState) -> Vec<NodeId> {
        self.map.members.values().filter(|m| m.state == state).map(|m| m.id).collect()
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Join => {
                let addr = format!("n{}", self.next_addr);
                self.next_addr += 1;
                if self.map.apply(&MapCommand::AddNode { id: None, addr: addr.clone(), at_ms: 0 }).is_ok() {
                    self.alive.insert(self.map.member_at(&addr).unwrap());
                }
            }
            Op::Decommission(i) => {
                let up = self.members_in(MemberState::Up);
                if !up.is_empty() {
                    let _ = self.map.apply(&MapCommand::Decommission { id: up[i % up.len()], at_ms: 0 });
                }
            }
            Op::Wipe(i) => self.wipe(*i),
            Op::KillAndRemove(i) => {
                // One failure at a time: no death while a wiped node refills.
                if !self.map.refills.is_empty() {
                    return;
                }
                let candidates: Vec<NodeId> = self.alive.iter().copied().collect();
                let victim = candidates[i % candidates.len()];
                let remove = MapCommand::RemoveNode { id: victim, at_ms: 0 };
                // Only a node the map lets go is killed, so the cluster never
                // loses more than the test means it to.
                let mut probe = self.map.clone();
                if probe.apply(&remove).is_ok() {
                    self.alive.remove(&victim);
                    for w in &mut self.writes {
                        if w.holders.remove(&victim) {
                            w.lost += 1;
                        }
                    }
                    self.map = probe;
                }
            }
            Op::Abort => {
                let _ = self.map.apply(&MapCommand::AbortChange);
            }
            Op::Write(p, seed) => self.write(*p, *seed),
            Op::Drive => {
                self.now += 700;
                let applied = self.alive.iter().map(|n| (*n, self.map.epoch)).collect();
                let observed = Observed { now_ms: self.now, wall_ms: 0, applied };
                for cmd in self.driver.step(&self.map, &observed) {
                    let _ = self.map.apply(&cmd);
                }
            }
            Op::NodeWork(seed) => self.node_work(*seed),
            Op::LeaderChange => self.driver = Driver::new(Limits { moves_per_node: 2, settle_ms: 1000 }),
        }
    }

    /// A live member loses its disk and comes back empty: its copies are
    /// gone, and it refills. One failure at a time: only while no other
    /// node refills and no copy was ever lost with a dead node.
    fn wipe(&mut self, i: usize) {
        if !self.map.refills.is_empty() || self.writes.iter().any(|w| w.lost > 0) {
            return;
        }
        let candidates: Vec<NodeId> =
            self.alive.iter().copied().filter(|n| self.map.members[n].state != MemberState::Removed).collect();
        let victim = candidates[i % candidates.len()];
        for w in &mut self.writes {
            w.holders.remove(&victim);
        }
        self.map.apply(&MapCommand::Rejoin { id: victim }).unwrap();
    }

    /// A refilling node copies the partitions that are not moving from
    /// every other replica that takes their writes, and reports them.
    fn refill(&mut self) {
        let refills: Vec<_> = self.map.refills.iter().map(|(n, r)| (*n, r.clone())).collect();
        for (node, refill) in refills {
            let mut done = Vec::new();
            for p in refill.partitions.iter().copied().filter(|p| !self.map.moves.contains_key(p)) {
                let sources = self.map.refill_sources(node, p);
                if self.map.write_targets(p).contains(&node) {
                    for w in self.writes.iter_mut().filter(|w| w.partition == p) {
                        if w.holders.iter().any(|h| sources.contains(h)) {
                            w.holders.insert(node);
                        }
                    }
                }
                done.push(p);
            }
            if !done.is_empty() {
                let cmd = MapCommand::Refilled {
                    id: node,
                    epoch: refill.epoch,
                    partitions: done,
                    copied: Streamed::default(),
                };
                self.map.apply(&cmd).unwrap();
            }
        }
    }

    /// A QUORUM write: acknowledged by a random quorum of each write set
    /// among the live nodes, or not at all.
    fn write(&mut self, p: PartitionId, mut seed: u64) {
        let mut holders = BTreeSet::new();
        for set in self.map.write_sets(p) {
            let needed = Consistency::Quorum.required(set.len());
            let mut live: Vec<NodeId> = set.iter().copied().filter(|n| self.alive.contains(n)).collect();
            if live.len() < needed {
                return;
            }
            // A random quorum of this set: drop nodes at random, keeping
            // those already chosen for another set.
            while live.len() > needed {
                let i = (seed % live.len() as u64) as usize;
                seed = seed.rotate_left(7) ^ 0x9e37_79b9;
                live.remove(i);
            }
            holders.extend(live);
        }
        self.writes.push(Write { partition: p, holders, lost: 0 });
    }

    /// Some of the nodes' pending work: streams finishing, ranges dropped,
    /// refills.
    fn node_work(&mut self, seed: u64) {
        if seed & 1 == 1 {
            self.refill();
        }
        let moves: Vec<_> = self.map.moves.iter().map(|(p, m)| (*p, m.clone())).collect();
        for (i, (p, m)) in moves.into_iter().enumerate() {
            if (seed >> (i % 64)) & 1 == 0 {
                continue;
            }
            match m.stage {
                Stage::Streaming => {
                    for target in m.added().into_iter().filter(|n| self.alive.contains(n)) {
                        if m.streamed.contains_key(&target) {
                            continue;
                        }
                        let sources = m.sources(target, |n| !self.map.can_source(n, p));
                        for w in self.writes.iter_mut().filter(|w| w.partition == p) {
                            if w.holders.iter().any(|h| sources.contains(h)) {
                                w.holders.insert(target);
                            }
                        }
                        let cmd = MapCommand::StreamDone {
                            partition: p,
                            started: m.started_epoch,
                            node: target,
                            streamed: Streamed::default(),
                        };
                        self.map.apply(&cmd).unwrap();
                    }
                }
                Stage::Cleanup | Stage::Aborted => {
                    for node in m.to_clean().into_iter().filter(|n| self.alive.contains(n)) {
                        if m.cleaned.contains(&node) {
                            continue;
                        }
                        for w in self.writes.iter_mut().filter(|w| w.partition == p) {
                            w.holders.remove(&node);
                        }
                        let cmd = MapCommand::CleanedUp { partition: p, started: m.started_epoch, node };
                        self.map.apply(&cmd).unwrap();
                    }
                }
                _ => {}
            }
        }
    }

    /// Every QUORUM read of the replicas serving reads meets a copy of
    /// every acknowledged write, copies lost with dead nodes counted as
    /// held: the holders among them are more than those a quorum can miss.
    fn check_reads(&self, after: &Op) -> Result<(), TestCaseError> {
        for (i, w) in self.writes.iter().enumerate() {
            let read = self.map.readable(w.partition);
            let held = read.iter().filter(|n| w.holders.contains(n)).count() + w.lost;
            let missable = read.len() - Consistency::Quorum.required(read.len());
            prop_assert!(
                held > missable,
                "after {after:?}: write {i} on p{} is held by {:?} (+{} lost), the read set is {read:?}\n{:?}",
                w.partition,
                w.holders,
                w.lost,
                self.map.moves.get(&w.partition)
            );
        }
        Ok(())
    }

    /// Runs the driver and every node's work until the change and the
    /// refills are over.
    fn settle(&mut self) {
        for _ in 0..500 {
            if self.map.change.is_none() && self.map.refills.is_empty() {
                return;
            }
            self.run(&Op::Drive);
            self.run(&Op::NodeWork(u64::MAX));
        }
        panic!("the change did not settle: {:?} {:?}", self.map.change, self.map.refills);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn changes_end_with_rf_live_replicas_and_lose_no_acknowledged_write(ops in proptest::collection::vec(op(), 1..80)) {
        let mut model = Model::new();
        for op in &ops {
            model.run(op);
            model.check_reads(op)?;
            prop_assert_eq!(model.map.validate(), Ok(()));
        }
        model.settle();
        model.check_reads(&Op::Drive)?;
        let placement = model.map.placement.clone().unwrap();
        for p in 0..Q {
            let set = placement.replicas(p);
            prop_assert_eq!(set.len(), RF, "partition {} has {:?}", p, set);
            for n in set {
                prop_assert!(model.alive.contains(n), "partition {} is on dead node {}", p, n);
                prop_assert_eq!(model.map.members[n].state, MemberState::Up);
            }
        }
        for (i, w) in model.writes.iter().enumerate() {
            let strays: Vec<_> = w.holders.iter().filter(|n| !placement.replicas(w.partition).contains(n)).collect();
            prop_assert!(strays.is_empty(), "write {} of p{} is left on {:?}", i, w.partition, strays);
        }
        let members: BTreeSet<NodeId> = model.map.active_members();
        let load = placement.load();
        let max = members.iter().map(|n| load.get(n).copied().unwrap_or(0)).max().unwrap();
        let mean = (Q as usize * RF) as f64 / members.len() as f64;
        prop_assert!(max as f64 / mean <= 1.05 || max as f64 - mean < 1.0, "max {} mean {:.2}", max, mean);
        let removed: BTreeMap<NodeId, bool> =
            model.map.members.values().map(|m| (m.id, m.state == MemberState::Removed)).collect();
        for (n, gone) in removed {
            prop_assert_eq!(gone, !model.alive.contains(&n) || !members.contains(&n));
        }
    }
}
