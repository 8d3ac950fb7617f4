//! Scripted scenarios of membership changes: the map's commands and the
//! stage driver. Each file in `tests/migrations/` is a list of commands
//! (`> command`), each followed by what it printed; `UPDATE_SCRIPTS=1 cargo
//! test` rewrites the files with what the code prints now, for review in the
//! diff.
//!
//! Commands:
//!
//! ```text
//! > bootstrap Q RF N…        a fresh map of Q partitions over nodes N…
//! > add ADDR [ID]            an admin adds the node at ADDR
//! > decommission N | remove N | abort
//!                            an admin's change; prints the map's answer
//! > step T                   the driver runs at T ms: prints each command it proposes and the
//!                            map's answer (every one is applied), then the moves
//! > streamed P N             node N finished copying partition P
//! > cleaned P N              node N dropped partition P's range
//! > nodes T                  every node does its work: each new replica of a streaming move
//!                            finishes its copy, each replica due to drop a range drops it
//! > settle T                 `step T` and `nodes T` until the driver proposes nothing more
//!                            (T rises by 1000 each round); prints the rounds and the map
//! > crash                    the leader changes: a new driver with no memory
//! > lagging N…               nodes N… stay at the epoch they have now (none: all catch up)
//! > route P                  where partition P's reads and writes go now
//! > map                      members, change, moves and load
//! ```

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ringup_proto::NodeId;
use ringup_proto::cluster::{ClusterMap, MapCommand, MemberState};
use ringup_proto::migration::{Driver, Limits, Observed, Stage, Streamed};
use support::list;

struct Scene {
    map: ClusterMap,
    driver: Driver,
    /// Nodes whose map is stuck at the epoch they had when named.
    lagging: BTreeMap<NodeId, u64>,
}

impl Scene {
    fn new() -> Self {
        Self { map: ClusterMap::default(), driver: Driver::new(limits()), lagging: BTreeMap::new() }
    }

    /// What the driver sees: every member at the map's epoch, but the
    /// lagging ones.
    fn observed(&self, now_ms: u64) -> Observed {
        let applied =
            self.map.members.keys().map(|n| (*n, self.lagging.get(n).copied().unwrap_or(self.map.epoch))).collect();
        Observed { now_ms, wall_ms: 0, applied }
    }

    fn run(&mut self, command: &str) -> String {
        let words: Vec<&str> = command.split_whitespace().collect();
        match words.as_slice() {
            ["bootstrap", q, rf, nodes @ ..] => {
                let members = nodes.iter().map(|n| (n.parse().unwrap(), format!("n{n}"))).collect();
                let cmd = MapCommand::Bootstrap {
                    partitions: q.parse().unwrap(),
                    replication_factor: rf.parse().unwrap(),
                    members,
                    cluster_id: 1,
                };
                format!("{}\n{}", self.apply(cmd), self.show())
            }
            ["add", addr] => self.admin(MapCommand::AddNode { id: None, addr: addr.to_string(), at_ms: 0 }),
            ["add", addr, id] => {
                self.admin(MapCommand::AddNode { id: Some(id.parse().unwrap()), addr: addr.to_string(), at_ms: 0 })
            }
            ["decommission", n] => self.admin(MapCommand::Decommission { id: n.parse().unwrap(), at_ms: 0 }),
            ["remove", n] => self.admin(MapCommand::RemoveNode { id: n.parse().unwrap(), at_ms: 0 }),
            ["abort"] => self.admin(MapCommand::AbortChange),
            ["step", t] => {
                let mut out = self.step(t.parse().unwrap());
                out.push_str(&self.moves());
                out
            }
            ["streamed", p, n] => self.streamed(p.parse().unwrap(), n.parse().unwrap()),
            ["cleaned", p, n] => {
                let p = p.parse().unwrap();
                let started = self.map.moves[&p].started_epoch;
                let cmd = MapCommand::CleanedUp { partition: p, started, node: n.parse().unwrap() };
                self.apply(cmd)
            }
            ["nodes", _] => {
                let out = self.nodes_work();
                if out.is_empty() { "nothing to do".into() } else { out }
            }
            ["settle", t] => self.settle(t.parse().unwrap()),
            ["crash"] => {
                self.driver = Driver::new(limits());
                "a new driver".into()
            }
            ["route", p] => {
                let p = p.parse().unwrap();
                let sets: Vec<String> = self.map.write_sets(p).iter().map(|s| list(s)).collect();
                format!(
                    "read [{}] readable [{}] write [{}] changed_at={}",
                    list(self.map.read_set(p)),
                    list(&self.map.readable(p)),
                    sets.join("] ["),
                    self.map.changed_at(p)
                )
            }
            ["map"] => self.show(),
            ["rejoin", n] => self.admin(MapCommand::Rejoin { id: n.parse().unwrap() }),
            ["refill", n] => self.refill(n.parse().unwrap()),
            ["lagging", nodes @ ..] => {
                let epoch = self.map.epoch;
                self.lagging = nodes.iter().map(|n| (n.parse().unwrap(), epoch)).collect();
                let held: Vec<String> = self.lagging.iter().map(|(n, e)| format!("{n}@{e}")).collect();
                format!("lagging: [{}]", held.join(" "))
            }
            _ => panic!("unknown command: {command}"),
        }
    }

    fn admin(&mut self, cmd: MapCommand) -> String {
        let answer = self.apply(cmd);
        format!("{answer}\n{}", self.show())
    }

    fn apply(&mut self, cmd: MapCommand) -> String {
        match self.map.apply(&cmd) {
            Ok(epoch) => format!("ok epoch={epoch}"),
            Err(e) => format!("refused: {e}"),
        }
    }

    fn step(&mut self, now: u64) -> String {
        let mut out = String::new();
        let observed = self.observed(now);
        for cmd in self.driver.step(&self.map, &observed) {
            let answer = self.apply(cmd.clone());
            writeln!(out, "{} -> {answer}", describe(&cmd)).unwrap();
        }
        if out.is_empty() {
            out.push_str("nothing to propose\n");
        }
        out
    }

    fn streamed(&mut self, p: u32, node: NodeId) -> String {
        let started = self.map.moves[&p].started_epoch;
        let streamed = Streamed { bytes: 1000, records: 10 };
        self.apply(MapCommand::StreamDone { partition: p, started, node, streamed })
    }

    /// What every live node would do now.
    fn nodes_work(&mut self) -> String {
        let mut out = String::new();
        let moves: Vec<_> = self.map.moves.iter().map(|(p, m)| (*p, m.clone())).collect();
        for (p, m) in moves {
            let live: Vec<NodeId> = match m.stage {
                Stage::Streaming => m.added().into_iter().filter(|n| !m.streamed.contains_key(n)).collect(),
                Stage::Cleanup | Stage::Aborted => {
                    m.to_clean().into_iter().filter(|n| !m.cleaned.contains(n)).collect()
                }
                _ => Vec::new(),
            };
            let live: Vec<NodeId> = live.into_iter().filter(|n| !self.map.is_gone(*n)).collect();
            for node in live {
                let (what, answer) = if m.stage == Stage::Streaming {
                    let sources = m.sources(node, |n| !self.map.can_source(n, p));
                    (format!("node {node} copies p{p} from [{}]", list(&sources)), self.streamed(p, node))
                } else {
                    let cmd = MapCommand::CleanedUp { partition: p, started: m.started_epoch, node };
                    (format!("node {node} drops p{p}"), self.apply(cmd))
                };
                writeln!(out, "{what} -> {answer}").unwrap();
            }
        }
        out
    }

    /// What refilling node `node` does now: copies each partition it
    /// refills that is not moving from its sources, and reports them.
    fn refill(&mut self, node: NodeId) -> String {
        let Some(refill) = self.map.refills.get(&node).cloned() else { return "nothing to refill".into() };
        let mut out = String::new();
        let mut done = Vec::new();
        for p in refill.partitions.iter().copied() {
            if self.map.moves.contains_key(&p) {
                writeln!(out, "node {node} waits for the move of p{p}").unwrap();
                continue;
            }
            writeln!(out, "node {node} copies p{p} from [{}]", list(&self.map.refill_sources(node, p))).unwrap();
            done.push(p);
        }
        let copied = Streamed { bytes: 100 * done.len() as u64, records: done.len() as u64 };
        let cmd = MapCommand::Refilled { id: node, epoch: refill.epoch, partitions: done, copied };
        write!(out, "{}\n{}", self.apply(cmd), self.show()).unwrap();
        out
    }

    fn settle(&mut self, mut now: u64) -> String {
        let mut rounds = 0;
        loop {
            let before = self.map.epoch;
            let observed = self.observed(now);
            let _ = self.driver.step(&self.map, &observed).into_iter().map(|c| self.map.apply(&c)).count();
            let _ = self.nodes_work();
            rounds += 1;
            if self.map.epoch == before && self.map.change.is_none() {
                break;
            }
            assert!(rounds < 1000, "the change does not settle:\n{}", self.show());
            now += 1000;
        }
        format!("settled after {rounds} rounds\n{}", self.show())
    }

    fn moves(&self) -> String {
        let mut out = String::new();
        for (p, m) in &self.map.moves {
            let streamed: Vec<NodeId> = m.streamed.keys().copied().collect();
            let cleaned: Vec<NodeId> = m.cleaned.iter().copied().collect();
            writeln!(
                out,
                "  p{p} [{}] -> [{}] {} streamed=[{}] cleaned=[{}]",
                list(&m.from),
                list(&m.to),
                m.stage,
                list(&streamed),
                list(&cleaned)
            )
            .unwrap();
        }
        out
    }

    fn show(&self) -> String {
        let map = &self.map;
        let mut out = format!("epoch={}", map.epoch);
        let load = map.placement.as_ref().map(|p| p.load()).unwrap_or_default();
        for m in map.members.values() {
            write!(out, " {}:{}:{}", m.id, state(m.state), load.get(&m.id).copied().unwrap_or(0)).unwrap();
        }
        if let Some(change) = &map.change {
            write!(
                out,
                "\nchange: {} to move, {} done, {} aborted",
                map.moves_remaining(),
                change.moves_done,
                change.moves_aborted
            )
            .unwrap();
        }
        out.push('\n');
        out.push_str(&self.moves());
        for (node, r) in &map.refills {
            let left: Vec<String> = r.partitions.iter().map(|p| format!("p{p}")).collect();
            writeln!(
                out,
                "  node {node} refills since epoch {}: {} of {} left [{}], copied {} records",
                r.epoch,
                r.partitions.len(),
                r.total,
                left.join(" "),
                r.copied.records
            )
            .unwrap();
        }
        if let Some(placement) = &map.placement {
            let sets: Vec<String> = (0..placement.partitions()).map(|p| list(placement.replicas(p))).collect();
            write!(out, "placement: {}", sets.join(" | ")).unwrap();
        }
        out
    }
}

/// Small limits so that scripts show the queueing: one move per node.
fn limits() -> Limits {
    Limits { moves_per_node: 1, settle_ms: 2000 }
}

fn state(s: MemberState) -> &'static str {
    s.as_str()
}

fn describe(cmd: &MapCommand) -> String {
    match cmd {
        MapCommand::StartMove { partition, to } => format!("start p{partition} -> [{}]", list(to)),
        MapCommand::Advance { partition, stage, .. } => format!("advance p{partition} to {stage}"),
        MapCommand::FinishMove { partition, .. } => format!("finish p{partition}"),
        MapCommand::CompleteChange { .. } => "complete the change".into(),
        other => format!("{other:?}"),
    }
}

#[test]
fn every_migration_scenario_prints_what_its_script_expects() {
    support::check_scripts("tests/migrations", |script| {
        let mut scene = Scene::new();
        support::replay(script, |command| scene.run(command))
    });
}
