//! The nodes' families (`ringup_node_*`, one series per member, labelled
//! `node`), built afresh for each scrape from what the members answered.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use ringup_proto::NodeId;
use ringup_proto::stats::NodeStats;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: NodeId,
}

/// A node holding hints, and the replica they are for.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HintLabels {
    node: NodeId,
    target: NodeId,
}

/// How one figure is read from a node's answer.
type Read = fn(&NodeStats) -> u64;

/// The counters: name, help, figure.
fn counters() -> [(&'static str, &'static str, Read); 24] {
    [
        ("report_partitions_from_segments", "Partitions report scans read from column segments", |s| {
            s.reports.from_segments
        }),
        ("report_partitions_scanned", "Partitions report scans read record by record from RocksDB", |s| {
            s.reports.scanned
        }),
        ("report_segments_built", "Column segments built or extended with more fields for reports", |s| {
            s.reports.built
        }),
        ("clock_skew_refusals", "Writes refused for a version too far ahead of the node's clock", |s| {
            s.clock_skew_refusals
        }),
        ("hints_stored", "Hints the node kept for replicas that missed writes", |s| s.healing.hints_stored),
        ("hints_refused", "Hints refused because the replica's hints were over their bound", |s| {
            s.healing.hints_refused
        }),
        ("hints_replayed", "Hints replayed to their replica and acknowledged", |s| s.healing.hints_replayed),
        ("hints_dropped", "Hints dropped unreplayed (replica moved away, or older than the grace)", |s| {
            s.healing.hints_dropped
        }),
        ("anti_entropy_passes", "Full anti-entropy passes finished", |s| s.healing.passes),
        ("anti_entropy_compared", "Partitions anti-entropy compared with their replicas", |s| s.healing.compared),
        ("anti_entropy_differed", "Comparisons in which a replica differed", |s| s.healing.differed),
        ("anti_entropy_pulled_records", "Records anti-entropy pulled from other replicas", |s| s.healing.pulled),
        ("anti_entropy_read_bytes", "Bytes anti-entropy scanned and pulled", |s| s.healing.bytes),
        ("tombstones_dropped", "Tombstones dropped after their grace", |s| s.healing.tombstones_dropped),
        ("values_resealed", "Values the reseal pass sealed anew under the newest data key", |s| s.values_resealed),
        ("write_batches", "Record batches merged into the node's storage", |s| s.write_batches),
        ("records_written", "Records merged into the node's storage", |s| s.records_written),
        ("point_reads", "Point reads the node served", |s| s.point_reads),
        ("scans", "Scan and digest pages the node served", |s| s.scans),
        ("rocksdb_keys_written", "Keys RocksDB wrote", |s| s.engine.keys_written),
        ("rocksdb_keys_read", "Keys RocksDB read by point lookups", |s| s.engine.keys_read),
        ("rocksdb_flush_written_bytes", "Bytes RocksDB flushes wrote", |s| s.engine.flush_bytes),
        ("rocksdb_compaction_read_bytes", "Bytes RocksDB compactions read", |s| s.engine.compaction_read_bytes),
        ("rocksdb_compaction_written_bytes", "Bytes RocksDB compactions wrote", |s| s.engine.compaction_write_bytes),
    ]
}

/// The gauges: name, help, figure.
fn gauges() -> [(&'static str, &'static str, Read); 17] {
    [
        ("report_segments", "Column segments the node holds for reports", |s| s.reports.segments),
        ("report_segment_bytes", "Bytes of the column segments the node holds", |s| s.reports.segment_bytes),
        ("anti_entropy_partitions", "Partitions the node serves and anti-entropy compares", |s| {
            s.healing.partitions_held
        }),
        (
            "anti_entropy_unagreed_partitions",
            "Of those, how many no comparison with every replica agreeing covered yet",
            |s| s.healing.partitions_unagreed,
        ),
        ("anti_entropy_pass_done_partitions", "Partitions compared in the anti-entropy pass in flight", |s| {
            s.healing.pass_done
        }),
        ("anti_entropy_pass_partitions", "Partitions the anti-entropy pass in flight covers", |s| s.healing.pass_total),
        ("raft_term", "The metadata group's term as the node knows it", |s| s.raft_term),
        ("data_key", "The data key sealing new values; 0 when values are stored in clear", |s| {
            s.data_key.map_or(0, u64::from)
        }),
        ("raft_leader", "The metadata group's leader as the node knows it; 0 for none", |s| s.raft_leader.unwrap_or(0)),
        ("rocksdb_sst_bytes", "Bytes of RocksDB's SST files", |s| s.engine.sst_bytes),
        ("rocksdb_memtable_bytes", "Bytes held by RocksDB's memtables", |s| s.engine.memtable_bytes),
        ("rocksdb_estimated_keys", "RocksDB's estimate of the records' keys", |s| s.engine.estimated_keys),
        ("rocksdb_running_flushes", "RocksDB flushes running", |s| s.engine.running_flushes),
        ("rocksdb_running_compactions", "RocksDB compactions running", |s| s.engine.running_compactions),
        ("rocksdb_pending_compaction_bytes", "Bytes RocksDB estimates compaction must rewrite", |s| {
            s.engine.pending_compaction_bytes
        }),
        ("rocksdb_write_stopped", "1 while RocksDB stops writes (a stall), else 0", |s| {
            u64::from(s.engine.write_stopped)
        }),
        (
            "rocksdb_delayed_write_rate_bytes_per_second",
            "The rate RocksDB slows writes to during a stall; 0 when not slowed",
            |s| s.engine.delayed_write_rate,
        ),
    ]
}

/// A registry of the nodes' families; `nodes` gives each member and its
/// answer, `None` for one that did not answer.
pub fn registry(nodes: &[(NodeId, Option<NodeStats>)], now_ms: u64) -> Registry {
    let mut registry = Registry::with_prefix("ringup_node");
    let up = Family::<NodeLabels, Gauge>::default();
    registry.register("up", "1 if the node answered this scrape's stats call, else 0", up.clone());
    for (node, stats) in nodes {
        up.get_or_create(&NodeLabels { node: *node }).set(i64::from(stats.is_some()));
    }
    let answered: Vec<(NodeId, &NodeStats)> = nodes.iter().filter_map(|(n, s)| Some((*n, s.as_ref()?))).collect();
    for (name, help, read) in counters() {
        let family = Family::<NodeLabels, Counter>::default();
        registry.register(name, help, family.clone());
        for (node, stats) in &answered {
            family.get_or_create(&NodeLabels { node: *node }).inc_by(read(stats));
        }
    }
    for (name, help, read) in gauges() {
        let family = Family::<NodeLabels, Gauge>::default();
        registry.register(name, help, family.clone());
        for (node, stats) in &answered {
            family.get_or_create(&NodeLabels { node: *node }).set(read(stats) as i64);
        }
    }
    let pending = Family::<HintLabels, Gauge>::default();
    registry.register("hints_pending_bytes", "Bytes of hints held, by the replica they are for", pending.clone());
    for (node, stats) in &answered {
        for (target, bytes) in &stats.healing.hints_pending {
            pending.get_or_create(&HintLabels { node: *node, target: *target }).set(*bytes as i64);
        }
    }
    let age = Family::<NodeLabels, Gauge<f64, AtomicU64>>::default();
    registry.register(
        "anti_entropy_last_pass_age_seconds",
        "Seconds since the last full anti-entropy pass finished (no series before the first)",
        age.clone(),
    );
    for (node, stats) in &answered {
        if let Some(at) = stats.healing.last_pass_ms {
            age.get_or_create(&NodeLabels { node: *node }).set(now_ms.saturating_sub(at) as f64 / 1000.0);
        }
    }
    let stalls = Family::<NodeLabels, Counter<f64, AtomicU64>>::default();
    registry.register("rocksdb_stall_seconds", "Time RocksDB delayed or stopped writes", stalls.clone());
    for (node, stats) in &answered {
        stalls.get_or_create(&NodeLabels { node: *node }).inc_by(stats.engine.stall_micros as f64 / 1e6);
    }
    registry
}
