//! `ringup-node`: one storage node of a ringup cluster.
//!
//! A node owns one RocksDB instance ([`storage`]) and serves the internal
//! RPC ([`service`]). A write from a router arrives as a frame, is checked
//! against the node's cluster map (a request routed with an older epoch is
//! refused with the current one), and is merged into RocksDB by the storage
//! writer thread, which commits every batch waiting in one `WriteBatch` and
//! one fsync. Reads go to RocksDB on the blocking pool.
//!
//! Every node also holds a replica of the metadata [`raft`] group that keeps
//! the cluster map. A fresh cluster forms from the initial nodes named at
//! start: the lowest id initializes Raft, and whichever node leads then
//! proposes the map. A node restarted on the same data directory finds its
//! id, its data, its Raft log and its map where it left them.
//!
//! A node started with neither an id nor initial nodes waits to be added:
//! it answers only [`Request::Hello`] until the metadata leader gives it the
//! id the map assigned ([`Request::Adopt`]); then it joins the metadata
//! group as a learner, and [`migrate`] copies its partitions onto it.

pub mod config;
pub mod migrate;
pub mod raft;
pub mod service;
pub mod storage;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use openraft::BasicNode;
use ringup_proto::NodeId;
use ringup_proto::cluster::{ClusterMap, MapCommand};
use ringup_proto::rpc::{Request, Response, RpcError};
use ringup_rpc::{Handler, Pool};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::migrate::{Mover, Progress};
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::StateMachine;
use crate::raft::{MapResponse, Raft};
use crate::service::Service;
use crate::storage::{MetaKey, Storage};

/// How many leader redirects a proposal follows.
const MAX_REDIRECTS: usize = 3;
/// How long a node waits for the map to arrive the usual way before it
/// asks its peers to carry its address to the leader.
const MAP_GRACE: Duration = Duration::from_secs(3);
/// How long a forwarded proposal may take.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many voters the metadata group has; other nodes are learners.
const VOTERS: usize = 3;

/// Runs a node until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    let storage = Storage::open(&config.data_dir.join("db"), config.fsync)
        .with_context(|| format!("cannot open the database in {}", config.data_dir.display()))?;
    let scratch = scratch_dir(&config.data_dir)?;
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;

    let (adopt_tx, mut adopt_rx) = mpsc::channel(1);
    let gate = Arc::new(Gate { service: OnceLock::new(), adopt: adopt_tx });
    let (stop_tx, stop_rx) = watch::channel(false);
    let server =
        tokio::spawn(ringup_rpc::serve_with(listener, gate.clone(), config.limits(), stopped(stop_rx.clone())));
    tokio::pin!(shutdown);

    let (id, adopted) = match stored_identity(&storage, config.id)? {
        Some(id) => (id, None),
        None if config.initial_nodes.is_empty() => {
            tracing::info!(
                listen = %config.listen,
                "waiting to be added to a cluster (POST /v1/cluster/nodes with this node's address)"
            );
            tokio::select! {
                Some((id, ack)) = adopt_rx.recv() => {
                    store_identity(&storage, id)?;
                    tracing::info!(node = id, "added to a cluster");
                    (id, Some(ack))
                }
                _ = &mut shutdown => {
                    let _ = stop_tx.send(true);
                    let _ = server.await;
                    return Ok(());
                }
            }
        }
        None => bail!("a new data directory needs --id when --initial-nodes is given"),
    };
    drop(adopt_rx);

    let pool = Arc::new(Pool::new());
    let (map_tx, map_rx) = watch::channel(Arc::new(ClusterMap::default()));
    let state_machine = StateMachine::load(storage.clone(), map_tx)?;
    let raft = Raft::new(
        id,
        Arc::new(raft_config()?),
        Network::new(pool.clone()),
        LogStore::new(storage.clone()),
        state_machine,
    )
    .await
    .context("cannot start the metadata raft group")?;

    let progress = Arc::new(Progress::default());
    let service = Service::new(id, storage.clone(), raft.clone(), map_rx.clone(), scratch.clone(), progress.clone());
    let _ = gate.service.set(Arc::new(service));
    if let Some(ack) = adopted {
        let _ = ack.send(());
    }
    tracing::info!(node = id, listen = %config.listen, data_dir = %config.data_dir.display(), "node started");

    if !config.initial_nodes.is_empty() {
        form_cluster(&raft, id, &config).await?;
        tokio::spawn(bootstrap_map(raft.clone(), id, config.clone(), map_rx.clone(), stop_rx.clone()));
    }

    let mover = Mover::new(id, storage.clone(), raft.clone(), pool.clone(), map_rx.clone(), scratch, progress);
    tokio::spawn(Arc::new(mover).run(stop_rx.clone()));
    let leader = migrate::lead(raft.clone(), id, pool.clone(), map_rx.clone(), config.move_limits(), stop_rx.clone());
    tokio::spawn(leader);

    let peers = config.initial_nodes.iter().map(|n| n.addr.clone()).collect();
    let announce =
        announce_address(raft.clone(), pool, id, config.advertise_addr(), peers, map_rx.clone(), stop_rx.clone());
    tokio::spawn(announce);

    shutdown.await;
    tracing::info!(node = id, "shutting down");
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft did not shut down cleanly");
    }
    storage.stop_background_work();
    tracing::info!(node = id, "stopped");
    Ok(())
}

/// The RPC handler: the node's [`Service`] once the node has an id; until
/// then only [`Request::Hello`] and [`Request::Adopt`] are served.
struct Gate {
    service: OnceLock<Arc<Service>>,
    /// Hands an adoption to the starting node; answered once it serves.
    adopt: mpsc::Sender<(NodeId, oneshot::Sender<()>)>,
}

impl Handler for Gate {
    async fn handle(&self, request: Request) -> Response {
        if let Some(service) = self.service.get() {
            return service.handle(request).await;
        }
        match request {
            Request::Hello => Response::Hello { id: None, epoch: 0, leader: None },
            Request::Adopt { id } => {
                let (ack, started) = oneshot::channel();
                if self.adopt.send((id, ack)).await.is_err() || started.await.is_err() {
                    return Response::Error(RpcError::Unavailable("the node is starting; ask again".into()));
                }
                Response::Adopted
            }
            _ => Response::Error(RpcError::NoMap),
        }
    }
}

/// A fresh scratch directory for stream chunks under the data directory.
fn scratch_dir(data_dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let scratch = data_dir.join("scratch");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).with_context(|| format!("cannot clear {}", scratch.display()))?;
    }
    std::fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    Ok(scratch)
}

/// Resolves once the stop flag is raised.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The node's id: the one stored in the data directory, or the configured
/// one, stored now; none if neither. A mismatch is an error: the directory
/// belongs to another node.
fn stored_identity(storage: &Storage, configured: Option<NodeId>) -> anyhow::Result<Option<NodeId>> {
    let stored = storage
        .get_meta(MetaKey::NodeId)?
        .map(|b| <[u8; 8]>::try_from(b.as_slice()).map(u64::from_be_bytes))
        .transpose()
        .map_err(|_| anyhow::anyhow!("the stored node id is corrupt"))?;
    match (stored, configured) {
        (Some(s), Some(c)) if s != c => {
            bail!("this data directory belongs to node {s}, not node {c}")
        }
        (Some(s), _) => Ok(Some(s)),
        (None, Some(c)) => {
            store_identity(storage, c)?;
            Ok(Some(c))
        }
        (None, None) => Ok(None),
    }
}

fn store_identity(storage: &Storage, id: NodeId) -> anyhow::Result<()> {
    storage.put_meta(&[(MetaKey::NodeId, Some(id.to_be_bytes().to_vec()))])?;
    Ok(())
}

fn raft_config() -> anyhow::Result<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "ringup".into(),
        heartbeat_interval: 200,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        ..Default::default()
    };
    Ok(config.validate()?)
}

/// On a fresh cluster, the initial node with the lowest id initializes Raft
/// with the first [`VOTERS`] initial nodes as voters.
async fn form_cluster(raft: &Raft, id: NodeId, config: &Config) -> anyhow::Result<()> {
    let lowest = config.initial_nodes.iter().map(|n| n.id).min();
    if lowest != Some(id) || raft.is_initialized().await? {
        return Ok(());
    }
    let voters: BTreeMap<NodeId, BasicNode> = initial_nodes(config).into_iter().take(VOTERS).collect();
    tracing::info!(voters = ?voters.keys().collect::<Vec<_>>(), "initializing the metadata group");
    raft.initialize(voters).await.context("cannot initialize the metadata group")?;
    Ok(())
}

fn initial_nodes(config: &Config) -> BTreeMap<NodeId, BasicNode> {
    config.initial_nodes.iter().map(|n| (n.id, BasicNode { addr: n.addr.clone() })).collect()
}

/// While this node leads and the map is empty, proposes the initial map;
/// adds initial nodes beyond the voters as learners.
async fn bootstrap_map(
    raft: Raft,
    id: NodeId,
    config: Config,
    map: watch::Receiver<Arc<ClusterMap>>,
    stop: watch::Receiver<bool>,
) {
    let nodes = initial_nodes(&config);
    while !*stop.borrow() {
        if raft.current_leader().await == Some(id) {
            add_learners(&raft, &nodes).await;
            if !map.borrow().is_ready() {
                let members = nodes.iter().map(|(id, n)| (*id, n.addr.clone())).collect();
                let command = MapCommand::Bootstrap {
                    partitions: config.partitions,
                    replication_factor: config.replication_factor,
                    members,
                };
                match raft.client_write(command).await {
                    Ok(r) => match r.data {
                        MapResponse(Ok(epoch)) => tracing::info!(epoch, "cluster map created"),
                        MapResponse(Err(e)) => {
                            tracing::info!(error = %e, "cluster map not created")
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "cannot propose the cluster map yet"),
                }
            }
        }
        let in_membership: BTreeSet<NodeId> =
            raft.metrics().borrow().membership_config.nodes().map(|(id, _)| *id).collect();
        if map.borrow().is_ready() && nodes.keys().all(|n| in_membership.contains(n)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn add_learners(raft: &Raft, nodes: &BTreeMap<NodeId, BasicNode>) {
    let known: BTreeSet<NodeId> = raft.metrics().borrow().membership_config.nodes().map(|(id, _)| *id).collect();
    for (node, addr) in nodes.iter().filter(|(n, _)| !known.contains(n)) {
        if let Err(e) = raft.add_learner(*node, addr.clone(), false).await {
            tracing::warn!(node, error = %e, "cannot add a learner yet");
        }
    }
}

/// Applies a map command here if this node leads, else at the leader it
/// knows of.
pub(crate) async fn propose_via_leader(raft: &Raft, pool: &Pool, command: MapCommand) -> Result<u64, RpcError> {
    match raft::propose(raft, command.clone()).await {
        Err(RpcError::NotLeader { leader: Some(leader) }) => forward(pool, leader, command).await,
        other => other,
    }
}

/// Sends a map command to the node at `addr`, following up to
/// [`MAX_REDIRECTS`] redirects to the leader.
async fn forward(pool: &Pool, mut addr: String, command: MapCommand) -> Result<u64, RpcError> {
    for _ in 0..=MAX_REDIRECTS {
        let answer = match pool.get(&addr).call(Request::Propose { command: command.clone() }, PROPOSE_TIMEOUT).await {
            Ok(Response::Proposed { epoch }) => Ok(epoch),
            Ok(Response::Error(e)) => Err(e),
            Ok(other) => Err(RpcError::Unavailable(format!("unexpected answer {other:?}"))),
            Err(e) => Err(RpcError::Unavailable(e.to_string())),
        };
        match answer {
            Err(RpcError::NotLeader { leader: Some(next) }) if next != addr => addr = next,
            other => return other,
        }
    }
    Err(RpcError::Unavailable("too many redirects to the leader".into()))
}

/// Makes sure the map names this node at the address it now listens on: a
/// node restarted elsewhere proposes its new address, through the leader.
///
/// A node moved before it ever applied the map cannot learn it from the
/// leader, which still replicates to the old address; so after a short
/// wait it asks its peers to pass the proposal on.
async fn announce_address(
    raft: Raft,
    pool: Arc<Pool>,
    id: NodeId,
    addr: String,
    peers: Vec<String>,
    mut map: watch::Receiver<Arc<ClusterMap>>,
    stop: watch::Receiver<bool>,
) {
    let _ = tokio::time::timeout(MAP_GRACE, map.wait_for(|m| m.is_ready())).await;
    while !*stop.borrow() {
        let current = map.borrow().clone();
        if current.is_ready() && current.addr(id).is_none_or(|known| known == addr) {
            return;
        }
        let command = MapCommand::SetAddress { id, addr: addr.clone() };
        let mut answer = propose_via_leader(&raft, &pool, command.clone()).await;
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
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
