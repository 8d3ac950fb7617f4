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

pub mod columns;
pub mod config;
pub mod crypt;
pub mod hints;
pub mod migrate;
pub mod raft;
pub mod refill;
pub mod repair;
pub mod report;
pub mod reseal;
pub mod service;
pub mod storage;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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

use crate::columns::ColumnCache;
use crate::config::Config;
use crate::hints::Hints;
use crate::migrate::{Mover, Progress};
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::StateMachine;
use crate::raft::{MapResponse, Raft};
use crate::refill::Refiller;
use crate::repair::Repairer;
use crate::service::{Healing, Service};
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
    let keys = config.data_keys().map_err(anyhow::Error::msg)?;
    match &keys {
        Some(keys) => tracing::info!(keys = ?keys.ids(), sealing_with = keys.current(), "values are encrypted at rest"),
        None => tracing::warn!("values are stored in clear (--insecure-no-encryption)"),
    }
    let storage = Storage::open_with(&config.data_dir.join("db"), config.fsync, keys)
        .with_context(|| format!("cannot open the database in {}", config.data_dir.display()))?;
    let scratch = scratch_dir(&config.data_dir)?;
    let tls = config.tls.load().map_err(anyhow::Error::msg)?;
    if tls.is_none() {
        tracing::warn!(
            "the internal RPC is plain TCP (--insecure-no-tls): anyone who reaches this node can read and write its data"
        );
    }
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;

    let (adopt_tx, mut adopt_rx) = mpsc::channel(1);
    let gate = Arc::new(Gate {
        service: OnceLock::new(),
        adopt: adopt_tx,
        configured: config.id,
        waiting: AtomicBool::new(false),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let serving = ringup_rpc::serve_tls(listener, gate.clone(), config.limits(), tls.clone(), stopped(stop_rx.clone()));
    let server = tokio::spawn(serving);
    tokio::pin!(shutdown);
    let pool = Arc::new(Pool::with_tls(tls.clone()));

    let start = match stored_identity(&storage, config.id)? {
        Some(id) => Start::Stored(id),
        None => tokio::select! {
            start = fresh_start(&config, &pool) => start?,
            _ = &mut shutdown => Start::Stop,
        },
    };
    let (id, adopted) = match start {
        Start::Stored(id) => (id, None),
        Start::Form(id) => {
            store_identity(&storage, id)?;
            (id, None)
        }
        Start::Wait => {
            gate.waiting.store(true, Ordering::Release);
            tracing::info!(
                listen = %config.listen,
                id = ?config.id,
                "waiting to be adopted: a new node is added with POST /v1/cluster/nodes; a member that came back \
                 with an empty data directory is adopted again by the metadata leader, and refilled"
            );
            tokio::select! {
                Some(adoption) = adopt_rx.recv() => {
                    store_adoption(&storage, adoption.id, adoption.reads_from)?;
                    tracing::info!(node = adoption.id, reads_from = adoption.reads_from, "adopted by the cluster");
                    (adoption.id, Some(adoption.started))
                }
                _ = &mut shutdown => {
                    let _ = stop_tx.send(true);
                    let _ = server.await;
                    return Ok(());
                }
            }
        }
        Start::Stop => {
            let _ = stop_tx.send(true);
            let _ = server.await;
            return Ok(());
        }
    };
    drop(adopt_rx);
    let reads_from = stored_reads_from(&storage)?;

    let (map_tx, map_rx) = watch::channel(Arc::new(ClusterMap::default()));
    let state_machine = StateMachine::load(storage.clone(), map_tx)?;
    check_cluster(&pool, &config, map_rx.borrow().cluster_id).await?;
    let raft = Raft::new(
        id,
        Arc::new(raft_config()?),
        Network::new(pool.clone()),
        LogStore::new(storage.clone()),
        state_machine,
    )
    .await
    .context("cannot start the metadata raft group")?;

    let parts = Parts {
        id,
        storage: storage.clone(),
        raft: raft.clone(),
        pool: pool.clone(),
        map: map_rx.clone(),
        scratch,
        progress: Arc::new(Progress::default()),
        columns: Arc::new(ColumnCache::new(config.column_cache_mib.saturating_mul(1 << 20))),
    };
    let hints = Arc::new(Hints::open(parts.clone(), config.hint_settings())?);
    let repair = Arc::new(Repairer::new(parts.clone(), config.repair_settings()));
    let healing = Healing { hints: hints.clone(), repair: repair.clone(), max_skew_ms: config.max_clock_skew_ms };
    let service = Service::new(parts.clone(), healing, reads_from);
    let _ = gate.service.set(Arc::new(service));
    let adopted = adopted.map(|ack| ack.send(())).is_some();
    tracing::info!(node = id, listen = %config.listen, data_dir = %config.data_dir.display(), "node started");

    // An adopted node joins a cluster that exists: it never forms one.
    if !config.initial_nodes.is_empty() && !adopted {
        form_cluster(&raft, id, &config).await?;
        let formed = bootstrap_map(raft.clone(), id, config.clone(), pool.clone(), map_rx.clone(), stop_rx.clone());
        tokio::spawn(formed);
    }

    reseal::spawn(storage.clone(), config.reseal_mib_per_sec << 20, stop_rx.clone());
    tokio::spawn(Arc::new(Mover::new(parts.clone())).run(stop_rx.clone()));
    tokio::spawn(Refiller::new(parts).run(stop_rx.clone()));
    let hint_stop = stop_rx.clone();
    tokio::spawn(async move { hints.run(hint_stop).await });
    let repair_stop = stop_rx.clone();
    tokio::spawn(async move { repair.run(repair_stop).await });
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
    if let Err(e) = storage.flush() {
        tracing::warn!(error = %e, "the memtables were not flushed; the next start replays the write-ahead log");
    }
    storage.stop_background_work();
    tracing::info!(node = id, "stopped");
    Ok(())
}

/// What the node's tasks share; cheap to clone.
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
}

/// The RPC handler: the node's [`Service`] once the node has an id; until
/// then only [`Request::Hello`] and [`Request::Adopt`] are served.
struct Gate {
    service: OnceLock<Arc<Service>>,
    /// Hands an adoption to the starting node.
    adopt: mpsc::Sender<Adoption>,
    /// The id the node was started with, if any: an adoption must give it.
    configured: Option<NodeId>,
    /// Whether the node waits to be adopted; until it knows, and while it
    /// starts with the identity its data directory holds, it does not.
    waiting: AtomicBool,
}

/// The metadata leader's adoption of a waiting node.
struct Adoption {
    id: NodeId,
    /// The epoch the node's map must reach before it serves reads.
    reads_from: u64,
    /// Answered once the node serves.
    started: oneshot::Sender<()>,
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
            Request::Hello => Response::Error(RpcError::Unavailable("the node is starting".into())),
            Request::Adopt { .. } if !waiting => {
                Response::Error(RpcError::Unavailable("the node is starting; ask again".into()))
            }
            Request::Adopt { id, .. } if self.configured.is_some_and(|c| c != id) => Response::Error(
                RpcError::BadRequest(format!("this node was started as node {:?}, not node {id}", self.configured)),
            ),
            Request::Adopt { id, reads_from } => {
                let (started, ack) = oneshot::channel();
                if self.adopt.send(Adoption { id, reads_from, started }).await.is_err() || ack.await.is_err() {
                    return Response::Error(RpcError::Unavailable("the node is starting; ask again".into()));
                }
                Response::Adopted
            }
            _ => Response::Error(RpcError::NoMap),
        }
    }
}

/// How a node with a fresh data directory starts.
enum Start {
    /// Its data directory holds its id: it restarts.
    Stored(NodeId),
    /// It forms a fresh cluster with the other initial nodes.
    Form(NodeId),
    /// It waits to be adopted: added as a new node, or, when the map lists
    /// it already, refilled after its data directory was wiped.
    Wait,
    /// Shut down before it started.
    Stop,
}

/// How long a fresh node waits for an initial node's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the first leader of a fresh cluster waits for every initial
/// node to start before it creates the map without the missing ones.
const FORMATION_WAIT: Duration = Duration::from_secs(10);

/// Decides how a node on a fresh data directory starts. Without initial
/// nodes it waits to be adopted. With them it asks them: if any has a
/// cluster map, the cluster exists and this node, which the map may list
/// (its data directory was wiped), waits to be adopted again rather than
/// start the metadata group with no memory of its votes; if a majority of
/// the initial nodes (itself included) answer and none has a map, the
/// cluster is new and it forms it. Until then it asks again.
async fn fresh_start(config: &Config, pool: &Pool) -> anyhow::Result<Start> {
    let Some(id) = config.id else { return Ok(Start::Wait) };
    if config.initial_nodes.is_empty() {
        return Ok(Start::Wait);
    }
    let others: Vec<&str> = config.initial_nodes.iter().filter(|n| n.id != id).map(|n| n.addr.as_str()).collect();
    let majority = config.initial_nodes.len() / 2 + 1;
    loop {
        let answers = futures::future::join_all(others.iter().map(|addr| async move {
            match pool.get(addr).call(Request::Hello, PROBE_TIMEOUT).await {
                Ok(Response::Hello { epoch, .. }) => Some(epoch),
                // Another node deciding how to start: alive, with no map.
                Ok(Response::Error(RpcError::Unavailable(_))) => Some(0),
                _ => None,
            }
        }))
        .await;
        if let Some(epoch) = answers.iter().flatten().find(|e| **e > 0) {
            tracing::warn!(node = id, epoch, "the cluster exists but this data directory is empty");
            return Ok(Start::Wait);
        }
        let answered = 1 + answers.iter().flatten().count();
        if answered >= majority {
            return Ok(Start::Form(id));
        }
        tracing::info!(answered, majority, "waiting for a majority of the initial nodes to answer");
        tokio::time::sleep(PROBE_TIMEOUT).await;
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

/// The node's id as the data directory stores it; none in a fresh one. A
/// configured id that differs is an error: the directory belongs to
/// another node.
fn stored_identity(storage: &Storage, configured: Option<NodeId>) -> anyhow::Result<Option<NodeId>> {
    let stored = read_u64(storage, MetaKey::NodeId)?;
    match (stored, configured) {
        (Some(s), Some(c)) if s != c => {
            bail!("this data directory belongs to node {s}, not node {c}")
        }
        (stored, _) => Ok(stored),
    }
}

fn store_identity(storage: &Storage, id: NodeId) -> anyhow::Result<()> {
    storage.put_meta(&[(MetaKey::NodeId, Some(id.to_be_bytes().to_vec()))])?;
    Ok(())
}

/// Stores the id and the epoch before which no reads are served, in one
/// synced write, before the node serves anything.
fn store_adoption(storage: &Storage, id: NodeId, reads_from: u64) -> anyhow::Result<()> {
    storage.put_meta(&[
        (MetaKey::NodeId, Some(id.to_be_bytes().to_vec())),
        (MetaKey::ReadsFrom, Some(reads_from.to_be_bytes().to_vec())),
    ])?;
    Ok(())
}

/// The epoch the node's map must reach before it serves reads; 0 when no
/// adoption set one.
fn stored_reads_from(storage: &Storage) -> anyhow::Result<u64> {
    Ok(read_u64(storage, MetaKey::ReadsFrom)?.unwrap_or(0))
}

fn read_u64(storage: &Storage, key: MetaKey) -> anyhow::Result<Option<u64>> {
    storage
        .get_meta(key)?
        .map(|b| <[u8; 8]>::try_from(b.as_slice()).map(u64::from_be_bytes))
        .transpose()
        .map_err(|_| anyhow::anyhow!("the stored {key:?} is corrupt"))
}

/// Refuses to start on a data directory of another cluster: asks the
/// initial nodes that answer which cluster their map belongs to.
async fn check_cluster(pool: &Pool, config: &Config, ours: u64) -> anyhow::Result<()> {
    if ours == 0 {
        return Ok(());
    }
    let asks = config
        .initial_nodes
        .iter()
        .map(|n| async move { (n.addr.as_str(), pool.get(&n.addr).call(Request::Hello, PROBE_TIMEOUT).await) });
    for (addr, answer) in futures::future::join_all(asks).await {
        if let Ok(Response::Hello { cluster, .. }) = answer
            && cluster != 0
            && cluster != ours
        {
            bail!(
                "this data directory belongs to cluster {ours:016x}, but the node at {addr} belongs to cluster \
                 {cluster:016x}: start this node on its own cluster's data, or on an empty directory"
            );
        }
    }
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
    pool: Arc<Pool>,
    map: watch::Receiver<Arc<ClusterMap>>,
    stop: watch::Receiver<bool>,
) {
    let nodes = initial_nodes(&config);
    let started = std::time::Instant::now();
    while !*stop.borrow() {
        if raft.current_leader().await == Some(id) {
            add_learners(&raft, &nodes).await;
            // The map is created once every initial node serves, or after
            // a while without those that do not: an initial node that
            // starts after the map exists cannot tell itself from one
            // whose data directory was wiped, and is refilled.
            let ready =
                !map.borrow().is_ready() && (started.elapsed() >= FORMATION_WAIT || all_serve(&pool, &nodes, id).await);
            if ready {
                let members = nodes.iter().map(|(id, n)| (*id, n.addr.clone())).collect();
                let command = MapCommand::Bootstrap {
                    partitions: config.partitions,
                    replication_factor: config.replication_factor,
                    members,
                    cluster_id: rand::random::<u64>().max(1),
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

/// Whether every initial node but `me` answers `Hello` from its service
/// (one still starting answers `Unavailable`).
async fn all_serve(pool: &Pool, nodes: &BTreeMap<NodeId, BasicNode>, me: NodeId) -> bool {
    let others = nodes.iter().filter(|(n, _)| **n != me);
    let asks = others.map(|(_, node)| {
        let client = pool.get(&node.addr);
        async move { client.call(Request::Hello, PROBE_TIMEOUT).await }
    });
    futures::future::join_all(asks).await.iter().all(|a| matches!(a, Ok(Response::Hello { .. })))
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

/// The wall clock, in epoch milliseconds.
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Proposes a node's report of its work through the leader until it is
/// applied, or the map refuses it (the work has moved on meanwhile).
pub(crate) async fn report(node: &Parts, command: MapCommand) {
    for attempt in 0u64.. {
        match propose_via_leader(&node.raft, &node.pool, command.clone()).await {
            Ok(_) => return,
            Err(RpcError::Refused(e)) => {
                tracing::info!(error = %e, ?command, "report refused: the work has moved on");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot report yet");
                tokio::time::sleep(Duration::from_millis(200 * attempt.min(10))).await;
            }
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
