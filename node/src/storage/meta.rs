//! Local metadata: the `meta` family.

use rocksdb::WriteBatch;

use super::{CF_META, Storage, StorageError};

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

impl Storage {
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
}
