//! What a node reports of itself: the requests it served and its storage
//! engine's size and work. The router asks every member for these on
//! `GET /metrics` and serves them as the `ringup_node_*` families, one
//! series per node.

use serde::{Deserialize, Serialize};

use crate::placement::NodeId;

/// A node's counters and gauges at the moment it answered
/// [`crate::rpc::Request::Stats`]. Counters count from the node's start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Record batches merged into storage (writes, repairs, hints).
    pub write_batches: u64,
    /// Records in those batches.
    pub records_written: u64,
    /// Point reads served.
    pub point_reads: u64,
    /// Scan and digest pages served.
    pub scans: u64,
    /// The metadata group's term as this node knows it.
    pub raft_term: u64,
    /// The metadata group's leader as this node knows it.
    pub raft_leader: Option<NodeId>,
    /// Writes refused because their version lay too far ahead of the
    /// node's clock.
    pub clock_skew_refusals: u64,
    /// Hints and anti-entropy.
    pub healing: HealingStats,
    /// Reports' scans and column segments.
    pub reports: ReportStats,
    /// The storage engine's figures.
    pub engine: EngineStats,
    /// The data key sealing new values; `None` when values are stored in
    /// clear.
    pub data_key: Option<u32>,
    /// Values the reseal pass sealed anew under the newest data key.
    pub values_resealed: u64,
}

/// What a node's hints and anti-entropy have done since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealingStats {
    /// Bytes of hints held per replica that missed writes.
    pub hints_pending: Vec<(NodeId, u64)>,
    /// Hints kept.
    pub hints_stored: u64,
    /// Hints refused because their replica's hints were over the bound.
    pub hints_refused: u64,
    /// Hints replayed and acknowledged.
    pub hints_replayed: u64,
    /// Hints dropped unreplayed.
    pub hints_dropped: u64,
    /// Full anti-entropy passes finished.
    pub passes: u64,
    /// When the last full pass finished, in wall-clock ms.
    pub last_pass_ms: Option<u64>,
    /// Partitions compared in the pass in flight.
    pub pass_done: u64,
    /// Partitions the pass in flight covers.
    pub pass_total: u64,
    /// Partitions compared in all.
    pub compared: u64,
    /// Comparisons in which a replica differed.
    pub differed: u64,
    /// Records pulled from other replicas.
    pub pulled: u64,
    /// Bytes scanned and pulled.
    pub bytes: u64,
    /// Tombstones dropped after their grace.
    pub tombstones_dropped: u64,
    /// Partitions the node serves and compares.
    pub partitions_held: u64,
    /// Of those, how many no comparison in which every replica agreed has
    /// covered since the node started.
    pub partitions_unagreed: u64,
    /// When the oldest of the last agreeing comparisons of the others
    /// started, in wall-clock ms.
    pub oldest_agreement_ms: Option<u64>,
}

/// How a node's report scans read their partitions, and the column
/// segments it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportStats {
    /// Partitions read from a column segment (one built for the report
    /// included).
    pub from_segments: u64,
    /// Partitions scanned record by record from RocksDB.
    pub scanned: u64,
    /// Segments built, or extended with more fields.
    pub built: u64,
    /// Segments held.
    pub segments: u64,
    /// Their bytes.
    pub segment_bytes: u64,
}

/// RocksDB's figures, from its properties and statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Bytes of SST files, every column family.
    pub sst_bytes: u64,
    /// Bytes held by memtables, every column family.
    pub memtable_bytes: u64,
    /// RocksDB's estimate of the keys in the records' family.
    pub estimated_keys: u64,
    /// Keys written (counter).
    pub keys_written: u64,
    /// Keys read by point lookups (counter).
    pub keys_read: u64,
    /// Bytes written by flushes (counter).
    pub flush_bytes: u64,
    /// Bytes read by compactions (counter).
    pub compaction_read_bytes: u64,
    /// Bytes written by compactions (counter).
    pub compaction_write_bytes: u64,
    /// Flushes running now.
    pub running_flushes: u64,
    /// Compactions running now.
    pub running_compactions: u64,
    /// Bytes compaction estimates it must rewrite to bring every level
    /// under its target size.
    pub pending_compaction_bytes: u64,
    /// Microseconds writes were delayed or stopped by a stall (counter).
    pub stall_micros: u64,
    /// Whether writes are stopped now (too many memtables or L0 files).
    pub write_stopped: bool,
    /// The rate writes are slowed to, in bytes per second; 0 when they are
    /// not slowed.
    pub delayed_write_rate: u64,
}
