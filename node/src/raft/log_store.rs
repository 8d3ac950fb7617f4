//! The Raft log, vote and commit point, kept in RocksDB.
//!
//! Every write is synced before it is reported done: appends, votes,
//! truncations and the purge marker (see [`Storage::append_log`]).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, ErrorSubject, ErrorVerb, LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use ringup_proto::NodeId;
use ringup_proto::frame;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{TypeConfig, off_runtime};
use crate::storage::{MetaKey, Storage};

/// The Raft log store. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct LogStore {
    storage: Storage,
}

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

impl LogStore {
    /// The log store over `storage`.
    pub fn new(storage: Storage) -> Self {
        Self { storage }
    }

    async fn read_meta<T: DeserializeOwned>(&self, key: MetaKey, subject: ErrorSubject<NodeId>) -> Result<Option<T>> {
        let bytes = off_runtime(&self.storage, move |s| s.get_meta(key))
            .await
            .map_err(|e| io_error(subject.clone(), ErrorVerb::Read, e))?;
        bytes.map(|b| frame::from_bytes(&b).map_err(|e| io_error(subject, ErrorVerb::Read, e))).transpose()
    }

    async fn write_meta<T: Serialize>(&self, key: MetaKey, value: &T, subject: ErrorSubject<NodeId>) -> Result<()> {
        let bytes = frame::to_bytes(value).map_err(|e| io_error(subject.clone(), ErrorVerb::Write, e))?;
        off_runtime(&self.storage, move |s| s.put_meta(&[(key, Some(bytes))]))
            .await
            .map_err(|e| io_error(subject, ErrorVerb::Write, e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let from = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        let rows = off_runtime(&self.storage, move |s| s.read_log(from, to))
            .await
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        rows.into_iter()
            .map(|(_, bytes)| frame::from_bytes(&bytes).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e)))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = self.read_meta(MetaKey::RaftLastPurged, ErrorSubject::Store).await?;
        let last = off_runtime(&self.storage, |s| s.last_log())
            .await
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let last_log_id = match last {
            Some((_, bytes)) => {
                let entry: Entry<TypeConfig> =
                    frame::from_bytes(&bytes).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Some(entry.log_id)
            }
            None => last_purged,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        self.write_meta(MetaKey::RaftVote, vote, ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        self.read_meta(MetaKey::RaftVote, ErrorSubject::Vote).await
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<()> {
        self.write_meta(MetaKey::RaftCommitted, &committed, ErrorSubject::Store).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>> {
        Ok(self.read_meta::<Option<LogId<NodeId>>>(MetaKey::RaftCommitted, ErrorSubject::Store).await?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let rows = entries
            .into_iter()
            .map(|entry| Ok((entry.log_id.index, frame::to_bytes(&entry)?)))
            .collect::<std::result::Result<Vec<_>, frame::FrameError>>()
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let written = off_runtime(&self.storage, move |s| s.append_log(rows)).await;
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(io_error(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        off_runtime(&self.storage, move |s| s.delete_log(log_id.index, u64::MAX))
            .await
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        // The marker goes first: entries at or below it are ignored even if
        // the deletion below is lost in a crash.
        self.write_meta(MetaKey::RaftLastPurged, &log_id, ErrorSubject::Store).await?;
        off_runtime(&self.storage, move |s| s.delete_log(0, log_id.index + 1))
            .await
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}
