//! What the node's tasks share.

use std::path::PathBuf;
use std::sync::Arc;

use ringup_proto::NodeId;
use ringup_proto::cluster::ClusterMap;
use ringup_rpc::{Clock, Pool};
use tokio::sync::watch;

use crate::columns::ColumnCache;
use crate::progress::Progress;
use crate::raft::Raft;
use crate::storage::Storage;

/// The handles every task of a node holds; cheap to clone.
#[derive(Clone)]
pub struct Parts {
    /// The node's id.
    pub id: NodeId,
    /// Its storage.
    pub storage: Storage,
    /// Its replica of the metadata group.
    pub raft: Raft,
    /// Connections to the other nodes.
    pub pool: Arc<Pool>,
    /// The cluster map, as the node has applied it.
    pub map: watch::Receiver<Arc<ClusterMap>>,
    /// Where stream chunks are built and received.
    pub scratch: PathBuf,
    /// What the streams into this node have copied so far.
    pub progress: Arc<Progress>,
    /// Reports' column segments.
    pub columns: Arc<ColumnCache>,
    /// The node's clock: every loop sleeps on it and every age reads it.
    pub clock: Clock,
}
