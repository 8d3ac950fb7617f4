//! Whole partitions: anti-entropy scans, streamed chunks, holdings.

use std::path::Path;

use ringup_proto::keys::partition_range;
use ringup_proto::merkle::{PartitionDigest, bucket_of};
use ringup_proto::ring::PartitionId;
use ringup_proto::value::Header;
use rocksdb::{IteratorMode, ReadOptions};

use super::records::data_options;
use super::{CF_DATA, Storage, StorageError, blocking, start_after};

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

/// About how many bytes of records one streamed chunk holds.
pub const CHUNK_BYTES: usize = 8 << 20;

impl Storage {
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
        let (start, end) = partition_range(partition);
        let range = (start_after(after, start), end);
        let (out, more) = self
            .collect_range(range, usize::MAX, max_bytes, move |_, key, value| {
                Ok(buckets.contains(&(bucket_of(key) as u16)).then(|| (key.to_vec(), value.to_vec())))
            })
            .await?;
        Ok((out, !more))
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
            let lower = start_after(after, start);
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
}

/// A name part no other scratch file of this process has.
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}
