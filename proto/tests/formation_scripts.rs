//! Scripted scenarios of a node's start and of the metadata group
//! following the members ([`ringup_proto::formation`]): each file in
//! `tests/formation/` is a list of commands (`> command`), each followed by
//! what the decisions printed (see `support` for the runner).
//!
//! Commands:
//!
//! ```text
//! > setup ID|- N…             the node's id (- for none) and the initial nodes
//! > start STORED|-            its first step, its directory holding id STORED (- for none)
//! > answers N=E|starting …    a round of the other initial nodes' answers to Hello (E: the epoch
//!                             of the map they hold, 0 for none; a node not named is silent);
//!                             prints the decision
//! > initializes ME yes|no     whether ME initializes the group (yes: it is initialized already)
//! > forming leader|follower in N… map|nomap waited S
//!                             what the first leader sees: prints its next step
//! > map N=STATE…              the cluster map's members (up, joining, leaving, removed)
//! > rejoin N                  the map starts refilling N (its directory was wiped)
//! > group ME voters N… learners N… [joint] matched N=I… last I
//!                             the group as its leader ME sees it
//! > wiped N…                  members that answer Hello as waiting (none: no one)
//! > follow                    the leader's next step
//! ```

mod support;

use std::collections::{BTreeMap, BTreeSet};

use ringup_proto::NodeId;
use ringup_proto::cluster::{ClusterMap, MapCommand, MemberState};
use ringup_proto::formation::{self, Answer, Forming, Group, Setup};
use support::list;

#[derive(Default)]
struct Scene {
    setup: Option<Setup>,
    map: ClusterMap,
    group: Option<Group>,
    wiped: BTreeSet<NodeId>,
}

fn id(word: &str) -> NodeId {
    word.parse().unwrap_or_else(|_| panic!("{word:?} is not a node id"))
}

fn ids(words: &[&str]) -> BTreeSet<NodeId> {
    words.iter().map(|w| id(w)).collect()
}

impl Scene {
    fn setup(&self) -> &Setup {
        self.setup.as_ref().expect("a setup first")
    }

    fn run(&mut self, command: &str) -> String {
        let words: Vec<&str> = command.split_whitespace().collect();
        match words.as_slice() {
            ["setup", me, initial @ ..] => {
                self.setup = Some(Setup { id: (*me != "-").then(|| id(me)), initial: ids(initial) });
                String::new()
            }
            ["start", stored] => format!("{:?}", formation::start(self.setup(), (*stored != "-").then(|| id(stored)))),
            ["answers", answers @ ..] => {
                let me = self.setup().id.expect("a probing node has an id");
                let answers: BTreeMap<NodeId, Answer> = answers
                    .iter()
                    .map(|a| {
                        let (n, answer) = a.split_once('=').expect("N=ANSWER");
                        let answer = match answer {
                            "starting" => Answer::Starting,
                            epoch => Answer::Map(epoch.parse().unwrap()),
                        };
                        (id(n), answer)
                    })
                    .collect();
                format!("{:?}", formation::probed(self.setup(), me, &answers))
            }
            ["initializes", me, initialized] => {
                match formation::initializes(self.setup(), id(me), *initialized == "yes") {
                    Some(voters) => format!("initialize with voters {}", list(&voters.into_iter().collect::<Vec<_>>())),
                    None => "does not initialize".into(),
                }
            }
            ["forming", role, "in", rest @ ..] => {
                let split = rest.iter().position(|w| *w == "map" || *w == "nomap").expect("map|nomap");
                let (members, tail) = rest.split_at(split);
                let waited = match tail {
                    [_, "waited", s] => std::time::Duration::from_secs(s.parse().unwrap()),
                    _ => panic!("forming … map|nomap waited S"),
                };
                let now = Forming {
                    leader: *role == "leader",
                    membership: ids(members),
                    map_ready: tail[0] == "map",
                    waited,
                };
                let step = formation::bootstrap(&self.setup().initial, &now);
                let learners: Vec<NodeId> = step.learners.into_iter().collect();
                format!("add learners [{}], create map {:?}, done {}", list(&learners), step.create_map, step.done)
            }
            ["map", members @ ..] => {
                self.map = map_of(members);
                format!("epoch {}", self.map.epoch)
            }
            ["rejoin", n] => {
                let answer = self.map.apply(&MapCommand::Rejoin { id: id(n) });
                format!("{answer:?}")
            }
            ["group", me, rest @ ..] => {
                self.group = Some(group_of(id(me), rest));
                String::new()
            }
            ["wiped", nodes @ ..] => {
                self.wiped = ids(nodes);
                String::new()
            }
            ["follow"] => {
                let group = self.group.as_ref().expect("a group first");
                match formation::follow(&self.map, group, &self.wiped) {
                    formation::Follow::Nothing => "nothing".into(),
                    formation::Follow::Rejoin { node, leave } => format!("rejoin {node}: {leave}"),
                    formation::Follow::Steps { adopt, change } => {
                        let adopt: Vec<String> =
                            adopt.iter().map(|(n, from)| format!("{n} (reads from {from})")).collect();
                        let change = change.map_or("no membership change".into(), |c| c.to_string());
                        format!("adopt [{}], {change}", adopt.join(", "))
                    }
                }
            }
            _ => panic!("unknown command: {command}"),
        }
    }
}

/// A ready map of 8 partitions at RF 3 over the members named `N=STATE`.
fn map_of(members: &[&str]) -> ClusterMap {
    let parsed: Vec<(NodeId, MemberState)> = members
        .iter()
        .map(|m| {
            let (n, state) = m.split_once('=').expect("N=STATE");
            let state = match state {
                "up" => MemberState::Up,
                "joining" => MemberState::Joining,
                "leaving" => MemberState::Leaving,
                "removed" => MemberState::Removed,
                other => panic!("unknown state {other}"),
            };
            (id(n), state)
        })
        .collect();
    let mut map = ClusterMap::default();
    let members = parsed.iter().map(|(n, _)| (*n, format!("n{n}"))).collect();
    let bootstrap = MapCommand::Bootstrap { partitions: 8, replication_factor: 3, members, cluster_id: 1 };
    map.apply(&bootstrap).expect("the map starts");
    for (n, state) in parsed {
        map.members.get_mut(&n).expect("a member").state = state;
    }
    map
}

/// `voters N… learners N… [joint] matched N=I… last I`.
fn group_of(me: NodeId, words: &[&str]) -> Group {
    let mut group = Group {
        me,
        voters: BTreeSet::new(),
        known: BTreeSet::new(),
        settled: true,
        matched: BTreeMap::new(),
        last_index: 0,
    };
    let mut part = "";
    for word in words {
        match *word {
            "voters" | "learners" | "matched" | "last" => part = word,
            "joint" => group.settled = false,
            w => match part {
                "voters" => {
                    group.voters.insert(id(w));
                    group.known.insert(id(w));
                }
                "learners" => {
                    group.known.insert(id(w));
                }
                "matched" => {
                    let (n, index) = w.split_once('=').expect("N=INDEX");
                    group.matched.insert(id(n), index.parse().unwrap());
                }
                "last" => group.last_index = w.parse().unwrap(),
                _ => panic!("{w:?} outside voters, learners, matched or last"),
            },
        }
    }
    group
}

#[test]
fn formation_scripts() {
    support::check_scripts("tests/formation", |script| {
        let mut scene = Scene::default();
        support::replay(script, |command| scene.run(command))
    });
}
