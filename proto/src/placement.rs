//! Placement: which nodes hold a replica of each partition.
//!
//! The table stores every partition's replica set, owner first. A fresh
//! cluster lays the sets out as ring neighbours: partition `p` gets the
//! `RF` consecutive nodes that follow slot `p × RF` on the ring of node ids,
//! so every node holds `Q·RF/N` partition-replicas, give or take one.
//!
//! [`Placement::rebalance`] moves single replicas, never whole sets. It fills
//! the holes left by departed nodes, then moves replicas one at a time from
//! the most loaded node to the least loaded one. Every move lowers an excess
//! and a deficit by one, so the number of moves is the least that reaches the
//! balanced targets: a join moves about `Q·RF/(N+1)` replicas, all of them
//! onto the new node.
//!
//! Why not derive sets from a table of owners by walking the ring? With
//! `Q = 1024` and 100 nodes, owners come in whole partitions (10 or 11 per
//! node), so replicated load would vary by 10 %. Placing replicas one by one
//! keeps every node within one replica of the mean.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ring::{PartitionId, Ring};

/// A node's id, unique for the life of a cluster.
pub type NodeId = u64;

/// Each partition's replica set; the first replica is the partition's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    replicas: Vec<Vec<NodeId>>,
}

impl Placement {
    /// Lays out a fresh ring over `nodes` with `rf` replicas per partition
    /// (fewer when there are fewer nodes).
    pub fn initial(ring: Ring, nodes: &BTreeSet<NodeId>, rf: usize) -> Self {
        assert!(!nodes.is_empty(), "a placement needs at least one node");
        let nodes: Vec<NodeId> = nodes.iter().copied().collect();
        let rf = rf.min(nodes.len());
        let replicas = (0..ring.partitions() as usize)
            .map(|p| (0..rf).map(|j| nodes[(p * rf + j) % nodes.len()]).collect())
            .collect();
        Self { replicas }
    }

    /// The replica set of `partition`, owner first.
    pub fn replicas(&self, partition: PartitionId) -> &[NodeId] {
        &self.replicas[partition as usize]
    }

    /// Makes `set` the replica set of `partition`.
    pub fn set_replicas(&mut self, partition: PartitionId, set: Vec<NodeId>) {
        self.replicas[partition as usize] = set;
    }

    /// How many partitions the table covers.
    pub fn partitions(&self) -> u32 {
        self.replicas.len() as u32
    }

    /// Partition-replicas per node, for every node that holds any.
    pub fn load(&self) -> BTreeMap<NodeId, usize> {
        let mut load = BTreeMap::new();
        for node in self.replicas.iter().flatten() {
            *load.entry(*node).or_insert(0) += 1;
        }
        load
    }

    /// How many partition-replicas `other` places on a node that `self`
    /// does not: the replicas a change from `self` to `other` must copy.
    pub fn moves_to(&self, other: &Placement) -> usize {
        self.replicas
            .iter()
            .zip(&other.replicas)
            .map(|(old, new)| new.iter().filter(|n| !old.contains(n)).count())
            .sum()
    }

    /// The placement for a new membership, reached from `self` with as few
    /// replica moves as possible.
    pub fn rebalance(&self, nodes: &BTreeSet<NodeId>, rf: usize) -> Placement {
        assert!(!nodes.is_empty(), "a placement needs at least one node");
        let rf = rf.min(nodes.len());
        let mut next = Rebalance::new(self, nodes, rf);
        next.fill_holes(rf);
        next.level();
        Placement { replicas: next.replicas }
    }
}

/// The working state of one rebalance.
struct Rebalance {
    replicas: Vec<Vec<NodeId>>,
    load: BTreeMap<NodeId, usize>,
    target: BTreeMap<NodeId, usize>,
    /// Where the next search for a partition to move starts, so that moves
    /// spread round the ring instead of piling up at its start.
    cursor: usize,
}

impl Rebalance {
    /// Drops departed nodes (and any replicas above `rf`) and sets each
    /// node's target load.
    fn new(from: &Placement, nodes: &BTreeSet<NodeId>, rf: usize) -> Self {
        let replicas: Vec<Vec<NodeId>> = from
            .replicas
            .iter()
            .map(|set| set.iter().copied().filter(|n| nodes.contains(n)).take(rf).collect())
            .collect();
        let mut load: BTreeMap<NodeId, usize> = nodes.iter().map(|n| (*n, 0)).collect();
        for node in replicas.iter().flatten() {
            *load.get_mut(node).expect("only members remain") += 1;
        }
        let target = targets(&load, replicas.len() * rf);
        Self { replicas, load, target, cursor: 0 }
    }

    fn deficit(&self, node: NodeId) -> isize {
        self.target[&node] as isize - self.load[&node] as isize
    }

    /// Gives every short replica set the node that most lacks load.
    fn fill_holes(&mut self, rf: usize) {
        for p in 0..self.replicas.len() {
            while self.replicas[p].len() < rf {
                let set = &self.replicas[p];
                let pick = self
                    .load
                    .keys()
                    .copied()
                    .filter(|n| !set.contains(n))
                    .max_by_key(|n| (self.deficit(*n), std::cmp::Reverse(*n)))
                    .expect("rf never exceeds the node count");
                self.replicas[p].push(pick);
                *self.load.get_mut(&pick).expect("a member") += 1;
            }
        }
    }

    /// Moves replicas from overloaded nodes to underloaded ones until every
    /// node is at its target.
    fn level(&mut self) {
        loop {
            let donor = self.load.keys().copied().max_by_key(|n| (-self.deficit(*n), std::cmp::Reverse(*n)));
            let taker = self.load.keys().copied().max_by_key(|n| (self.deficit(*n), std::cmp::Reverse(*n)));
            let (Some(donor), Some(taker)) = (donor, taker) else {
                return;
            };
            if self.deficit(donor) >= 0 || self.deficit(taker) <= 0 {
                return;
            }
            self.move_one(donor, taker);
        }
    }

    /// Moves one replica of some partition from `donor` to `taker`, keeping
    /// its position in the set (so an owner hands over ownership).
    fn move_one(&mut self, donor: NodeId, taker: NodeId) {
        let q = self.replicas.len();
        let p = (0..q)
            .map(|i| (self.cursor + i) % q)
            .find(|p| self.replicas[*p].contains(&donor) && !self.replicas[*p].contains(&taker))
            .expect("a node above its target shares fewer sets with a node below it than it holds");
        let slot = self.replicas[p].iter().position(|n| *n == donor).expect("found above");
        self.replicas[p][slot] = taker;
        *self.load.get_mut(&donor).expect("a member") -= 1;
        *self.load.get_mut(&taker).expect("a member") += 1;
        self.cursor = (p + 1) % q;
    }
}

/// Balanced target loads summing to `total`: everyone gets the floor of the
/// mean, and the remainder goes to the nodes that already hold the most, so
/// that rounding never causes a move.
fn targets(load: &BTreeMap<NodeId, usize>, total: usize) -> BTreeMap<NodeId, usize> {
    let n = load.len();
    let (base, extra) = (total / n, total % n);
    let mut by_load: Vec<(NodeId, usize)> = load.iter().map(|(k, v)| (*k, *v)).collect();
    by_load.sort_by_key(|(node, load)| (std::cmp::Reverse(*load), *node));
    by_load.iter().enumerate().map(|(rank, (node, _))| (*node, base + usize::from(rank < extra))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RF: usize = 3;

    fn nodes(ids: impl IntoIterator<Item = NodeId>) -> BTreeSet<NodeId> {
        ids.into_iter().collect()
    }

    /// max / mean of partition-replicas per node.
    fn imbalance(placement: &Placement, members: &BTreeSet<NodeId>) -> f64 {
        let load = placement.load();
        let max = members.iter().map(|n| load.get(n).copied().unwrap_or(0)).max().unwrap();
        let mean = (placement.partitions() as usize * RF.min(members.len())) as f64 / members.len() as f64;
        max as f64 / mean
    }

    fn assert_valid(placement: &Placement, members: &BTreeSet<NodeId>) {
        for p in 0..placement.partitions() {
            let set = placement.replicas(p);
            assert_eq!(set.len(), RF.min(members.len()), "partition {p} has {set:?}");
            assert!(set.iter().all(|n| members.contains(n)), "partition {p} names a non-member: {set:?}");
            let distinct: BTreeSet<_> = set.iter().collect();
            assert_eq!(distinct.len(), set.len(), "partition {p} repeats a node: {set:?}");
        }
    }

    #[test]
    fn a_fresh_ring_uses_ring_neighbours() {
        let placement = Placement::initial(Ring::new(8), &nodes([10, 20, 30, 40]), RF);
        assert_eq!(placement.replicas(0), [10, 20, 30]);
        assert_eq!(placement.replicas(1), [40, 10, 20]);
        assert_eq!(placement.replicas(2), [30, 40, 10]);
    }

    #[test]
    fn balanced_within_five_percent_for_3_to_100_nodes() {
        let mut worst = 0.0f64;
        for n in 3..=100 {
            let members = nodes(1..=n);
            let placement = Placement::initial(Ring::default(), &members, RF);
            assert_valid(&placement, &members);
            worst = worst.max(imbalance(&placement, &members));
        }
        println!("worst max/mean over fresh rings of 3..=100 nodes: {worst:.4}");
        assert!(worst <= 1.05, "worst max/mean {worst:.4}");
    }

    #[test]
    fn growing_one_node_at_a_time_from_3_to_100_stays_balanced_and_moves_little() {
        let mut members = nodes(1..=3);
        let mut placement = Placement::initial(Ring::default(), &members, RF);
        let (mut worst_balance, mut worst_move) = (0.0f64, 0.0f64);
        for new in 4..=100 {
            members.insert(new);
            let next = placement.rebalance(&members, RF);
            assert_valid(&next, &members);
            let moved = placement.moves_to(&next) as f64 / (placement.partitions() as usize * RF) as f64;
            let ideal = 1.0 / members.len() as f64;
            worst_move = worst_move.max(moved / ideal);
            worst_balance = worst_balance.max(imbalance(&next, &members));
            placement = next;
        }
        println!("joins 4..=100: worst max/mean {worst_balance:.4}, worst moved/ideal {worst_move:.4}");
        assert!(worst_balance <= 1.05, "worst max/mean {worst_balance:.4}");
        assert!(worst_move <= 1.05, "worst moved/ideal {worst_move:.4}");
    }

    #[test]
    fn a_join_moves_replicas_only_onto_the_new_node() {
        let members = nodes(1..=5);
        let placement = Placement::initial(Ring::default(), &members, RF);
        let grown = placement.rebalance(&nodes(1..=6), RF);
        let load = grown.load();
        assert_eq!(placement.moves_to(&grown), load[&6], "every move should land on node 6");
    }

    #[test]
    fn a_departed_node_is_replaced_everywhere() {
        let placement = Placement::initial(Ring::default(), &nodes(1..=4), RF);
        let shrunk = placement.rebalance(&nodes([1, 2, 4]), RF);
        assert_valid(&shrunk, &nodes([1, 2, 4]));
        assert_eq!(placement.moves_to(&shrunk), placement.load()[&3]);
    }

    #[test]
    fn rebalancing_an_unchanged_membership_moves_nothing() {
        let members = nodes([3, 9, 27, 81]);
        let placement = Placement::initial(Ring::default(), &members, RF);
        assert_eq!(placement.rebalance(&members, RF), placement);
    }

    #[test]
    fn fewer_nodes_than_rf_gives_smaller_sets() {
        let placement = Placement::initial(Ring::new(4), &nodes([1, 2]), RF);
        assert_valid(&placement, &nodes([1, 2]));
        let grown = placement.rebalance(&nodes([1, 2, 3]), RF);
        assert_valid(&grown, &nodes([1, 2, 3]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn joins_and_leaves_keep_placement_balanced(
            start in 3u64..40,
            changes in proptest::collection::vec((any::<bool>(), 0u64..1000), 1..6),
        ) {
            let mut members = nodes(1..=start);
            let mut placement = Placement::initial(Ring::default(), &members, RF);
            for (join, pick) in changes {
                let before = members.clone();
                if join {
                    members.insert(1000 + pick);
                } else if members.len() > 3 {
                    let gone = *members.iter().nth(pick as usize % members.len()).unwrap();
                    members.remove(&gone);
                }
                if members == before {
                    continue;
                }
                let next = placement.rebalance(&members, RF);
                assert_valid(&next, &members);
                prop_assert!(imbalance(&next, &members) <= 1.05);
                if join {
                    let moved = placement.moves_to(&next) as f64 / (placement.partitions() as usize * RF) as f64;
                    prop_assert!(moved <= 1.05 / members.len() as f64, "moved {moved} for {} nodes", members.len());
                }
                placement = next;
            }
        }
    }
}
