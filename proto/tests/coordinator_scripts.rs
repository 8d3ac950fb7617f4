//! Scripted scenarios of the coordinator core: each file in
//! `tests/scripts/` is a list of commands (`> command`), each followed by
//! what the core printed. The runner replays the commands and compares the
//! whole text; `UPDATE_SCRIPTS=1 cargo test` rewrites the files with what
//! the core prints now, for review in the diff.
//!
//! Commands:
//!
//! ```text
//! > fanout all|needed one|quorum|all N…   a new round over replicas N…, in preference order
//! > spanning all|needed LEVEL N… | N…     a round that must meet LEVEL in each set (a move's old and new)
//! > reading LEVEL OF N…                   a read from replicas N… that can answer, of a read set of OF
//! > start | answered N | failed N | stale N EPOCH | slow | deadline
//!                                         feed the round; prints the step and every replica's state
//! > read one|quorum|all N…                a new read over replicas N…
//! > reply N vH | absent | corrupt         replica N answered a value of version H, nothing, or garbage
//! > resolve                               prints the newest value, who is fresh and stale, the first repair step
//! > repaired K                            K replicas took the last repair writes; prints the next step
//! > prefer N… [slow N=US…] [down N…] [turn T]
//!                                         the order to ask replicas N… in
//! ```

mod support;

use ringup_proto::NodeId;
use ringup_proto::consistency::Consistency;
use ringup_proto::coordinator::fanout::{self, Event, Fanout, Mode};
use ringup_proto::coordinator::read::{self, Repair, Reply};
use ringup_proto::value::{Header, StoredRecord, Version};
use support::list;

/// What a script has built so far.
#[derive(Default)]
struct Scene {
    fanout: Option<Fanout>,
    read: Option<(Consistency, Vec<NodeId>)>,
    replies: Vec<(NodeId, Reply)>,
    repair: Option<Repair>,
}

impl Scene {
    /// Runs one command and returns what it printed.
    fn run(&mut self, command: &str) -> String {
        let words: Vec<&str> = command.split_whitespace().collect();
        match words.as_slice() {
            ["fanout", mode, level, nodes @ ..] => {
                let mode = if *mode == "all" { Mode::All } else { Mode::Needed };
                let fanout = Fanout::new(mode, level.parse().unwrap(), &ids(nodes));
                let printed = format!("required={} {fanout}", list(&fanout.required()));
                self.fanout = Some(fanout);
                printed
            }
            ["reading", level, of, nodes @ ..] => {
                let fanout = Fanout::reading(level.parse().unwrap(), &ids(nodes), of.parse().unwrap());
                let printed = format!("required={} {fanout}", list(&fanout.required()));
                self.fanout = Some(fanout);
                printed
            }
            ["spanning", mode, level, sets @ ..] => {
                let mode = if *mode == "all" { Mode::All } else { Mode::Needed };
                let sets: Vec<Vec<NodeId>> = sets.split(|w| *w == "|").map(ids).collect();
                let mut order: Vec<NodeId> = Vec::new();
                for node in sets.iter().flatten() {
                    if !order.contains(node) {
                        order.push(*node);
                    }
                }
                let fanout = Fanout::spanning(mode, level.parse().unwrap(), &order, &sets);
                let printed = format!("required={} {fanout}", list(&fanout.required()));
                self.fanout = Some(fanout);
                printed
            }
            ["start"] => self.step(|f| f.start()),
            ["answered", n] => self.step(|f| f.on(Event::Answered(id(n)))),
            ["failed", n] => self.step(|f| f.on(Event::Failed(id(n)))),
            ["stale", n, epoch] => self.step(|f| f.on(Event::Stale { node: id(n), epoch: epoch.parse().unwrap() })),
            ["slow"] => self.step(|f| f.on(Event::Slow)),
            ["deadline"] => self.step(|f| f.on(Event::Deadline)),
            ["read", level, nodes @ ..] => {
                self.read = Some((level.parse().unwrap(), ids(nodes)));
                self.replies.clear();
                self.repair = None;
                String::new()
            }
            ["reply", n, what] => {
                self.replies.push((id(n), reply(what)));
                String::new()
            }
            ["resolve"] => self.resolve(),
            ["repaired", k] => {
                let repair = self.repair.as_mut().expect("resolve first");
                repair.repaired(k.parse().unwrap()).to_string()
            }
            ["prefer", rest @ ..] => prefer(rest),
            _ => panic!("unknown command: {command}"),
        }
    }

    fn step(&mut self, f: impl FnOnce(&mut Fanout) -> fanout::Step) -> String {
        let fanout = self.fanout.as_mut().expect("no fanout yet");
        let step = f(fanout);
        format!("{step} | {fanout}")
    }

    fn resolve(&mut self) -> String {
        let (level, replicas) = self.read.clone().expect("no read yet");
        let resolution = read::resolve(std::mem::take(&mut self.replies));
        let newest = match &resolution.newest {
            Some(v) => format!("v{}", Header::read(v).unwrap().version.hlc),
            None => "none".into(),
        };
        let (repair, step) = Repair::start(level, &replicas, &resolution);
        self.repair = Some(repair);
        format!("newest={newest} fresh=[{}] stale=[{}]\n{step}", list(&resolution.fresh), list(&resolution.stale))
    }
}

fn prefer(words: &[&str]) -> String {
    let (mut nodes, mut slow, mut down, mut turn) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let mut section = "nodes";
    for word in words {
        match *word {
            "slow" | "down" | "turn" => section = word,
            w => match section {
                "nodes" => nodes.push(id(w)),
                "slow" => {
                    let (n, us) = w.split_once('=').expect("slow N=US");
                    slow.push((id(n), us.parse::<u64>().unwrap()));
                }
                "down" => down.push(id(w)),
                _ => turn = w.parse().unwrap(),
            },
        }
    }
    let latency = |n: NodeId| slow.iter().find(|(s, _)| *s == n).map(|(_, us)| *us);
    let order = fanout::preference(&nodes, latency, |n| down.contains(&n), turn);
    list(&order)
}

fn reply(what: &str) -> Reply {
    match what {
        "absent" => Reply::Absent,
        "corrupt" => Reply::Corrupt,
        v => {
            let hlc = v.strip_prefix('v').expect("vH").parse().unwrap();
            let record = StoredRecord { version: Version { hlc, origin: 1 }, ts: 0, tombstone: false, fields: vec![] };
            Reply::Value(record.encode())
        }
    }
}

fn id(word: &str) -> NodeId {
    word.parse().unwrap_or_else(|_| panic!("not a node id: {word}"))
}

fn ids(words: &[&str]) -> Vec<NodeId> {
    words.iter().map(|w| id(w)).collect()
}

#[test]
fn every_scenario_prints_what_its_script_expects() {
    support::check_scripts("tests/scripts", |script| {
        let mut scene = Scene::default();
        support::replay(script, |command| scene.run(command))
    });
}
