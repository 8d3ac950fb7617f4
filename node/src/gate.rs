//! The node's RPC handler while it starts: until the node knows its id it
//! answers only [`Request::Hello`], and [`Request::Adopt`] while it waits
//! to be adopted; then every request goes to its [`Service`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use ringup_proto::NodeId;
use ringup_proto::rpc::{BadRequest, Request, Response, RpcError, Unavailable};
use ringup_rpc::Handler;
use tokio::sync::{mpsc, oneshot};

use crate::service::Service;

/// The RPC handler: the node's [`Service`] once the node has an id; until
/// then only [`Request::Hello`] and [`Request::Adopt`] are served.
pub struct Gate {
    service: OnceLock<Arc<Service>>,
    /// Hands an adoption to the starting node.
    adopt: mpsc::Sender<Adoption>,
    /// The id the node was started with, if any: an adoption must give it.
    configured: Option<NodeId>,
    /// Whether the node waits to be adopted; until it knows, and while it
    /// starts with the identity its data directory holds, it does not.
    waiting: AtomicBool,
}

impl Gate {
    /// The gate of a node started with `configured` as its id, and where
    /// an adoption arrives.
    pub fn new(configured: Option<NodeId>) -> (Arc<Self>, mpsc::Receiver<Adoption>) {
        let (adopt, adoptions) = mpsc::channel(1);
        let gate = Self { service: OnceLock::new(), adopt, configured, waiting: AtomicBool::new(false) };
        (Arc::new(gate), adoptions)
    }

    /// From now on the node waits to be adopted.
    pub fn wait_for_adoption(&self) {
        self.waiting.store(true, Ordering::Release);
    }

    /// From now on every request goes to `service`.
    pub fn open(&self, service: Arc<Service>) {
        let _ = self.service.set(service);
    }
}

/// The metadata leader's adoption of a waiting node.
pub struct Adoption {
    /// The id the map gave the node.
    pub id: NodeId,
    /// The epoch the node's map must reach before it serves reads.
    pub reads_from: u64,
    /// Answered once the node serves.
    pub started: oneshot::Sender<()>,
}

impl Handler for Gate {
    async fn handle(&self, request: Request) -> Response {
        if let Some(service) = self.service.get() {
            return service.handle(request).await;
        }
        let waiting = self.waiting.load(Ordering::Acquire);
        match request {
            Request::Hello if waiting => {
                Response::Hello { id: self.configured, epoch: 0, leader: None, waiting, cluster: 0 }
            }
            // Still deciding how to start, or starting: alive, no map yet.
            Request::Hello => Response::Error(RpcError::Unavailable(Unavailable::Starting)),
            Request::Adopt { .. } if !waiting => Response::Error(RpcError::Unavailable(Unavailable::Starting)),
            Request::Adopt { id, .. } if let Some(this) = self.configured.filter(|&c| c != id) => {
                Response::Error(RpcError::BadRequest(BadRequest::WrongNode { asked: id, this }))
            }
            Request::Adopt { id, reads_from } => {
                let (started, ack) = oneshot::channel();
                if self.adopt.send(Adoption { id, reads_from, started }).await.is_err() || ack.await.is_err() {
                    return Response::Error(RpcError::Unavailable(Unavailable::Starting));
                }
                Response::Adopted
            }
            _ => Response::Error(RpcError::NoMap),
        }
    }
}
