//! What the node's unit tests build their inputs from.

use std::collections::{BTreeMap, BTreeSet};

use ringup_proto::NodeId;
use ringup_proto::cluster::{ClusterMap, MapCommand};
use ringup_proto::migration::{Move, Stage};

/// A map formed by members 1 to 4 at RF 3 over `partitions` partitions.
pub fn formed(partitions: u32) -> ClusterMap {
    let mut map = ClusterMap::default();
    let members = (1..=4).map(|n| (n, format!("127.0.0.1:{n}"))).collect();
    map.apply(&MapCommand::Bootstrap { partitions, replication_factor: 3, members, cluster_id: 1 })
        .expect("a first bootstrap is applied");
    map
}

/// A move from `from` to `to` in `stage`, started at epoch 7, its stage at
/// epoch 9, with nothing streamed or cleaned yet.
pub fn a_move(from: &[NodeId], to: &[NodeId], stage: Stage) -> Move {
    Move {
        from: from.to_vec(),
        to: to.to_vec(),
        stage,
        started_epoch: 7,
        stage_epoch: 9,
        streamed: BTreeMap::new(),
        cleaned: BTreeSet::new(),
    }
}
