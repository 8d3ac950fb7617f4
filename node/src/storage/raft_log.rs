//! The Raft log: the `raft_log` family, by index.

use rocksdb::{IteratorMode, WriteBatch};

use super::{CF_RAFT_LOG, Storage, StorageError};

impl Storage {
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
}

fn log_index(key: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] =
        key.try_into().map_err(|_| StorageError::Corrupt { what: "raft log key", reason: format!("{key:?}") })?;
    Ok(u64::from_be_bytes(bytes))
}
