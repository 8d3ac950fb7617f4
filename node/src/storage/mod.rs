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
//! Each concept has its own file, all behind the one RocksDB handle:
//! [`records`] (reads and merges of records), [`transfer`] (whole
//! partitions: digests, streamed chunks), [`hints`], [`meta`],
//! [`raft_log`], [`sealing`] (encryption at rest), [`generations`] (change
//! counts) and [`writer`] (the group-commit thread).
//!
//! [`StoredRecord`]: ringup_proto::value::StoredRecord

mod generations;
mod hints;
mod meta;
mod raft_log;
mod records;
mod sealing;
mod transfer;
mod writer;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::thread;

use ringup_proto::keys;
use ringup_proto::rpc::StorageFault;
use ringup_proto::stats::EngineStats;
use rocksdb::statistics::{StatsLevel, Ticker};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

pub use self::generations::Generations;
pub use self::meta::MetaKey;
pub use self::records::SCAN_BYTES;
use self::records::data_options;
pub use self::sealing::StaleValues;
pub use self::transfer::{CHUNK_BYTES, Chunk, Scanned};
use self::writer::{Changes, WriteJob, write_loop};
use crate::crypt::{CryptError, DataKeys};

const CF_DATA: &str = "data";
const CF_HINTS: &str = "hints";
const CF_META: &str = "meta";
const CF_RAFT_LOG: &str = "raft_log";

/// How many record batches may wait for the writer thread.
const WRITE_QUEUE: usize = 4096;

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

    async fn write_job(&self, changes: Changes) -> Result<(), StorageError> {
        let (done, wait) = oneshot::channel();
        self.writer.send(WriteJob { changes, done }).await.map_err(|_| StorageError::Stopped)?;
        wait.await.map_err(|_| StorageError::Stopped)?
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

    fn write_synced(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        Ok(self.db.write_opt(batch, &opts)?)
    }
}

/// Where a range read that goes on after the key `after` starts: the
/// smallest key after it is `after` followed by 0x00; `start` when none.
fn start_after(after: Option<Vec<u8>>, start: Vec<u8>) -> Vec<u8> {
    after.map_or(start, |mut key| {
        key.push(0);
        key
    })
}

/// Runs blocking RocksDB work off the async executor.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f).await.expect("a storage task panicked")
}
