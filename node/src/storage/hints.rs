//! Hints: the `hints` family (see [`crate::hints`] for their keys).

use std::collections::BTreeMap;

use super::sealing::crypt_error;
use super::writer::Changes;
use super::{CF_HINTS, Storage, StorageError, blocking, start_after};
use crate::crypt::DataKeys;

impl Storage {
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
            let start = start_after(after, prefix);
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

    /// How many hints are sealed under each data key (`None`: in clear).
    pub fn hint_keys(&self) -> Result<BTreeMap<Option<u32>, u64>, StorageError> {
        let mut out = BTreeMap::new();
        self.for_each_in(CF_HINTS, (Vec::new(), vec![0xFF; 17]), |_, value| {
            *out.entry(DataKeys::blob_key(value)).or_insert(0) += 1;
            Ok(true)
        })?;
        Ok(out)
    }
}
