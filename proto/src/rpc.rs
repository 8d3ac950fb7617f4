//! The messages of the internal RPC between routers and nodes, and between
//! nodes.
//!
//! Every data request carries the epoch of the map its coordinator routed it
//! with. A node that knows a newer epoch refuses it with
//! [`RpcError::StaleEpoch`], and the coordinator refreshes its map and
//! retries.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use thiserror::Error;

use crate::cluster::{ClusterMap, MapCommand, MapError};
use crate::merkle::PartitionDigest;
use crate::migration::Streamed;
use crate::placement::NodeId;
use crate::query::{Partial, Plan};
use crate::ring::PartitionId;
use crate::stats::NodeStats;
use crate::value::Version;

/// A request and the id its answer will carry, so that many requests can
/// share one connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Chosen by the sender, unique among its requests in flight.
    pub id: u64,
    /// The request or the response.
    pub body: T,
}

/// Names one shop's collection on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionRef {
    /// The epoch of the coordinator's map.
    pub epoch: u64,
    /// The shop's partition under that map.
    pub partition: PartitionId,
    /// The shop.
    pub shop: String,
    /// The collection.
    pub collection: String,
}

/// A request to a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Is the node there? Answered with [`Response::Pong`].
    Ping,
    /// Merges encoded values into the collection, last writer winning, in
    /// one atomic batch. Answered with [`Response::Written`].
    Write {
        /// Where the records go.
        target: CollectionRef,
        /// Record id and encoded value, in any order. The values travel as
        /// byte strings, copied whole rather than byte by byte.
        records: Vec<(String, ByteBuf)>,
    },
    /// Reads one record. Answered with [`Response::Value`].
    Get {
        /// Where the record is.
        target: CollectionRef,
        /// Its id.
        id: String,
    },
    /// Reads records in id order, tombstones included, so the coordinator
    /// can merge replicas. Answered with [`Response::Entries`].
    Scan {
        /// The collection.
        target: CollectionRef,
        /// Start after this id.
        after: Option<String>,
        /// At most this many entries.
        limit: u32,
    },
    /// The id, version and tombstone flag of records of a collection, in id
    /// order. Answered with [`Response::Digests`].
    Digests {
        /// The collection.
        target: CollectionRef,
        /// Start after this id.
        after: Option<String>,
        /// At most this many digests.
        limit: u32,
    },
    /// The node's cluster map, once its epoch exceeds `known_epoch` or after
    /// `wait_ms`, whichever comes first. Answered with [`Response::Map`].
    GetMap {
        /// The epoch the caller already has.
        known_epoch: u64,
        /// How long to wait for a newer one, in milliseconds.
        wait_ms: u32,
    },
    /// Applies a map command through the metadata group. Only the Raft
    /// leader does so; any other node answers [`RpcError::NotLeader`].
    /// Answered with [`Response::Proposed`].
    Propose {
        /// The command.
        command: MapCommand,
    },
    /// Who is the node? Answered with [`Response::Hello`]; a node started
    /// with no id and no initial nodes answers this while it waits to be
    /// added.
    Hello,
    /// Gives a waiting node the id the map assigned it, so that it joins
    /// the metadata group. Answered with [`Response::Adopted`]; a node that
    /// already has another id refuses.
    Adopt {
        /// The id.
        id: NodeId,
        /// The node serves no reads until its map has reached this epoch:
        /// for a node that came back with an empty data directory, the
        /// epoch of its `Rejoin` (see [`crate::heal`]); 0 for a new node.
        reads_from: u64,
    },
    /// One chunk of a partition's records as an SST file, for a new replica
    /// copying the partition. Answered with [`Response::Chunk`].
    StreamChunk {
        /// The partition.
        partition: PartitionId,
        /// The epoch of the move's `streaming` stage: the source answers only
        /// once its map has reached it, so that it takes every write routed
        /// before the move began.
        epoch: u64,
        /// Continue after this encoded key; the start of the range if none.
        #[serde(with = "serde_bytes")]
        after: Option<Vec<u8>>,
    },
    /// The partitions of which the node holds any key. Answered with
    /// [`Response::Holdings`].
    Holdings,
    /// What the node's streams in flight have copied so far. Answered with
    /// [`Response::Progress`].
    Progress,
    /// The node's counters and its storage engine's figures. Answered with
    /// [`Response::Stats`].
    Stats,
    /// Keeps a write that replica `for_node` missed, to replay to it once
    /// it answers again. Answered with [`Response::Written`] once durable,
    /// or [`RpcError::HintsFull`].
    Hint {
        /// The replica that missed the write.
        for_node: NodeId,
        /// Where the records go.
        target: CollectionRef,
        /// Record id and encoded value.
        records: Vec<(String, ByteBuf)>,
    },
    /// The digest of the node's copy of a partition. Answered with
    /// [`Response::Digest`].
    PartitionDigest {
        /// The partition.
        partition: PartitionId,
    },
    /// The records of a partition that fall in the given digest buckets,
    /// in key order. Answered with [`Response::Bucket`].
    BucketEntries {
        /// The partition.
        partition: PartitionId,
        /// The buckets.
        buckets: Vec<u16>,
        /// Continue after this encoded key.
        #[serde(with = "serde_bytes")]
        after: Option<Vec<u8>>,
    },
    /// A report's partial result over some partitions, each of which the
    /// node must serve reads of under a map of at least `epoch`. Answered
    /// with [`Response::QueryPart`].
    Query {
        /// The epoch of the coordinator's map.
        epoch: u64,
        /// The partitions to scan.
        partitions: Vec<PartitionId>,
        /// The report.
        plan: Box<Plan>,
        /// The most groups and distinct values the node may hold.
        max_groups: u64,
        /// How long the node may scan, in ms, before it gives up.
        budget_ms: u64,
        /// How many other replicas of each partition the node first
        /// compares its copy with, pulling what differs (0 at ONE).
        reconcile: u32,
    },
    /// A message of the metadata Raft group, opaque to this crate.
    /// Answered with [`Response::Raft`].
    Raft {
        /// Which Raft call.
        kind: RaftCall,
        /// The call's request, serialized with [`crate::frame::to_bytes`].
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
}

impl Request {
    /// Where a data request goes, to route it afresh; `None` for the
    /// others.
    pub fn target_mut(&mut self) -> Option<&mut CollectionRef> {
        match self {
            Request::Write { target, .. }
            | Request::Get { target, .. }
            | Request::Scan { target, .. }
            | Request::Digests { target, .. } => Some(target),
            Request::Ping
            | Request::GetMap { .. }
            | Request::Propose { .. }
            | Request::Hello
            | Request::Adopt { .. }
            | Request::StreamChunk { .. }
            | Request::Holdings
            | Request::Progress
            | Request::Stats
            | Request::Hint { .. }
            | Request::PartitionDigest { .. }
            | Request::BucketEntries { .. }
            | Request::Query { .. }
            | Request::Raft { .. } => None,
        }
    }
}

/// The calls of the metadata Raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftCall {
    /// Log replication and heartbeats.
    AppendEntries,
    /// Leader election.
    Vote,
    /// A chunk of a state machine snapshot.
    InstallSnapshot,
}

/// One record as a scan returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The record's id.
    pub id: String,
    /// Its encoded value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// A record's id and version, without its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// The record's id.
    pub id: String,
    /// Its version.
    pub version: Version,
    /// Whether it is deleted.
    pub tombstone: bool,
}

/// A node's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// The answer to [`Request::Ping`].
    Pong {
        /// The node's id.
        node: NodeId,
        /// The epoch of its map.
        epoch: u64,
    },
    /// The write is durable under the node's fsync policy.
    Written,
    /// The record's encoded value, if the node has one.
    Value(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    /// A page of a scan.
    Entries {
        /// The records, in id order.
        entries: Vec<Entry>,
        /// Whether the node stopped before the end of the range (at the
        /// limit, or at its byte budget).
        more: bool,
    },
    /// A page of digests.
    Digests {
        /// The digests, in id order.
        digests: Vec<Digest>,
        /// Whether the node stopped before the end of the range.
        more: bool,
    },
    /// The node's cluster map.
    Map(Box<ClusterMap>),
    /// The command was applied; the map is at this epoch.
    Proposed {
        /// The new epoch.
        epoch: u64,
    },
    /// The answer to [`Request::Hello`].
    Hello {
        /// The node's id; none while it waits to be added without one.
        id: Option<NodeId>,
        /// The epoch of its map; 0 when it has none.
        epoch: u64,
        /// The metadata group's leader, as the node knows it.
        leader: Option<NodeId>,
        /// Whether it waits to be adopted: a new node, or one that came
        /// back with an empty data directory.
        waiting: bool,
        /// The id of the cluster its map belongs to; 0 without a map.
        cluster: u64,
    },
    /// The node took the id it was given.
    Adopted,
    /// A chunk of a partition's records.
    Chunk {
        /// An SST file of merge entries, empty when the range held no more.
        #[serde(with = "serde_bytes")]
        sst: Vec<u8>,
        /// crc32 of `sst`.
        crc: u32,
        /// Records in the file.
        records: u64,
        /// The last key in the file: where the next chunk starts after.
        #[serde(with = "serde_bytes")]
        last: Option<Vec<u8>>,
        /// Whether the range has no more records after this chunk.
        done: bool,
    },
    /// The partitions the node holds any key of.
    Holdings(Vec<PartitionId>),
    /// Per partition being copied here: the epoch that started the move,
    /// and what has arrived so far.
    Progress(Vec<(PartitionId, u64, Streamed)>),
    /// The node's counters and its storage engine's figures.
    Stats(Box<NodeStats>),
    /// A partition's digest.
    Digest(Box<PartitionDigest>),
    /// A page of a partition's records in some buckets.
    Bucket {
        /// Encoded key and value, in key order.
        entries: Vec<(ByteBuf, ByteBuf)>,
        /// Whether the partition holds no more of those buckets after these.
        done: bool,
    },
    /// The answer to a Raft call, serialized with [`crate::frame::to_bytes`].
    Raft(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A report's partial result over the partitions asked for, whole.
    QueryPart {
        /// The merged partial result of those partitions.
        part: Box<Partial>,
        /// Whether any of them holds any record of the collection,
        /// deleted ones included.
        exists: bool,
        /// Live records read.
        scanned: u64,
    },
    /// The request failed.
    Error(RpcError),
}

/// Why a node refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum RpcError {
    /// The request was routed with an older map than the node's.
    #[error("stale epoch: the node knows epoch {current}")]
    StaleEpoch {
        /// The node's epoch.
        current: u64,
    },
    /// Under the node's map, it holds no replica of the partition.
    #[error("node holds no replica of partition {partition}")]
    NotReplica {
        /// The partition asked for.
        partition: PartitionId,
    },
    /// The node has no cluster map yet.
    #[error("the node has no cluster map yet")]
    NoMap,
    /// The request was malformed, or cannot be served as asked.
    #[error("bad request: {0}")]
    BadRequest(BadRequest),
    /// The node's storage failed; the node logged the details.
    #[error("storage error: {0}")]
    Storage(StorageFault),
    /// Only the metadata group's leader applies map commands.
    #[error("this node does not lead the metadata group; the leader is at {leader:?}")]
    NotLeader {
        /// The leader's RPC address, if known.
        leader: Option<String>,
    },
    /// The map refused the command.
    #[error("the cluster map refused the command: {0}")]
    Refused(MapError),
    /// The node cannot serve the request now; it or another may later.
    #[error("unavailable: {0}")]
    Unavailable(Unavailable),
    /// The node is stopping.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// A version lies further ahead of the node's clock than it accepts:
    /// the clock of the process that stamped it is wrong.
    #[error("a version is {ahead_ms} ms ahead of this node's clock (at most {max_ms} ms accepted)")]
    ClockAhead {
        /// How far ahead.
        ahead_ms: u64,
        /// The most accepted.
        max_ms: u64,
    },
    /// The node keeps no more hints for that replica: it is over its
    /// bound, and anti-entropy will repair the replica instead.
    #[error("hints for node {node} are over their bound")]
    HintsFull {
        /// The replica.
        node: NodeId,
    },
    /// A report holds more groups and distinct values than allowed.
    #[error("the report holds more than {cap} groups and distinct values")]
    TooManyGroups {
        /// The cap.
        cap: u64,
    },
    /// A report's scan ran out of time.
    #[error("the report's scan ran past its deadline")]
    QueryDeadline,
    /// The node has not applied the epoch the request needs yet.
    #[error("the node's map is at epoch {known}, the request needs {needed}")]
    Behind {
        /// The node's epoch.
        known: u64,
        /// The epoch needed.
        needed: u64,
    },
}

/// What was wrong with a request a node refused as malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum BadRequest {
    /// The partition lies outside the ring.
    #[error("no partition {partition}")]
    NoPartition {
        /// The partition asked for.
        partition: PartitionId,
    },
    /// The request was meant for another node.
    #[error("this is node {this}, not node {asked}")]
    WrongNode {
        /// The node it was meant for.
        asked: NodeId,
        /// The node that got it.
        this: NodeId,
    },
    /// A record's value does not read.
    #[error("record {id:?}: {reason}")]
    Record {
        /// The record's id.
        id: String,
        /// Why it does not read.
        reason: String,
    },
    /// A Raft message does not decode.
    #[error("a Raft message does not decode: {reason}")]
    RaftMessage {
        /// The decoder's error.
        reason: String,
    },
    /// A write missed by a replica cannot be encoded as a hint.
    #[error("a hint that does not encode: {reason}")]
    Hint {
        /// The encoder's error.
        reason: String,
    },
    /// The answer cannot be encoded.
    #[error("the response cannot be sent: {reason}")]
    Response {
        /// The encoder's error.
        reason: String,
    },
    /// The receiver does not serve this kind of request.
    #[error("this request is not served here")]
    Unsupported,
}

/// Why a node cannot serve a request now.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum Unavailable {
    /// The node is still deciding how to start, or starting.
    #[error("the node is starting; ask again")]
    Starting,
    /// The metadata group failed the command (no quorum, a leader change).
    #[error("the metadata group failed the command: {reason}")]
    Metadata {
        /// Raft's error.
        reason: String,
    },
    /// A command went from leader to leader too many times.
    #[error("too many redirects to the metadata group's leader")]
    TooManyRedirects,
    /// A node could not be reached.
    #[error("node at {addr} unreachable: {reason}")]
    Unreachable {
        /// Its RPC address.
        addr: String,
        /// The transport's error.
        reason: String,
    },
    /// A node answered with something the request does not take.
    #[error("the node at {addr} gave an unexpected answer: {answer}")]
    UnexpectedAnswer {
        /// Its RPC address.
        addr: String,
        /// The answer, as debug text.
        answer: String,
    },
    /// No node was there to ask.
    #[error("no node to ask")]
    NoNode,
    /// A partition could not be reconciled with its replicas before a
    /// report read it.
    #[error("partition {partition} could not be reconciled: {reason}")]
    Reconcile {
        /// The partition.
        partition: PartitionId,
        /// Why.
        reason: String,
    },
}

/// What failed in a node's storage, by what a caller does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum StorageFault {
    /// RocksDB failed to read or write (I/O error, no space): another
    /// replica, or the same one later, may succeed.
    #[error("the storage engine failed")]
    Engine,
    /// Stored bytes do not decode: corruption to report; another replica
    /// may hold a good copy.
    #[error("stored data is corrupt")]
    Corrupt,
    /// The storage is shutting down: ask another replica.
    #[error("the storage is stopping")]
    Stopped,
}

/// What a caller does about an [`RpcError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Refresh the cluster map and route the request again.
    RouteAgain,
    /// Ask another replica, or this one later.
    TryElsewhere,
    /// Report corruption, and ask another replica.
    ReportCorruption,
    /// Give up: the request itself is wrong, or the map refused it.
    GiveUp,
}

impl RpcError {
    /// What a caller does about this error.
    pub fn recovery(&self) -> Recovery {
        match self {
            RpcError::StaleEpoch { .. } | RpcError::NotReplica { .. } | RpcError::NotLeader { .. } => {
                Recovery::RouteAgain
            }
            RpcError::NoMap | RpcError::Unavailable(_) | RpcError::ShuttingDown | RpcError::Behind { .. } => {
                Recovery::TryElsewhere
            }
            RpcError::Storage(StorageFault::Corrupt) => Recovery::ReportCorruption,
            RpcError::Storage(_) => Recovery::TryElsewhere,
            RpcError::BadRequest(_)
            | RpcError::Refused(_)
            | RpcError::ClockAhead { .. }
            | RpcError::HintsFull { .. }
            | RpcError::TooManyGroups { .. }
            | RpcError::QueryDeadline => Recovery::GiveUp,
        }
    }
}
