//! Encryption at rest: sealing values, key checks and resealing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ringup_proto::value::Header;

use super::writer::Changes;
use super::{CF_DATA, MetaKey, Storage, StorageError, blocking, start_after};
use crate::crypt::{CryptError, DataKeys};

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

impl Storage {
    /// Proves the key file holds the keys this directory's data was sealed
    /// under, and records a check for each new key.
    pub(super) fn check_keys(&self) -> Result<(), StorageError> {
        let stored: BTreeMap<u32, Vec<u8>> = match self.get_meta(MetaKey::DataKeyChecks)? {
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
    pub(super) fn seal(&self, value: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        match &self.keys {
            Some(keys) => keys.seal(value).map_err(crypt_error),
            None => Ok(value),
        }
    }

    /// A stored value in clear.
    pub(super) fn open_value<'a>(&self, stored: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>, StorageError> {
        match &self.keys {
            Some(keys) => keys.open(stored).map_err(crypt_error),
            None => Ok(std::borrow::Cow::Borrowed(stored)),
        }
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
            let start = start_after(after, Vec::new());
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

    /// Forgets the key checks of every key but `keep`: once no value or
    /// hint here is sealed under them, the key file may drop them.
    pub fn retire_key_checks(&self, keep: &[u32]) -> Result<Vec<u32>, StorageError> {
        let Some(bytes) = self.get_meta(MetaKey::DataKeyChecks)? else { return Ok(Vec::new()) };
        let mut checks: BTreeMap<u32, Vec<u8>> = bincode::deserialize(&bytes)
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
}

pub(super) fn crypt_error(e: CryptError) -> StorageError {
    match e {
        CryptError::Value(e) => StorageError::Corrupt { what: "record value", reason: e.to_string() },
        other => StorageError::Keys(other),
    }
}
