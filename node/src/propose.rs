//! Proposing map commands from any node: here if this node leads the
//! metadata group, else at the leader, following redirects.

use std::sync::Arc;
use std::time::Duration;

use ringup_proto::NodeId;
use ringup_proto::backoff::Backoff;
use ringup_proto::cluster::{ClusterMap, MapCommand};
use ringup_proto::rpc::{Request, Response, RpcError, Unavailable};
use ringup_rpc::{Clock, Pool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::parts::Parts;
use crate::raft::{self, Raft};

/// How many leader redirects a proposal follows.
const MAX_REDIRECTS: usize = 3;
/// How long a forwarded proposal may take.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node waits for the map to arrive the usual way before it
/// asks its peers to carry its address to the leader.
const MAP_GRACE: Duration = Duration::from_secs(3);
/// The wait between two tries at a report or an announcement.
const RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));

/// Applies a map command here if this node leads, else at the leader it
/// knows of.
pub async fn via_leader(raft: &Raft, pool: &Pool, command: MapCommand) -> Result<u64, RpcError> {
    match raft::propose(raft, command.clone()).await {
        Err(RpcError::NotLeader { leader: Some(leader) }) => forward(pool, leader, command).await,
        other => other,
    }
}

/// Proposes a node's report of its work through the leader until it is
/// applied, or the map refuses it (the work has moved on meanwhile).
pub async fn report(node: &Parts, command: MapCommand) {
    for failures in 0u32.. {
        node.clock.sleep(RETRY.after(failures)).await;
        match via_leader(&node.raft, &node.pool, command.clone()).await {
            Ok(_) => return,
            Err(RpcError::Refused(e)) => {
                tracing::info!(error = %e, ?command, "report refused: the work has moved on");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "cannot report yet"),
        }
    }
}

/// Sends a map command to the node at `addr`, following up to
/// [`MAX_REDIRECTS`] redirects to the leader.
async fn forward(pool: &Pool, mut addr: String, command: MapCommand) -> Result<u64, RpcError> {
    for _ in 0..=MAX_REDIRECTS {
        let answer = match pool.get(&addr).call(Request::Propose { command: command.clone() }, PROPOSE_TIMEOUT).await {
            Ok(Response::Proposed { epoch }) => Ok(epoch),
            Ok(Response::Error(e)) => Err(e),
            Ok(other) => Err(RpcError::Unavailable(Unavailable::UnexpectedAnswer {
                addr: addr.clone(),
                answer: format!("{other:?}"),
            })),
            Err(e) => {
                Err(RpcError::Unavailable(Unavailable::Unreachable { addr: addr.clone(), reason: e.to_string() }))
            }
        };
        match answer {
            Err(RpcError::NotLeader { leader: Some(next) }) if next != addr => addr = next,
            other => return other,
        }
    }
    Err(RpcError::Unavailable(Unavailable::TooManyRedirects))
}

/// Where a node listens and whom it can ask: what [`announce_address`]
/// needs besides the metadata group.
pub struct Announce {
    /// The node's id.
    pub id: NodeId,
    /// The address it listens on now.
    pub addr: String,
    /// The initial nodes' addresses.
    pub peers: Vec<String>,
}

/// Makes sure the map names this node at the address it now listens on: a
/// node restarted elsewhere proposes its new address, through the leader.
///
/// A node moved before it ever applied the map cannot learn it from the
/// leader, which still replicates to the old address; so after a short
/// wait it asks its peers to pass the proposal on.
pub async fn announce_address(
    raft: Raft,
    pool: Arc<Pool>,
    clock: Clock,
    me: Announce,
    mut map: watch::Receiver<Arc<ClusterMap>>,
    stop: CancellationToken,
) {
    tokio::select! {
        _ = map.wait_for(|m| m.is_ready()) => {}
        _ = clock.sleep(MAP_GRACE) => {}
    }
    let Announce { id, addr, peers } = me;
    for failures in 0u32.. {
        tokio::select! {
            _ = clock.sleep(RETRY.after(failures)) => {}
            _ = stop.cancelled() => return,
        }
        let current = map.borrow().clone();
        if current.is_ready() && current.addr(id).is_none_or(|known| known == addr) {
            return;
        }
        let command = MapCommand::SetAddress { id, addr: addr.clone() };
        let mut answer = via_leader(&raft, &pool, command.clone()).await;
        let others = peers.iter().chain(current.members.values().map(|m| &m.addr)).filter(|p| **p != addr);
        for peer in others {
            if !matches!(answer, Err(RpcError::NotLeader { leader: None } | RpcError::Unavailable(_))) {
                break;
            }
            answer = forward(&pool, peer.clone(), command.clone()).await;
        }
        match answer {
            Ok(epoch) => tracing::info!(epoch, %addr, "announced this node's new address"),
            Err(e) => tracing::info!(error = %e, "cannot announce this node's new address yet"),
        }
    }
}
