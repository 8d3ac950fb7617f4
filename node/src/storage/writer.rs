//! The writer thread: every record and hint write, in group commits.

use std::sync::Weak;

use rocksdb::{WriteBatch, WriteOptions};
use tokio::sync::{mpsc, oneshot};

use super::{CF_DATA, CF_HINTS, FsyncPolicy, Generations, StorageError};

/// The most batches one group commit takes.
const MAX_GROUP: usize = 256;
/// The most bytes of record batches one group commit takes (a single
/// larger batch still goes alone).
const MAX_GROUP_BYTES: usize = 64 << 20;

/// What one job of the writer thread changes, in this order: tombstones
/// dropped, ranges deleted, records merged, hints kept and removed.
#[derive(Debug, Default)]
pub(super) struct Changes {
    /// Record keys to delete if their value is still the one given: the
    /// tombstones anti-entropy found droppable.
    pub(super) drops: Vec<(Vec<u8>, Vec<u8>)>,
    /// Ranges `[start, end)` of records to delete.
    pub(super) deletes: Vec<(Vec<u8>, Vec<u8>)>,
    /// Record values to merge.
    pub(super) records: Vec<(Vec<u8>, Vec<u8>)>,
    /// Hints to keep: key and value in the `hints` family.
    pub(super) hints: Vec<(Vec<u8>, Vec<u8>)>,
    /// Hint keys to remove.
    pub(super) hints_done: Vec<Vec<u8>>,
    /// Record values to replace if they are still the stored ones: key,
    /// stored value, the same record sealed under the newest data key.
    pub(super) reseals: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
}

/// One job waiting for the writer thread.
pub(super) struct WriteJob {
    pub(super) changes: Changes,
    pub(super) done: oneshot::Sender<Result<(), StorageError>>,
}

impl WriteJob {
    fn bytes(&self) -> usize {
        let c = &self.changes;
        let resealed: usize = c.reseals.iter().map(|(k, _, v)| k.len() + v.len()).sum();
        c.records.iter().chain(&c.hints).map(|(k, v)| k.len() + v.len()).sum::<usize>() + resealed
    }
}

/// The writer thread: takes every job waiting, commits them in one batch,
/// then answers them all.
///
/// It holds the database weakly, so dropping the last [`Storage`] closes
/// the database at once; the thread ends when the queue closes.
pub(super) fn write_loop(
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
