//! Raft messages over the internal RPC.

use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use ringup_proto::NodeId;
use ringup_proto::frame;
use ringup_proto::rpc::{RaftCall, Request, Response};
use ringup_rpc::{CallError, Client, Pool};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::TypeConfig;

/// Makes a [`Peer`] for each node Raft talks to.
pub struct Network {
    pool: Arc<Pool>,
}

impl Network {
    /// A network using connections from `pool`.
    pub fn new(pool: Arc<Pool>) -> Self {
        Self { pool }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer { target, client: self.pool.get(&node.addr) }
    }
}

/// One Raft peer.
pub struct Peer {
    target: NodeId,
    client: Arc<Client>,
}

impl Peer {
    /// Sends one Raft call and decodes the peer's `Result`.
    async fn call<Req, Resp, E>(
        &self,
        kind: RaftCall,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = frame::to_bytes(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer = self.client.call(Request::Raft { kind, payload }, timeout).await;
        let bytes = match answer {
            Ok(Response::Raft(bytes)) => bytes,
            Ok(other) => {
                let e = std::io::Error::other(format!("unexpected answer to a raft call: {other:?}"));
                return Err(RPCError::Network(NetworkError::new(&e)));
            }
            Err(e @ CallError::Unreachable { .. }) => {
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Err(e) => return Err(RPCError::Network(NetworkError::new(&e))),
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            frame::from_bytes(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RaftCall::AppendEntries, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(RaftCall::InstallSnapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RaftCall::Vote, &rpc, option.hard_ttl()).await
    }
}
