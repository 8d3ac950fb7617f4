//! The metadata Raft group: an openraft instance on every node whose state
//! machine is the [`ClusterMap`].
//!
//! - [`log_store`] keeps the log, vote and commit point in RocksDB, synced
//!   before openraft is told a write is done.
//! - [`state_machine`] applies [`MapCommand`]s to the map and persists the
//!   map, the last applied id and the membership in one batch, then
//!   publishes the new map on a `watch` channel for the RPC service.
//! - [`network`] carries Raft messages over the internal RPC.

// openraft's storage traits fix the error type; it is large, and ours to return.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod network;
pub mod state_machine;

use std::io::Cursor;

use std::collections::BTreeMap;

use openraft::error::{ClientWriteError, InstallSnapshotError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{BasicNode, ChangeMembers};
use ringup_proto::NodeId;
use ringup_proto::cluster::{MapCommand, MapError};
use ringup_proto::frame::{self, FrameError};
use ringup_proto::rpc::{RaftCall, RpcError, Unavailable};
use serde::{Deserialize, Serialize};

/// The answer to a [`MapCommand`]: the new epoch, or why the map refused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapResponse(pub Result<u64, MapError>);

openraft::declare_raft_types!(
    /// The metadata group's types.
    pub TypeConfig:
        D = MapCommand,
        R = MapResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of this node.
pub type Raft = openraft::Raft<TypeConfig>;

/// Runs a call of the Raft log or state machine into RocksDB on tokio's
/// blocking pool, so that it stalls none of the runtime's workers; on a
/// current-thread runtime under paused time, a blocking task also holds the
/// clock still until it ends.
async fn off_runtime<T: Send + 'static>(
    storage: &crate::storage::Storage,
    f: impl FnOnce(&crate::storage::Storage) -> T + Send + 'static,
) -> T {
    let storage = storage.clone();
    tokio::task::spawn_blocking(move || f(&storage)).await.expect("a raft storage call panicked")
}

/// The metadata group's timing: heartbeats every 200 ms, elections after
/// 1 to 2 s of silence.
pub fn config() -> anyhow::Result<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "ringup".into(),
        heartbeat_interval: 200,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        ..Default::default()
    };
    Ok(config.validate()?)
}

/// Answers a Raft call from a peer; the payload and answer are serialized
/// with [`frame::to_bytes`].
pub async fn handle_call(raft: &Raft, call: RaftCall, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    match call {
        RaftCall::AppendEntries => {
            let request: AppendEntriesRequest<TypeConfig> = frame::from_bytes(payload)?;
            let answer: Result<_, RaftError<NodeId>> = raft.append_entries(request).await;
            frame::to_bytes(&answer)
        }
        RaftCall::Vote => {
            let request: VoteRequest<NodeId> = frame::from_bytes(payload)?;
            let answer: Result<_, RaftError<NodeId>> = raft.vote(request).await;
            frame::to_bytes(&answer)
        }
        RaftCall::InstallSnapshot => {
            let request: InstallSnapshotRequest<TypeConfig> = frame::from_bytes(payload)?;
            let answer: Result<_, RaftError<NodeId, InstallSnapshotError>> = raft.install_snapshot(request).await;
            frame::to_bytes(&answer)
        }
    }
}

/// Applies a map command if this node leads the metadata group.
///
/// A new address also goes into the Raft membership first, so that the
/// leader replicates to the member where it now listens.
pub async fn propose(raft: &Raft, command: MapCommand) -> Result<u64, RpcError> {
    if let MapCommand::SetAddress { id, addr } = &command {
        let node = BTreeMap::from([(*id, BasicNode { addr: addr.clone() })]);
        let in_membership = raft.metrics().borrow().membership_config.membership().get_node(id).cloned();
        if in_membership.is_some_and(|n| n.addr != *addr) {
            raft.change_membership(ChangeMembers::SetNodes(node), true).await.map_err(write_error)?;
        }
    }
    let written = raft.client_write(command).await.map_err(write_error)?;
    written.data.0.map_err(RpcError::Refused)
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> RpcError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            RpcError::NotLeader { leader: f.leader_node.map(|n| n.addr) }
        }
        other => RpcError::Unavailable(Unavailable::Metadata { reason: other.to_string() }),
    }
}
