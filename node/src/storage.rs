//! The node's RocksDB instance: records, local metadata and the Raft log.
//!
//! Column families:
//!
//! | family     | key                                   | value                       |
//! |------------|---------------------------------------|-----------------------------|
//! | `data`     | [`RecordKey`] (partition, shop, …)    | encoded [`StoredRecord`]     |
//! | `hints`    | [`crate::hints`]: replica, sequence    | bincode of the missed write |
//! | `meta`     | [`MetaKey`]                           | bincode of the named value  |
//! | `raft_log` | log index, u64 BE                     | bincode of a Raft entry     |
//!
//! Record writes are merges: the `data` family's merge operator keeps the
//! newer of two values by [`ringup_proto::value::merge`], so applying a
//! write twice, or out of order, gives the same state. All record writes go
//! through one writer thread, which commits every batch waiting for it in a
//! single RocksDB `WriteBatch`: batches that arrive together share one fsync
//! (group commit).
//!
//! [`StoredRecord`]: ringup_proto::value::StoredRecord

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use ringup_proto::keys::{self, RecordKey, partition_range};
use ringup_proto::merkle::{PartitionDigest, bucket_of};
use ringup_proto::ring::PartitionId;
use ringup_proto::rpc::{Digest, Entry, StorageFault};
use ringup_proto::stats::EngineStats;
use ringup_proto::value::{self, Header};
use rocksdb::statistics::{StatsLevel, Ticker};
use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, IteratorMode, MergeOperands, Options,
    ReadOptions, WriteBatch, WriteOptions,
};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::crypt::{CryptError, DataKeys};

const CF_DATA: &str = "data";
const CF_HINTS: &str = "hints";
const CF_META: &str = "meta";
const CF_RAFT_LOG: &str = "raft_log";

/// How many record batches may wait for the writer thread.
const WRITE_QUEUE: usize = 4096;
/// The most batches one group commit takes.
const MAX_GROUP: usize = 256;
/// The most bytes of record batches one group commit takes (a single
/// larger batch still goes alone).
const MAX_GROUP_BYTES: usize = 64 << 20;
/// Bits per key of the SST bloom filters: about 1% false positives.
const BLOOM_BITS_PER_KEY: f64 = 10.0;
/// The share of a memtable's size given to its bloom filter.
const MEMTABLE_BLOOM_RATIO: f64 = 0.02;
/// The most bytes of values one scan returns, well under the RPC frame
/// limit.
pub const SCAN_BYTES: usize = 16 << 20;
/// How far a range scan reads ahead of the block it is in.
const SCAN_READAHEAD: usize = 2 << 20;

/// When the storage writer fsyncs the write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncPolicy {
    /// One fsync per group of batches that arrive together (the default).
    Group,
    /// One fsync per batch.
    Always,
    /// Never fsync: the WAL survives a process crash but not a power loss.
    Never,
}

/// A storage failure. Fatal to the request, not to the node.
#[derive(Debug, Error)]
pub enum StorageError {
    /// RocksDB failed.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A stored value does not decode.
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The writer thread has stopped.
    #[error("the storage writer has stopped")]
    Stopped,
    /// A scratch file could not be written or read.
    #[error("scratch file: {0}")]
    Io(#[from] std::io::Error),
    /// The directory holds data in a layout this build does not read.
    #[error(
        "the data directory holds data format {found} and this build reads format {expected} only; \
         start this node on an empty directory (it refills from its replicas) or run the build that wrote it"
    )]
    Format {
        /// The format found.
        found: u32,
        /// The format this build reads and writes.
        expected: u32,
    },
    /// The data keys do not fit the directory, or a value does not open.
    #[error("encryption at rest: {0}")]
    Keys(#[from] CryptError),
    /// The directory holds sealed values and the node was given no keys.
    #[error(
        "encryption at rest: this data directory holds values sealed under data keys {0:?}: give the key file \
         (--data-key-file)"
    )]
    KeysMissing(Vec<u32>),
}

impl StorageError {
    /// The error as a caller elsewhere sees it, by what it does about it.
    pub fn fault(&self) -> StorageFault {
        match self {
            StorageError::Rocks(e) if e.kind() == rocksdb::ErrorKind::Corruption => StorageFault::Corrupt,
            StorageError::Rocks(_) => StorageFault::Engine,
            StorageError::Corrupt { .. } => StorageFault::Corrupt,
            StorageError::Stopped => StorageFault::Stopped,
            StorageError::Io(_)
            | StorageError::Format { .. }
            | StorageError::Keys(_)
            | StorageError::KeysMissing(_) => StorageFault::Engine,
        }
    }
}

/// Keys of the `meta` family: one per kind of local metadata.
#[derive(Debug, Clone, Copy)]
pub enum MetaKey {
    /// This node's id, fixed when the data directory is first used.
    NodeId,
    /// The Raft vote.
    RaftVote,
    /// The last committed Raft log id.
    RaftCommitted,
    /// The last purged Raft log id.
    RaftLastPurged,
    /// The Raft state machine: map, last applied id, membership.
    RaftStateMachine,
    /// The current Raft snapshot.
    RaftSnapshot,
    /// The epoch the node's map must reach before it serves reads, set
    /// when the node was adopted after its data directory was wiped.
    ReadsFrom,
    /// The data layout's version ([`keys::DATA_FORMAT`]), u32 BE; a
    /// directory used before it was stored holds format 1.
    DataFormat,
    /// One sealed check per data key ever used here (bincode of key id →
    /// blob), opened at every start to prove the key file is right.
    DataKeyChecks,
}

impl MetaKey {
    fn as_bytes(self) -> &'static [u8] {
        match self {
            MetaKey::NodeId => b"node_id",
            MetaKey::RaftVote => b"raft_vote",
            MetaKey::RaftCommitted => b"raft_committed",
            MetaKey::RaftLastPurged => b"raft_last_purged",
            MetaKey::RaftStateMachine => b"raft_state_machine",
            MetaKey::RaftSnapshot => b"raft_snapshot",
            MetaKey::ReadsFrom => b"reads_from",
            MetaKey::DataFormat => b"data_format",
            MetaKey::DataKeyChecks => b"data_key_checks",
        }
    }
}

/// What one job of the writer thread changes, in this order: tombstones
/// dropped, ranges deleted, records merged, hints kept and removed.
#[derive(Debug, Default)]
struct Changes {
    /// Record keys to delete if their value is still the one given: the
    /// tombstones anti-entropy found droppable.
    drops: Vec<(Vec<u8>, Vec<u8>)>,
    /// Ranges `[start, end)` of records to delete.
    deletes: Vec<(Vec<u8>, Vec<u8>)>,
    /// Record values to merge.
    records: Vec<(Vec<u8>, Vec<u8>)>,
    /// Hints to keep: key and value in the `hints` family.
    hints: Vec<(Vec<u8>, Vec<u8>)>,
    /// Hint keys to remove.
    hints_done: Vec<Vec<u8>>,
    /// Record values to replace if they are still the stored ones: key,
    /// stored value, the same record sealed under the newest data key.
    reseals: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
}

/// One job waiting for the writer thread.
struct WriteJob {
    changes: Changes,
    done: oneshot::Sender<Result<(), StorageError>>,
}

impl WriteJob {
    fn bytes(&self) -> usize {
        let c = &self.changes;
        let resealed: usize = c.reseals.iter().map(|(k, _, v)| k.len() + v.len()).sum();
        c.records.iter().chain(&c.hints).map(|(k, v)| k.len() + v.len()).sum::<usize>() + resealed
    }
}

/// What a scan of a partition for anti-entropy found.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The partition's digest.
    pub digest: PartitionDigest,
    /// Tombstones that may be dropped: key and value.
    pub droppable: Vec<(Vec<u8>, Vec<u8>)>,
    /// Bytes read.
    pub bytes: u64,
}

/// One chunk of a partition's records, written as an SST file of merge
/// entries.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The file's bytes; empty when the range held nothing more.
    pub sst: Vec<u8>,
    /// Records in it.
    pub records: u64,
    /// Its last key.
    pub last: Option<Vec<u8>>,
    /// Whether nothing follows in the range.
    pub done: bool,
}

/// What [`Storage::stale_values`] found.
#[derive(Debug, Default)]
pub struct StaleValues {
    /// Key, stored value, and the value sealed under the newest key.
    pub values: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
    /// The last key read, to go on after.
    pub last: Option<Vec<u8>>,
    /// Bytes read.
    pub bytes: usize,
    /// Whether the whole family was read.
    pub done: bool,
}

/// About how many bytes of records one streamed chunk holds.
pub const CHUNK_BYTES: usize = 8 << 20;

/// Options of the records' family.
///
/// Every write is a merge (last writer wins, see [`lww_merge`]), and a key
/// has no base value that would end a point read early: a read looks for
/// operands in every memtable and every level that may hold the key. Bloom
/// filters (on the SST files, and on the memtables) let it skip those that
/// do not, which is nearly all of them.
fn data_options() -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
    table.set_whole_key_filtering(true);
    let mut opts = Options::default();
    opts.set_merge_operator_associative("ringup_lww", lww_merge);
    // The first two levels hold the newest data, rewritten soon by the next
    // compaction: compressing them would spend CPU on every flush for bytes
    // that do not stay. Lower levels hold most of the data, compressed.
    let mut per_level = [DBCompressionType::Lz4; 7];
    per_level[..2].fill(DBCompressionType::None);
    opts.set_compression_per_level(&per_level);
    opts.set_block_based_table_factory(&table);
    opts.set_memtable_whole_key_filtering(true);
    opts.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO);
    opts
}

/// The node's storage. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    db: Arc<rocksdb::DB>,
    /// The options the database was opened with: they hold its statistics.
    opts: Arc<Options>,
    writer: mpsc::Sender<WriteJob>,
    generations: Arc<Generations>,
    /// Seals values and hints on their way in and opens them on their way
    /// out; `None` stores them in clear.
    keys: Option<Arc<DataKeys>>,
    /// Values handed to [`Storage::reseal`] so far.
    resealed: Arc<AtomicU64>,
}

/// Slots of [`Generations`]: partitions share one when their ids are equal
/// modulo this, which costs only needless rebuilds of cached columns.
const GENERATION_SLOTS: usize = 4096;

/// A count of the changes to each partition's records: what cached
/// columns of a partition are checked against.
///
/// Each change raises its partitions' counts twice, once before it is
/// committed and once after, so an odd count means a change is under way.
/// A generation read while none is, and read again unchanged later, proves
/// that no change to the partition started in between: a scan made in
/// between saw exactly the records there were at the first read.
pub struct Generations {
    slots: Box<[AtomicU64]>,
    /// When each slot last moved, in milliseconds since `start`.
    moved: Box<[AtomicU64]>,
    /// Raised twice by each change of unknown partitions (an ingested file).
    all: AtomicU64,
    /// Such changes under way.
    all_running: AtomicU64,
    start: Instant,
}

impl Generations {
    fn new() -> Self {
        let zeros = || (0..GENERATION_SLOTS).map(|_| AtomicU64::new(0)).collect();
        Self {
            slots: zeros(),
            moved: zeros(),
            all: AtomicU64::new(0),
            all_running: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    fn slot(partition: PartitionId) -> usize {
        partition as usize % GENERATION_SLOTS
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Raises the slots of the partitions whose keys start with these
    /// bytes, each once however many keys it has: before a commit, and
    /// again after it.
    fn raise(&self, keys: &mut dyn Iterator<Item = &[u8]>) {
        let mut slots: Vec<usize> =
            keys.map(|key| key.first_chunk::<4>().map_or(0, |p| Self::slot(u32::from_be_bytes(*p)))).collect();
        slots.sort_unstable();
        slots.dedup();
        let now = self.now_ms();
        for slot in slots {
            self.slots[slot].fetch_add(1, Ordering::SeqCst);
            self.moved[slot].store(now, Ordering::SeqCst);
        }
    }

    /// Marks the start of a change of unknown partitions.
    fn begin_all(&self) {
        self.all_running.fetch_add(1, Ordering::SeqCst);
        self.all.fetch_add(1, Ordering::SeqCst);
    }

    /// Marks its end.
    fn end_all(&self) {
        self.all.fetch_add(1, Ordering::SeqCst);
        let now = self.now_ms();
        self.moved.iter().for_each(|m| m.store(now, Ordering::SeqCst));
        self.all_running.fetch_sub(1, Ordering::SeqCst);
    }

    /// The partition's generation, `None` while a change to it is under
    /// way; and how long it has been unchanged.
    pub fn of(&self, partition: PartitionId) -> (Option<u64>, Duration) {
        let slot = Self::slot(partition);
        let all = self.all.load(Ordering::SeqCst);
        let own = self.slots[slot].load(Ordering::SeqCst);
        let settled = own.is_multiple_of(2) && self.all_running.load(Ordering::SeqCst) == 0;
        let quiet = self.now_ms().saturating_sub(self.moved[slot].load(Ordering::SeqCst));
        (settled.then_some(own + all), Duration::from_millis(quiet))
    }
}

impl Storage {
    /// Opens (or creates) the database under `dir` and starts its writer.
    pub fn open(dir: &Path, fsync: FsyncPolicy) -> Result<Self, StorageError> {
        Self::open_with(dir, fsync, None)
    }

    /// Opens the database with encryption at rest under `keys` (in clear
    /// when `None`). Refuses a key file without every key the directory's
    /// data was sealed under, and a directory sealed before when `keys` is
    /// `None`.
    pub fn open_with(dir: &Path, fsync: FsyncPolicy, keys: Option<Arc<DataKeys>>) -> Result<Self, StorageError> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        db_opts.set_keep_log_file_num(4);
        // Tickers only (per-core counters): no timers or histograms on the
        // write and read paths.
        db_opts.enable_statistics();
        db_opts.set_statistics_level(StatsLevel::ExceptHistogramOrTimers);
        let families = [
            ColumnFamilyDescriptor::new(CF_DATA, data_options()),
            ColumnFamilyDescriptor::new(CF_HINTS, Options::default()),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
            ColumnFamilyDescriptor::new(CF_RAFT_LOG, Options::default()),
        ];
        let db = Arc::new(rocksdb::DB::open_cf_descriptors(&db_opts, dir, families)?);
        let (writer, jobs) = mpsc::channel(WRITE_QUEUE);
        let thread_db = Arc::downgrade(&db);
        let generations = Arc::new(Generations::new());
        let thread_generations = generations.clone();
        thread::Builder::new()
            .name("storage-writer".into())
            .spawn(move || write_loop(&thread_db, &thread_generations, jobs, fsync))
            .expect("cannot start the storage writer thread");
        let resealed = Arc::default();
        let storage = Self { db, opts: Arc::new(db_opts), writer, generations, keys, resealed };
        storage.check_format()?;
        storage.check_keys()?;
        Ok(storage)
    }

    /// Proves the key file holds the keys this directory's data was sealed
    /// under, and records a check for each new key.
    fn check_keys(&self) -> Result<(), StorageError> {
        let stored: std::collections::BTreeMap<u32, Vec<u8>> = match self.get_meta(MetaKey::DataKeyChecks)? {
            Some(bytes) => bincode::deserialize(&bytes)
                .map_err(|e| StorageError::Corrupt { what: "data key checks", reason: e.to_string() })?,
            None => Default::default(),
        };
        let Some(keys) = &self.keys else {
            if stored.is_empty() {
                return Ok(());
            }
            return Err(StorageError::KeysMissing(stored.keys().copied().collect()));
        };
        let checked = keys.verify_checks(stored.clone())?;
        if checked != stored {
            let bytes = bincode::serialize(&checked).expect("a map of blobs serializes");
            self.put_meta(&[(MetaKey::DataKeyChecks, Some(bytes))])?;
        }
        Ok(())
    }

    /// A value as stored: sealed when keys are held.
    fn seal(&self, value: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        match &self.keys {
            Some(keys) => keys.seal(value).map_err(crypt_error),
            None => Ok(value),
        }
    }

    /// A stored value in clear.
    fn open_value<'a>(&self, stored: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>, StorageError> {
        match &self.keys {
            Some(keys) => keys.open(stored).map_err(crypt_error),
            None => Ok(std::borrow::Cow::Borrowed(stored)),
        }
    }

    /// Refuses a directory of another data format; marks a new one.
    fn check_format(&self) -> Result<(), StorageError> {
        let found = match self.get_meta(MetaKey::DataFormat)? {
            Some(bytes) => u32::from_be_bytes(bytes.as_slice().try_into().map_err(|_| StorageError::Corrupt {
                what: "data format",
                reason: format!("{} bytes", bytes.len()),
            })?),
            None => {
                let used = self.get_meta(MetaKey::NodeId)?.is_some()
                    || self.db.iterator_cf(self.cf(CF_DATA), IteratorMode::Start).next().is_some();
                if used {
                    1
                } else {
                    self.put_meta(&[(MetaKey::DataFormat, Some(keys::DATA_FORMAT.to_be_bytes().to_vec()))])?;
                    keys::DATA_FORMAT
                }
            }
        };
        if found != keys::DATA_FORMAT {
            return Err(StorageError::Format { found, expected: keys::DATA_FORMAT });
        }
        Ok(())
    }

    /// The engine's size and work, from RocksDB's properties and tickers.
    pub fn engine_stats(&self) -> EngineStats {
        let families = [CF_DATA, CF_HINTS, CF_META, CF_RAFT_LOG];
        let property =
            |cf: &str, name: &str| self.db.property_int_value_cf(self.cf(cf), name).ok().flatten().unwrap_or_default();
        let total = |name: &str| families.iter().map(|cf| property(cf, name)).sum();
        let ticker = |t: Ticker| self.opts.get_ticker_count(t);
        EngineStats {
            sst_bytes: total("rocksdb.total-sst-files-size"),
            memtable_bytes: total("rocksdb.cur-size-all-mem-tables"),
            estimated_keys: property(CF_DATA, "rocksdb.estimate-num-keys"),
            keys_written: ticker(Ticker::NumberKeysWritten),
            keys_read: ticker(Ticker::NumberKeysRead),
            flush_bytes: ticker(Ticker::FlushWriteBytes),
            compaction_read_bytes: ticker(Ticker::CompactReadBytes),
            compaction_write_bytes: ticker(Ticker::CompactWriteBytes),
            // These three are the database's, whichever family is asked.
            running_flushes: property(CF_DATA, "rocksdb.num-running-flushes"),
            running_compactions: property(CF_DATA, "rocksdb.num-running-compactions"),
            pending_compaction_bytes: total("rocksdb.estimate-pending-compaction-bytes"),
            stall_micros: ticker(Ticker::StallMicros),
            write_stopped: property(CF_DATA, "rocksdb.is-write-stopped") != 0,
            delayed_write_rate: property(CF_DATA, "rocksdb.actual-delayed-write-rate"),
        }
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db.cf_handle(name).expect("every column family is created at open")
    }

    /// Merges record values into the `data` family, durably under the fsync
    /// policy, in one atomic batch.
    pub async fn merge_records(&self, records: Vec<(RecordKey, Vec<u8>)>) -> Result<(), StorageError> {
        let records =
            records.into_iter().map(|(k, v)| Ok((k.encode(), self.seal(v)?))).collect::<Result<_, StorageError>>()?;
        self.write_job(Changes { records, ..Changes::default() }).await
    }

    /// Merges values under encoded record keys, as anti-entropy pulls them
    /// (sealed already, when they come from a node that seals).
    pub async fn merge_encoded(&self, records: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StorageError> {
        let records = records.into_iter().map(|(k, v)| Ok((k, self.seal(v)?))).collect::<Result<_, StorageError>>()?;
        self.write_job(Changes { records, ..Changes::default() }).await
    }

    /// Deletes each record whose value is still the tombstone given. The
    /// writer thread, the only one merging records, compares and deletes
    /// in one step, so a write that arrived meanwhile is never lost.
    pub async fn drop_tombstones(&self, drops: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StorageError> {
        self.write_job(Changes { drops, ..Changes::default() }).await
    }

    /// Waits until every record write queued before it is committed.
    pub async fn barrier(&self) -> Result<(), StorageError> {
        self.write_job(Changes::default()).await
    }

    /// Deletes every record of `partition`, after the writes queued before
    /// it, durably.
    pub async fn delete_partition(&self, partition: PartitionId) -> Result<(), StorageError> {
        self.write_job(Changes { deletes: vec![partition_range(partition)], ..Changes::default() }).await
    }

    /// The next values, in key order after `after`, that are not sealed
    /// under the newest data key (older keys, or in clear): key, stored
    /// value and the value sealed anew; at most `max` of them, from at most
    /// `max_bytes` read. Also the last key read, and whether the whole
    /// family was read. Nothing when no keys are held.
    pub async fn stale_values(
        &self,
        after: Option<Vec<u8>>,
        max: usize,
        max_bytes: usize,
    ) -> Result<StaleValues, StorageError> {
        let Some(keys) = self.keys.clone() else { return Ok(StaleValues { done: true, ..StaleValues::default() }) };
        let this = self.clone();
        blocking(move || {
            let start = after.map_or_else(Vec::new, |mut key| {
                key.push(0);
                key
            });
            let mut found = StaleValues { done: true, ..StaleValues::default() };
            this.for_each_in(CF_DATA, (start, vec![0xFF; 64]), |key, value| {
                found.last = Some(key.to_vec());
                found.bytes += key.len() + value.len();
                let current = Header::parse(value).map(|h| h.key_id == Some(keys.current())).unwrap_or(true);
                if !current {
                    let opened = keys.open(value).map_err(crypt_error)?;
                    let sealed = keys.seal(opened.into_owned()).map_err(crypt_error)?;
                    found.values.push((key.to_vec(), value.to_vec(), sealed));
                }
                let more = found.values.len() < max && found.bytes < max_bytes;
                if !more {
                    found.done = false;
                }
                Ok(more)
            })?;
            Ok(found)
        })
        .await
    }

    /// Replaces each value that is still the stored one with the value
    /// sealed anew, in the writer thread, so that no write is lost.
    pub async fn reseal(&self, reseals: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>) -> Result<(), StorageError> {
        let n = reseals.len() as u64;
        self.write_job(Changes { reseals, ..Changes::default() }).await?;
        self.resealed.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Values handed to [`Storage::reseal`] since the node started.
    pub fn resealed(&self) -> u64 {
        self.resealed.load(Ordering::Relaxed)
    }

    /// How many hints are sealed under each data key (`None`: in clear).
    pub fn hint_keys(&self) -> Result<std::collections::BTreeMap<Option<u32>, u64>, StorageError> {
        let mut out = std::collections::BTreeMap::new();
        self.for_each_in(CF_HINTS, (Vec::new(), vec![0xFF; 17]), |_, value| {
            *out.entry(DataKeys::blob_key(value)).or_insert(0) += 1;
            Ok(true)
        })?;
        Ok(out)
    }

    /// Forgets the key checks of every key but `keep`: once no value or
    /// hint here is sealed under them, the key file may drop them.
    pub fn retire_key_checks(&self, keep: &[u32]) -> Result<Vec<u32>, StorageError> {
        let Some(bytes) = self.get_meta(MetaKey::DataKeyChecks)? else { return Ok(Vec::new()) };
        let mut checks: std::collections::BTreeMap<u32, Vec<u8>> = bincode::deserialize(&bytes)
            .map_err(|e| StorageError::Corrupt { what: "data key checks", reason: e.to_string() })?;
        let retired: Vec<u32> = checks.keys().copied().filter(|id| !keep.contains(id)).collect();
        if !retired.is_empty() {
            checks.retain(|id, _| keep.contains(id));
            let bytes = bincode::serialize(&checks).expect("a map of blobs serializes");
            self.put_meta(&[(MetaKey::DataKeyChecks, Some(bytes))])?;
        }
        Ok(retired)
    }

    /// The data keys, if values are sealed.
    pub fn data_keys(&self) -> Option<&Arc<DataKeys>> {
        self.keys.as_ref()
    }

    /// Keeps hints (key and value in the `hints` family), durably under the
    /// fsync policy.
    pub async fn put_hints(&self, hints: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StorageError> {
        let hints = match &self.keys {
            Some(keys) => hints.into_iter().map(|(k, v)| (k, keys.seal_blob(&v))).collect(),
            None => hints,
        };
        self.write_job(Changes { hints, ..Changes::default() }).await
    }

    /// Removes hints by key.
    pub async fn remove_hints(&self, hints_done: Vec<Vec<u8>>) -> Result<(), StorageError> {
        self.write_job(Changes { hints_done, ..Changes::default() }).await
    }

    /// The hints whose keys start with `prefix`, in key order after the key
    /// `after` (from the first when none), up to about `max_bytes`.
    /// Starting after the last hint read skips the deletions of those
    /// already replayed, which an iterator would otherwise step over again.
    pub async fn hints(
        &self,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        max_bytes: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        let this = self.clone();
        blocking(move || {
            let (mut out, mut bytes) = (Vec::new(), 0);
            let end = ringup_proto::keys::prefix_end(&prefix);
            let start = after.map_or(prefix, |mut key| {
                key.push(0);
                key
            });
            this.for_each_in(CF_HINTS, (start, end), |key, value| {
                bytes += key.len() + value.len();
                let opened = match &this.keys {
                    Some(keys) => keys.open_blob(value).map_err(crypt_error)?,
                    None => None,
                };
                out.push((key.to_vec(), opened.unwrap_or_else(|| value.to_vec())));
                Ok(bytes < max_bytes)
            })?;
            Ok(out)
        })
        .await
    }

    /// Every hint's key and size, to count them at start.
    pub fn hint_sizes(&self) -> Result<Vec<(Vec<u8>, usize)>, StorageError> {
        let mut out = Vec::new();
        self.for_each_in(CF_HINTS, (Vec::new(), vec![0xFF; 17]), |key, value| {
            out.push((key.to_vec(), value.len()));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Scans `partition`: its digest, and the tombstones `droppable` picks
    /// (key and value), with the bytes read. Values were checked when they
    /// entered the node, so only their headers are read; one without a
    /// readable header is logged and left out.
    pub async fn digest_partition(
        &self,
        partition: PartitionId,
        droppable: impl Fn(&Header) -> bool + Send + 'static,
    ) -> Result<Scanned, StorageError> {
        let this = self.clone();
        blocking(move || {
            let mut scanned = Scanned::default();
            this.for_each_in(CF_DATA, partition_range(partition), |key, value| {
                scanned.bytes += (key.len() + value.len()) as u64;
                match Header::parse(value) {
                    Ok(h) => {
                        scanned.digest.add(key, h.version, h.tombstone);
                        if h.tombstone && droppable(&h) {
                            scanned.droppable.push((key.to_vec(), value.to_vec()));
                        }
                    }
                    Err(e) => tracing::error!(partition, error = %e, "corrupt record value left out of a digest"),
                }
                Ok(true)
            })?;
            Ok(scanned)
        })
        .await
    }

    /// The records of `partition` in `buckets`, in key order after `after`,
    /// up to about `max_bytes`; and whether none are left after them.
    pub async fn bucket_entries(
        &self,
        partition: PartitionId,
        buckets: Vec<u16>,
        after: Option<Vec<u8>>,
        max_bytes: usize,
    ) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, bool), StorageError> {
        let this = self.clone();
        blocking(move || {
            let (start, end) = partition_range(partition);
            let lower = after.map_or(start, |mut key| {
                key.push(0);
                key
            });
            let (mut out, mut bytes, mut done) = (Vec::new(), 0, true);
            this.for_each_in(CF_DATA, (lower, end), |key, value| {
                if !buckets.contains(&(bucket_of(key) as u16)) {
                    return Ok(true);
                }
                if bytes >= max_bytes {
                    done = false;
                    return Ok(false);
                }
                bytes += key.len() + value.len();
                out.push((key.to_vec(), value.to_vec()));
                Ok(true)
            })?;
            Ok((out, done))
        })
        .await
    }

    async fn write_job(&self, changes: Changes) -> Result<(), StorageError> {
        let (done, wait) = oneshot::channel();
        self.writer.send(WriteJob { changes, done }).await.map_err(|_| StorageError::Stopped)?;
        wait.await.map_err(|_| StorageError::Stopped)?
    }

    /// The next chunk of `partition`'s records after the key `after`, of
    /// about `max_bytes`, as an SST file of merge entries built under
    /// `scratch`, from one consistent view of the database.
    pub async fn export_chunk(
        &self,
        partition: PartitionId,
        after: Option<Vec<u8>>,
        max_bytes: usize,
        scratch: &Path,
    ) -> Result<Chunk, StorageError> {
        let (this, path) = (self.clone(), scratch.join(format!("export-{partition}-{}.sst", unique())));
        blocking(move || {
            let (start, end) = partition_range(partition);
            // The smallest key after `after` is `after` followed by 0x00.
            let lower = after.map_or(start, |mut key| {
                key.push(0);
                key
            });
            let mut opts = ReadOptions::default();
            opts.set_iterate_lower_bound(lower);
            opts.set_iterate_upper_bound(end);
            let mut items = this.db.iterator_cf_opt(this.cf(CF_DATA), opts, IteratorMode::Start);
            let sst_opts = data_options();
            let mut writer = rocksdb::SstFileWriter::create(&sst_opts);
            let mut chunk = Chunk::default();
            let mut bytes = 0usize;
            for item in items.by_ref() {
                let (key, value) = item?;
                if chunk.records == 0 {
                    writer.open(&path)?;
                }
                writer.merge(&key, &value)?;
                chunk.records += 1;
                bytes += key.len() + value.len();
                chunk.last = Some(key.to_vec());
                if bytes >= max_bytes {
                    break;
                }
            }
            chunk.done = bytes < max_bytes || items.next().is_none();
            if chunk.records > 0 {
                writer.finish()?;
                chunk.sst = std::fs::read(&path)?;
                let _ = std::fs::remove_file(&path);
            }
            Ok(chunk)
        })
        .await
    }

    /// Loads an SST file of merge entries received from another node.
    /// Its entries merge with what is here by last-writer-wins, whatever
    /// arrived first.
    pub async fn ingest_chunk(&self, sst: Vec<u8>, scratch: &Path) -> Result<(), StorageError> {
        let (this, path) = (self.clone(), scratch.join(format!("ingest-{}.sst", unique())));
        blocking(move || {
            std::fs::write(&path, &sst)?;
            let mut opts = rocksdb::IngestExternalFileOptions::default();
            opts.set_move_files(true);
            this.generations.begin_all();
            let loaded = this.db.ingest_external_file_cf_opts(this.cf(CF_DATA), &opts, vec![&path]);
            this.generations.end_all();
            let _ = std::fs::remove_file(&path);
            Ok(loaded?)
        })
        .await
    }

    /// The partitions, of the first `partitions`, that hold any record.
    pub async fn holdings(&self, partitions: u32) -> Result<Vec<PartitionId>, StorageError> {
        let this = self.clone();
        blocking(move || {
            let mut held = Vec::new();
            for p in 0..partitions {
                let mut any = false;
                this.for_each_in(CF_DATA, partition_range(p), |_, _| {
                    any = true;
                    Ok(false)
                })?;
                if any {
                    held.push(p);
                }
            }
            Ok(held)
        })
        .await
    }

    /// The stored value of one record.
    ///
    /// A point read takes microseconds (memtable, block cache, or one page
    /// from the OS cache), less than the hop to a blocking thread and back
    /// costs, so it runs on the caller's thread; scans, which may take
    /// long, go to the blocking pool.
    pub async fn get_record(&self, key: RecordKey) -> Result<Option<Vec<u8>>, StorageError> {
        match self.db.get_cf(self.cf(CF_DATA), key.encode())? {
            Some(stored) => Ok(Some(self.open_value(&stored)?.into_owned())),
            None => Ok(None),
        }
    }

    /// Up to `limit` records of a range, in key order, tombstones included,
    /// and no more than [`SCAN_BYTES`] of values; and whether it stopped
    /// before the end of the range.
    pub async fn scan_records(
        &self,
        range: (Vec<u8>, Vec<u8>),
        limit: usize,
    ) -> Result<(Vec<Entry>, bool), StorageError> {
        let this = self.clone();
        blocking(move || {
            let (mut out, mut bytes, mut more) = (Vec::new(), 0, false);
            this.for_each_in(CF_DATA, range, |key, value| {
                if out.len() >= limit || bytes >= SCAN_BYTES {
                    more = true;
                    return Ok(false);
                }
                bytes += key.len() + value.len();
                out.push(Entry { id: record_id(key)?, value: this.open_value(value)?.into_owned() });
                Ok(true)
            })?;
            Ok((out, more))
        })
        .await
    }

    /// The id, version and tombstone flag of up to `limit` records of a
    /// range, and whether it stopped before the end. Values were checked
    /// when they entered the node, so only their headers are read; one
    /// without a readable header is logged and left out.
    pub async fn digest_records(
        &self,
        range: (Vec<u8>, Vec<u8>),
        limit: usize,
    ) -> Result<(Vec<Digest>, bool), StorageError> {
        let this = self.clone();
        blocking(move || {
            let (mut out, mut more) = (Vec::new(), false);
            this.for_each_in(CF_DATA, range, |key, value| {
                if out.len() >= limit {
                    more = true;
                    return Ok(false);
                }
                let id = record_id(key)?;
                match Header::parse(value) {
                    Ok(h) => out.push(Digest { id, version: h.version, tombstone: h.tombstone }),
                    Err(e) => tracing::error!(id, error = %e, "corrupt record value left out of a digest"),
                }
                Ok(true)
            })?;
            Ok((out, more))
        })
        .await
    }

    /// Counts of the changes to each partition's records.
    pub fn generations(&self) -> &Generations {
        &self.generations
    }

    /// Calls `f` on each key and value (in clear) of one collection's
    /// records within a partition (every shop's, deleted ones included), in
    /// key order, until it returns `false`. Blocking: for the blocking pool.
    pub fn scan_table(
        &self,
        partition: PartitionId,
        collection: &str,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError> {
        self.for_each_in(CF_DATA, keys::table_range(partition, collection), |key, value| {
            f(key, &self.open_value(value)?)
        })
    }

    /// Calls `f` on each key and value of `[start, end)` in a family until it
    /// returns `false`.
    fn for_each_in(
        &self,
        family: &str,
        (start, end): (Vec<u8>, Vec<u8>),
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(start);
        opts.set_iterate_upper_bound(end);
        // A range read once: its blocks would only push hot ones out of
        // the block cache, and large reads ahead cost fewer system calls.
        opts.fill_cache(false);
        opts.set_readahead_size(SCAN_READAHEAD);
        // A raw iterator lends each key and value in place: nothing is
        // copied per record.
        let mut it = self.db.raw_iterator_cf_opt(self.cf(family), opts);
        it.seek_to_first();
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            if !f(key, value)? {
                return Ok(());
            }
            it.next();
        }
        Ok(it.status()?)
    }

    /// Writes every memtable out to SST files, so that the next start
    /// replays no write-ahead log.
    pub fn flush(&self) -> Result<(), StorageError> {
        let families = [CF_DATA, CF_HINTS, CF_META, CF_RAFT_LOG].map(|name| self.cf(name));
        Ok(self.db.flush_cfs_opt(&families, &rocksdb::FlushOptions::default())?)
    }

    /// Stops RocksDB's flushes and compactions, waiting for those running.
    /// For a process about to exit while clones of this storage may still
    /// be held: its background threads must not outlive the statics they
    /// lock at exit.
    pub fn stop_background_work(&self) {
        self.db.cancel_all_background_work(true);
    }

    /// Reads a metadata value.
    pub fn get_meta(&self, key: MetaKey) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get_cf(self.cf(CF_META), key.as_bytes())?)
    }

    /// Writes metadata values and deletions in one synced batch.
    pub fn put_meta(&self, puts: &[(MetaKey, Option<Vec<u8>>)]) -> Result<(), StorageError> {
        self.write_synced(self.meta_batch(puts))
    }

    /// Writes metadata values and deletions in one batch through the WAL,
    /// without waiting for an fsync: for what can be rebuilt from synced
    /// data after a power loss (the Raft state machine, from the log).
    pub fn put_meta_unsynced(&self, puts: &[(MetaKey, Option<Vec<u8>>)]) -> Result<(), StorageError> {
        Ok(self.db.write(self.meta_batch(puts))?)
    }

    fn meta_batch(&self, puts: &[(MetaKey, Option<Vec<u8>>)]) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for (key, value) in puts {
            match value {
                Some(value) => batch.put_cf(self.cf(CF_META), key.as_bytes(), value),
                None => batch.delete_cf(self.cf(CF_META), key.as_bytes()),
            }
        }
        batch
    }

    /// Appends Raft log entries (index and bytes), synced before returning.
    pub fn append_log(&self, entries: impl IntoIterator<Item = (u64, Vec<u8>)>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for (index, bytes) in entries {
            batch.put_cf(self.cf(CF_RAFT_LOG), index.to_be_bytes(), bytes);
        }
        self.write_synced(batch)
    }

    /// Deletes the Raft log entries with index in `[from, to)`, synced.
    pub fn delete_log(&self, from: u64, to: u64) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_RAFT_LOG), from.to_be_bytes(), to.to_be_bytes());
        self.write_synced(batch)
    }

    /// The Raft log entries with index in `[from, to)`, in order.
    pub fn read_log(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let mut out = Vec::new();
        self.for_each_in(CF_RAFT_LOG, (from.to_be_bytes().to_vec(), to.to_be_bytes().to_vec()), |k, v| {
            out.push((log_index(k)?, v.to_vec()));
            Ok(true)
        })?;
        Ok(out)
    }

    /// The last Raft log entry, if any.
    pub fn last_log(&self) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        match self.db.iterator_cf(self.cf(CF_RAFT_LOG), IteratorMode::End).next() {
            Some(item) => {
                let (k, v) = item?;
                Ok(Some((log_index(&k)?, v.to_vec())))
            }
            None => Ok(None),
        }
    }

    fn write_synced(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        Ok(self.db.write_opt(batch, &opts)?)
    }
}

/// Runs blocking RocksDB work off the async executor.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f).await.expect("a storage task panicked")
}

/// The writer thread: takes every job waiting, commits them in one batch,
/// then answers them all.
///
/// It holds the database weakly, so dropping the last [`Storage`] closes
/// the database at once; the thread ends when the queue closes.
fn write_loop(
    db: &Weak<rocksdb::DB>,
    generations: &Generations,
    mut jobs: mpsc::Receiver<WriteJob>,
    fsync: FsyncPolicy,
) {
    let mut opts = WriteOptions::default();
    opts.set_sync(fsync != FsyncPolicy::Never);
    let max_group = if fsync == FsyncPolicy::Always { 1 } else { MAX_GROUP };
    while let Some(first) = jobs.blocking_recv() {
        let mut bytes = first.bytes();
        let mut group = vec![first];
        while group.len() < max_group && bytes < MAX_GROUP_BYTES {
            match jobs.try_recv() {
                Ok(job) => {
                    bytes += job.bytes();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        let raise = || {
            let mut keys = group.iter().flat_map(|job| {
                let c = &job.changes;
                let resealed = c.reseals.iter().map(|(k, _, _)| k.as_slice());
                c.drops.iter().chain(&c.deletes).chain(&c.records).map(|(k, _)| k.as_slice()).chain(resealed)
            });
            generations.raise(&mut keys);
        };
        raise();
        let result = db.upgrade().map(|db| commit(&db, &group, &opts));
        raise();
        for job in group {
            let answer = match &result {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(StorageError::Rocks(e.clone())),
                None => Err(StorageError::Stopped),
            };
            let _ = job.done.send(answer);
        }
    }
}

/// Commits every change of a group in one `WriteBatch`.
fn commit(db: &rocksdb::DB, group: &[WriteJob], opts: &WriteOptions) -> Result<(), rocksdb::Error> {
    let cf = db.cf_handle(CF_DATA).expect("created at open");
    let hints = db.cf_handle(CF_HINTS).expect("created at open");
    let mut batch = WriteBatch::default();
    // Before every merge of the group, so that a write in the group lands
    // on top of the resealed value instead of under it.
    for (key, stored, sealed) in group.iter().flat_map(|job| &job.changes.reseals) {
        if db.get_cf(cf, key)?.as_deref() == Some(stored.as_slice()) {
            batch.put_cf(cf, key, sealed);
        }
    }
    for job in group {
        let c = &job.changes;
        // Before this group's merges: a write to the same key in the group
        // lands after the delete and stays.
        for (key, tombstone) in &c.drops {
            if db.get_cf(cf, key)?.as_deref() == Some(tombstone.as_slice()) {
                batch.delete_cf(cf, key);
            }
        }
        for (start, end) in &c.deletes {
            batch.delete_range_cf(cf, start, end);
        }
        for (key, value) in &c.records {
            batch.merge_cf(cf, key, value);
        }
        for (key, value) in &c.hints {
            batch.put_cf(hints, key, value);
        }
        for key in &c.hints_done {
            batch.delete_cf(hints, key);
        }
    }
    db.write_opt(batch, opts)
}

/// The `data` family's merge operator: last writer wins.
fn lww_merge(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let newest = operands.iter().fold(existing, |acc, op| Some(acc.map_or(op, |cur| value::merge(cur, op))));
    newest.map(<[u8]>::to_vec)
}

fn crypt_error(e: CryptError) -> StorageError {
    match e {
        CryptError::Value(e) => StorageError::Corrupt { what: "record value", reason: e.to_string() },
        other => StorageError::Keys(other),
    }
}

/// A name part no other scratch file of this process has.
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

fn record_id(key: &[u8]) -> Result<String, StorageError> {
    RecordKey::decode(key)
        .map(|k| k.id)
        .map_err(|e| StorageError::Corrupt { what: "record key", reason: e.to_string() })
}

fn log_index(key: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] =
        key.try_into().map_err(|_| StorageError::Corrupt { what: "raft log key", reason: format!("{key:?}") })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringup_proto::keys::collection_range;
    use ringup_proto::value::{StoredRecord, Version};

    fn value(hlc: u64, n: i64) -> Vec<u8> {
        let fields = serde_json::json!({ "n": n });
        StoredRecord::from_json(Version { hlc, origin: 1 }, 0, fields.as_object().unwrap()).encode()
    }

    fn key(id: &str) -> RecordKey {
        RecordKey { partition: 5, shop: "s".into(), collection: "c".into(), id: id.into() }
    }

    #[tokio::test]
    async fn a_directory_of_another_data_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = Storage::open(dir.path(), FsyncPolicy::Group).unwrap();
            assert_eq!(storage.get_meta(MetaKey::DataFormat).unwrap(), Some(keys::DATA_FORMAT.to_be_bytes().to_vec()));
            storage.put_meta(&[(MetaKey::NodeId, Some(1u64.to_be_bytes().to_vec()))]).unwrap();
            storage.stop_background_work();
        }
        // Reopened, the format it wrote is read back.
        drop(Storage::open(dir.path(), FsyncPolicy::Group).unwrap());
        // A directory used before the format was stored holds format 1.
        {
            let storage = Storage::open(dir.path(), FsyncPolicy::Group).unwrap();
            storage.put_meta(&[(MetaKey::DataFormat, None)]).unwrap();
        }
        let e = Storage::open(dir.path(), FsyncPolicy::Group).err().expect("format 1 is refused");
        assert!(matches!(e, StorageError::Format { found: 1, expected: 3 }), "{e}");
        assert!(e.to_string().contains("data format 1"), "{e}");
    }

    fn data_keys(lines: &str) -> Option<Arc<DataKeys>> {
        Some(Arc::new(DataKeys::parse(lines).unwrap()))
    }

    /// Key 1, then keys 1 and 2: the reseal pass moves every value to key
    /// 2, never undoes a write that came between its read and its replace,
    /// and then lets key 1 go.
    #[tokio::test]
    async fn the_reseal_pass_moves_values_to_the_newest_key_without_undoing_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (format!("1 {}\n", "11".repeat(32)), format!("2 {}\n", "22".repeat(32)));
        {
            let storage = Storage::open_with(dir.path(), FsyncPolicy::Group, data_keys(&one)).unwrap();
            storage.merge_records(vec![(key("a"), value(1, 10)), (key("b"), value(1, 20))]).await.unwrap();
            let stored = storage.db.get_cf(storage.cf(CF_DATA), key("a").encode()).unwrap().unwrap();
            assert_eq!(Header::parse(&stored).unwrap().key_id, Some(1));
            assert!(storage.stale_values(None, 10, 1 << 20).await.unwrap().values.is_empty());
            storage.stop_background_work();
        }
        let storage = Storage::open_with(dir.path(), FsyncPolicy::Group, data_keys(&format!("{one}{two}"))).unwrap();
        let found = storage.stale_values(None, 10, 1 << 20).await.unwrap();
        assert!(found.done);
        assert_eq!(found.values.iter().map(|(k, _, _)| record_id(k).unwrap()).collect::<Vec<_>>(), ["a", "b"]);
        // A write to b after the pass read it: its replace must not undo it.
        storage.merge_records(vec![(key("b"), value(2, 21))]).await.unwrap();
        storage.reseal(found.values).await.unwrap();
        assert_eq!(storage.get_record(key("a")).await.unwrap(), Some(value(1, 10)));
        assert_eq!(storage.get_record(key("b")).await.unwrap(), Some(value(2, 21)), "the newer write stays");
        for id in ["a", "b"] {
            let stored = storage.db.get_cf(storage.cf(CF_DATA), key(id).encode()).unwrap().unwrap();
            assert_eq!(Header::parse(&stored).unwrap().key_id, Some(2), "{id} is sealed under key 2");
        }
        assert!(storage.stale_values(None, 10, 1 << 20).await.unwrap().values.is_empty());
        assert_eq!(storage.retire_key_checks(&[2]).unwrap(), vec![1]);
        storage.stop_background_work();
        drop(storage);
        // Key 1 may now leave the file.
        let storage = Storage::open_with(dir.path(), FsyncPolicy::Group, data_keys(&two)).unwrap();
        assert_eq!(storage.get_record(key("b")).await.unwrap(), Some(value(2, 21)));
    }

    #[tokio::test]
    async fn a_key_file_without_a_used_key_or_none_at_all_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let one = format!("1 {}\n", "11".repeat(32));
        drop(Storage::open_with(dir.path(), FsyncPolicy::Group, data_keys(&one)).unwrap());
        let other = format!("1 {}\n", "33".repeat(32));
        let e = Storage::open_with(dir.path(), FsyncPolicy::Group, data_keys(&other)).err().expect("another key 1");
        assert!(e.to_string().contains("data key 1 does not open"), "{e}");
        let e = Storage::open(dir.path(), FsyncPolicy::Group).err().expect("no key file");
        assert!(e.to_string().contains("--data-key-file"), "{e}");
    }

    #[tokio::test]
    async fn merges_keep_the_newest_version_whatever_the_order() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), FsyncPolicy::Group).unwrap();
        storage.merge_records(vec![(key("a"), value(2, 20))]).await.unwrap();
        storage.merge_records(vec![(key("a"), value(1, 10)), (key("b"), value(1, 1))]).await.unwrap();
        storage.merge_records(vec![(key("a"), value(2, 20))]).await.unwrap();
        assert_eq!(storage.get_record(key("a")).await.unwrap(), Some(value(2, 20)));

        let (page, more) = storage.scan_records(collection_range(5, "s", "c", None), 10).await.unwrap();
        let ids: Vec<_> = page.iter().map(|e| e.id.as_str()).collect();
        assert_eq!((ids, more), (vec!["a", "b"], false));
        let (after_a, more) = storage.scan_records(collection_range(5, "s", "c", Some("a")), 1).await.unwrap();
        assert_eq!((after_a.len(), more), (1, false), "b is the last record");
        let (first, more) = storage.scan_records(collection_range(5, "s", "c", None), 1).await.unwrap();
        assert_eq!((first.len(), more), (1, true));
        let (digests, more) = storage.digest_records(collection_range(5, "s", "c", None), 10).await.unwrap();
        assert_eq!((digests.len(), more), (2, false));
    }

    #[tokio::test]
    async fn a_streamed_partition_merges_with_newer_writes_and_can_be_dropped() {
        let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = Storage::open(&src_dir.path().join("db"), FsyncPolicy::Group).unwrap();
        let target = Storage::open(&dst_dir.path().join("db"), FsyncPolicy::Group).unwrap();
        let ids: Vec<String> = (0..500).map(|i| format!("r{i:04}")).collect();
        source.merge_records(ids.iter().map(|id| (key(id), value(5, 1))).collect()).await.unwrap();
        // A write that reached the target directly, newer than the source's.
        target.merge_records(vec![(key("r0007"), value(9, 2))]).await.unwrap();
        // And one older than the source's, which must lose.
        target.merge_records(vec![(key("r0008"), value(1, 0))]).await.unwrap();

        let (mut after, mut chunks, mut records) = (None, 0, 0);
        loop {
            let chunk = source.export_chunk(5, after.clone(), 2000, src_dir.path()).await.unwrap();
            records += chunk.records;
            if !chunk.sst.is_empty() {
                target.ingest_chunk(chunk.sst, dst_dir.path()).await.unwrap();
            }
            chunks += 1;
            after = chunk.last;
            if chunk.done {
                break;
            }
        }
        assert_eq!(records, 500);
        assert!(chunks > 5, "{chunks} chunks of about 2000 bytes");
        assert_eq!(target.get_record(key("r0007")).await.unwrap(), Some(value(9, 2)), "the newer write wins");
        assert_eq!(target.get_record(key("r0008")).await.unwrap(), Some(value(5, 1)), "the streamed one wins");
        assert_eq!(target.get_record(key("r0499")).await.unwrap(), Some(value(5, 1)));
        assert_eq!(target.holdings(8).await.unwrap(), vec![5]);
        assert!(source.export_chunk(5, after, 2000, src_dir.path()).await.unwrap().done);

        target.delete_partition(5).await.unwrap();
        assert_eq!(target.holdings(8).await.unwrap(), Vec::<u32>::new());
        assert_eq!(target.get_record(key("r0007")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_partition_generation_moves_after_each_change_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), FsyncPolicy::Group).unwrap();
        let of = |p| storage.generations().of(p).0.expect("no change under way");
        let before = (of(5), of(6));
        // Twice per change: before and after its commit.
        storage.merge_records(vec![(key("a"), value(1, 1)), (key("b"), value(1, 1))]).await.unwrap();
        assert_eq!((of(5), of(6)), (before.0 + 2, before.1), "only the written partition moves");
        storage.delete_partition(5).await.unwrap();
        assert_eq!(of(5), before.0 + 4);
        storage.barrier().await.unwrap();
        assert_eq!(of(5), before.0 + 4, "a barrier changes nothing");
        let generations = Generations::new();
        generations.raise(&mut [&5u32.to_be_bytes()[..]].into_iter());
        assert_eq!(generations.of(5).0, None, "under way");
        generations.raise(&mut [&5u32.to_be_bytes()[..]].into_iter());
        assert_eq!(generations.of(5).0, Some(2));
        generations.begin_all();
        assert_eq!(generations.of(6).0, None, "an ingest touches every partition");
        generations.end_all();
        assert_eq!((generations.of(5).0, generations.of(6).0), (Some(4), Some(2)));
        assert!(storage.generations().of(5).1 < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn data_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = Storage::open(dir.path(), FsyncPolicy::Group).unwrap();
            storage.merge_records(vec![(key("a"), value(3, 30))]).await.unwrap();
            storage.put_meta(&[(MetaKey::NodeId, Some(vec![7]))]).unwrap();
        }
        let storage = Storage::open(dir.path(), FsyncPolicy::Group).unwrap();
        assert_eq!(storage.get_record(key("a")).await.unwrap(), Some(value(3, 30)));
        assert_eq!(storage.get_meta(MetaKey::NodeId).unwrap(), Some(vec![7]));
    }
}
