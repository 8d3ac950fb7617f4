//! What the streams into this node have copied so far: partition moves
//! ([`crate::migrate`]) and refills ([`crate::refill`]) note each chunk,
//! the node's stats show it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use ringup_proto::migration::Streamed;
use ringup_proto::ring::PartitionId;

/// What the streams into this node have copied so far, by partition.
#[derive(Debug, Default)]
pub struct Progress {
    streams: Mutex<BTreeMap<PartitionId, (u64, Streamed)>>,
}

impl Progress {
    /// Every stream in flight: partition, the epoch that started its move,
    /// and what has arrived.
    pub fn snapshot(&self) -> Vec<(PartitionId, u64, Streamed)> {
        self.streams.lock().expect("progress poisoned").iter().map(|(p, (e, s))| (*p, *e, *s)).collect()
    }

    pub(crate) fn set(&self, partition: PartitionId, started: u64, streamed: Streamed) {
        self.streams.lock().expect("progress poisoned").insert(partition, (started, streamed));
    }

    pub(crate) fn clear(&self, partition: PartitionId) {
        self.streams.lock().expect("progress poisoned").remove(&partition);
    }
}
