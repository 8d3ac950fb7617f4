//! Records: the `data` family, its merge rule, and reads of it.

use ringup_proto::keys::{self, RecordKey, partition_range};
use ringup_proto::ring::PartitionId;
use ringup_proto::rpc::{Digest, Entry};
use ringup_proto::value::{self, Header};
use rocksdb::{BlockBasedOptions, DBCompressionType, MergeOperands, Options};

use super::writer::Changes;
use super::{CF_DATA, Storage, StorageError, blocking};

/// Bits per key of the SST bloom filters: about 1% false positives.
const BLOOM_BITS_PER_KEY: f64 = 10.0;
/// The share of a memtable's size given to its bloom filter.
const MEMTABLE_BLOOM_RATIO: f64 = 0.02;
/// The most bytes of values one scan returns, well under the RPC frame
/// limit.
pub const SCAN_BYTES: usize = 16 << 20;

/// Options of the records' family.
///
/// Every write is a merge (last writer wins, see [`lww_merge`]), and a key
/// has no base value that would end a point read early: a read looks for
/// operands in every memtable and every level that may hold the key. Bloom
/// filters (on the SST files, and on the memtables) let it skip those that
/// do not, which is nearly all of them.
pub(super) fn data_options() -> Options {
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

impl Storage {
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
        self.collect_range(range, limit, SCAN_BYTES, |this, key, value| {
            Ok(Some(Entry { id: record_id(key)?, value: this.open_value(value)?.into_owned() }))
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
        self.collect_range(range, limit, usize::MAX, |_, key, value| {
            let id = record_id(key)?;
            match Header::parse(value) {
                Ok(h) => Ok(Some(Digest { id, version: h.version, tombstone: h.tombstone })),
                Err(e) => {
                    tracing::error!(id, error = %e, "corrupt record value left out of a digest");
                    Ok(None)
                }
            }
        })
        .await
    }

    /// What `item` makes of the records of a range, in key order, leaving
    /// out those it gives `None` for: at most `limit` of them, from records
    /// of at most about `max_bytes`; and whether it stopped before the end.
    pub(super) async fn collect_range<T: Send + 'static>(
        &self,
        range: (Vec<u8>, Vec<u8>),
        limit: usize,
        max_bytes: usize,
        item: impl Fn(&Storage, &[u8], &[u8]) -> Result<Option<T>, StorageError> + Send + 'static,
    ) -> Result<(Vec<T>, bool), StorageError> {
        let this = self.clone();
        blocking(move || {
            let (mut out, mut bytes, mut more) = (Vec::new(), 0, false);
            this.for_each_in(CF_DATA, range, |key, value| {
                let Some(made) = item(&this, key, value)? else { return Ok(true) };
                if out.len() >= limit || bytes >= max_bytes {
                    more = true;
                    return Ok(false);
                }
                bytes += key.len() + value.len();
                out.push(made);
                Ok(true)
            })?;
            Ok((out, more))
        })
        .await
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
}

/// The `data` family's merge operator: last writer wins.
fn lww_merge(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let newest = operands.iter().fold(existing, |acc, op| Some(acc.map_or(op, |cur| value::merge(cur, op))));
    newest.map(<[u8]>::to_vec)
}

pub(super) fn record_id(key: &[u8]) -> Result<String, StorageError> {
    RecordKey::decode(key)
        .map(|k| k.id)
        .map_err(|e| StorageError::Corrupt { what: "record key", reason: e.to_string() })
}
