//! The state machine of the metadata group: the cluster map.
//!
//! `apply` changes the map with [`ClusterMap::apply`], then persists the
//! map, the last applied log id and the membership in one synced batch, and
//! only then publishes the new map to the rest of the node.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use ringup_proto::NodeId;
use ringup_proto::cluster::ClusterMap;
use ringup_proto::frame;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{MapResponse, TypeConfig, off_runtime};
use crate::storage::{MetaKey, Storage};

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// What the state machine persists.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MachineState {
    /// The last log entry applied.
    pub last_applied: Option<LogId<NodeId>>,
    /// The last membership applied.
    pub membership: StoredMembership<NodeId, BasicNode>,
    /// The cluster map.
    pub map: ClusterMap,
}

/// A snapshot as stored: its meta and the serialized [`MachineState`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// The state machine. Clones share storage and the map channel, which is
/// how openraft's snapshot builder gets its copy.
#[derive(Clone)]
pub struct StateMachine {
    storage: Storage,
    state: MachineState,
    map: watch::Sender<Arc<ClusterMap>>,
}

fn sm_error(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::new(ErrorSubject::StateMachine, verb, AnyError::new(&e)).into()
}

impl StateMachine {
    /// Loads the persisted state (or starts empty) and publishes its map.
    pub fn load(storage: Storage, map: watch::Sender<Arc<ClusterMap>>) -> Result<Self> {
        let state = match storage.get_meta(MetaKey::RaftStateMachine).map_err(|e| sm_error(ErrorVerb::Read, e))? {
            Some(bytes) => frame::from_bytes(&bytes).map_err(|e| sm_error(ErrorVerb::Read, e))?,
            None => MachineState::default(),
        };
        map.send_replace(Arc::new(state.map.clone()));
        Ok(Self { storage, state, map })
    }

    /// Persists the state, with any other metadata given, in one batch;
    /// then publishes the map.
    ///
    /// Applied entries are written without an fsync: the log they come from
    /// is synced, and a state machine that lost its last writes to a power
    /// loss applies them again from the log on restart. A snapshot, which
    /// replaces log entries, is synced.
    async fn persist(&self, also: Option<(MetaKey, Vec<u8>)>) -> Result<()> {
        let state = frame::to_bytes(&self.state).map_err(|e| sm_error(ErrorVerb::Write, e))?;
        let mut puts = vec![(MetaKey::RaftStateMachine, Some(state))];
        let synced = also.is_some();
        puts.extend(also.map(|(key, bytes)| (key, Some(bytes))));
        let written =
            off_runtime(&self.storage, move |s| if synced { s.put_meta(&puts) } else { s.put_meta_unsynced(&puts) })
                .await;
        written.map_err(|e| sm_error(ErrorVerb::Write, e))?;
        self.map.send_replace(Arc::new(self.state.map.clone()));
        Ok(())
    }

    fn apply_one(&mut self, entry: Entry<TypeConfig>) -> MapResponse {
        self.state.last_applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => MapResponse(Ok(self.state.map.epoch)),
            EntryPayload::Normal(command) => {
                let result = self.state.map.apply(&command);
                if let Err(e) = &result {
                    tracing::info!(error = %e, ?command, "map command refused");
                }
                MapResponse(result)
            }
            EntryPayload::Membership(membership) => {
                self.state.membership = StoredMembership::new(Some(entry.log_id), membership);
                MapResponse(Ok(self.state.map.epoch))
            }
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let data = frame::to_bytes(&self.state).map_err(|e| sm_error(ErrorVerb::Read, e))?;
        let snapshot_id = match self.state.last_applied {
            Some(id) => format!("{}-{}", id.leader_id, id.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.state.last_applied,
            last_membership: self.state.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot { meta: meta.clone(), data: data.clone() };
        let bytes = frame::to_bytes(&stored).map_err(|e| sm_error(ErrorVerb::Write, e))?;
        // The state goes with the snapshot, synced: the log up to the
        // snapshot may be purged once it is built, so the state applied
        // from it must be durable by then.
        let puts = [(MetaKey::RaftSnapshot, Some(bytes)), (MetaKey::RaftStateMachine, Some(data.clone()))];
        off_runtime(&self.storage, move |s| s.put_meta(&puts)).await.map_err(|e| sm_error(ErrorVerb::Write, e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MapResponse>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let responses: Vec<MapResponse> = entries.into_iter().map(|e| self.apply_one(e)).collect();
        self.persist(None).await?;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let data = snapshot.into_inner();
        self.state = frame::from_bytes(&data).map_err(|e| sm_error(ErrorVerb::Read, e))?;
        let stored = StoredSnapshot { meta: meta.clone(), data };
        let bytes = frame::to_bytes(&stored).map_err(|e| sm_error(ErrorVerb::Write, e))?;
        // The snapshot and the state it holds are written together.
        self.persist(Some((MetaKey::RaftSnapshot, bytes))).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let Some(bytes) = off_runtime(&self.storage, |s| s.get_meta(MetaKey::RaftSnapshot))
            .await
            .map_err(|e| sm_error(ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        let stored: StoredSnapshot = frame::from_bytes(&bytes).map_err(|e| sm_error(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}
