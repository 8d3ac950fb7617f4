//! How a node starts, the I/O around [`ringup_proto::formation`]: a fresh
//! data directory forms a new cluster with the other initial nodes, or
//! waits to be adopted into the cluster that exists; the first leader of a
//! new cluster creates the map.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use openraft::BasicNode;
use ringup_proto::NodeId;
use ringup_proto::cluster::{ClusterMap, MapCommand};
use ringup_proto::formation::{self, Answer, CreateMap, Forming, Probed, Setup, Start};
use ringup_proto::rpc::{Request, Response, RpcError};
use ringup_rpc::{Clock, Pool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::identity;
use crate::raft::{MapResponse, Raft};
use crate::storage::Storage;

/// How long a fresh node waits for an initial node's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the first leader looks again while it creates the map.
const BOOTSTRAP_EVERY: Duration = Duration::from_millis(300);

/// How the node goes on after its first step.
pub enum Begin {
    /// It serves as this node: restarted, or forming a new cluster.
    Serve(NodeId),
    /// It waits to be adopted: added as a new node, or, when the map lists
    /// it already, refilled after its data directory was wiped.
    Wait,
}

/// The node's setup as the decisions take it.
fn setup(config: &Config) -> Setup {
    Setup { id: config.id, initial: config.initial_nodes.iter().map(|n| n.id).collect() }
}

/// Decides how the node starts ([`formation::start`]). On a fresh
/// directory it asks the other initial nodes, every [`PROBE_TIMEOUT`],
/// until [`formation::probed`] decides; a node that forms stores its id
/// before it goes on.
pub async fn begin(config: &Config, storage: &Storage, pool: &Pool, clock: &Clock) -> anyhow::Result<Begin> {
    let setup = setup(config);
    let id = match formation::start(&setup, identity::stored(storage)?) {
        Start::Restart(id) => return Ok(Begin::Serve(id)),
        Start::Wait => return Ok(Begin::Wait),
        Start::Mismatch { stored, given } => bail!("this data directory belongs to node {stored}, not node {given}"),
        Start::Probe(id) => id,
    };
    loop {
        match formation::probed(&setup, id, &probe(config, pool, id).await) {
            Probed::Form => {
                identity::store(storage, id)?;
                return Ok(Begin::Serve(id));
            }
            Probed::Wiped { epoch } => {
                tracing::warn!(node = id, epoch, "the cluster exists but this data directory is empty");
                return Ok(Begin::Wait);
            }
            Probed::AskAgain { answered, majority } => {
                tracing::info!(answered, majority, "waiting for a majority of the initial nodes to answer");
                clock.sleep(PROBE_TIMEOUT).await;
            }
        }
    }
}

/// The other initial nodes' answers to `Hello`.
async fn probe(config: &Config, pool: &Pool, me: NodeId) -> BTreeMap<NodeId, Answer> {
    let others = config.initial_nodes.iter().filter(|n| n.id != me);
    let asks = others.map(|n| async move {
        let answer = match pool.get(&n.addr).call(Request::Hello, PROBE_TIMEOUT).await {
            Ok(Response::Hello { epoch, .. }) => Answer::Map(epoch),
            // Another node deciding how to start: alive, with no map.
            Ok(Response::Error(RpcError::Unavailable(_))) => Answer::Starting,
            _ => Answer::Silent,
        };
        (n.id, answer)
    });
    futures::future::join_all(asks).await.into_iter().collect()
}

/// Refuses to start on a data directory of another cluster: asks the
/// initial nodes that answer which cluster their map belongs to.
pub async fn check_cluster(pool: &Pool, config: &Config, ours: u64) -> anyhow::Result<()> {
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

/// Initializes the metadata group if this node is the one that does
/// ([`formation::initializes`]).
pub async fn initialize(raft: &Raft, id: NodeId, config: &Config) -> anyhow::Result<()> {
    let Some(voters) = formation::initializes(&setup(config), id, raft.is_initialized().await?) else { return Ok(()) };
    let nodes = initial_nodes(config);
    let voters: BTreeMap<NodeId, BasicNode> = nodes.into_iter().filter(|(n, _)| voters.contains(n)).collect();
    tracing::info!(voters = ?voters.keys().collect::<Vec<_>>(), "initializing the metadata group");
    raft.initialize(voters).await.context("cannot initialize the metadata group")?;
    Ok(())
}

fn initial_nodes(config: &Config) -> BTreeMap<NodeId, BasicNode> {
    config.initial_nodes.iter().map(|n| (n.id, BasicNode { addr: n.addr.clone() })).collect()
}

/// The first leader's part in forming the cluster ([`formation::bootstrap`]):
/// adds the initial nodes beyond the voters as learners and creates the
/// map, until the formation is over.
pub async fn bootstrap_map(
    raft: Raft,
    id: NodeId,
    config: Config,
    pool: Arc<Pool>,
    clock: Clock,
    mut map: watch::Receiver<Arc<ClusterMap>>,
    stop: CancellationToken,
) {
    let nodes = initial_nodes(&config);
    let initial: BTreeSet<NodeId> = nodes.keys().copied().collect();
    let started = clock.now();
    loop {
        let now = Forming {
            leader: raft.current_leader().await == Some(id),
            membership: raft.metrics().borrow().membership_config.nodes().map(|(n, _)| *n).collect(),
            map_ready: map.borrow_and_update().is_ready(),
            waited: clock.now() - started,
        };
        let step = formation::bootstrap(&initial, &now);
        if step.done {
            return;
        }
        for node in &step.learners {
            if let Err(e) = raft.add_learner(*node, nodes[node].clone(), false).await {
                tracing::warn!(node, error = %e, "cannot add a learner yet");
            }
        }
        let create = match step.create_map {
            CreateMap::Now => true,
            CreateMap::IfAllServe => all_serve(&pool, &nodes, id).await,
            CreateMap::No => false,
        };
        if create {
            create_map(&raft, &config, &nodes).await;
        }
        tokio::select! {
            _ = map.changed() => {}
            _ = clock.sleep(BOOTSTRAP_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Proposes the first map, of the initial nodes.
async fn create_map(raft: &Raft, config: &Config, nodes: &BTreeMap<NodeId, BasicNode>) {
    let command = MapCommand::Bootstrap {
        partitions: config.partitions,
        replication_factor: config.replication_factor,
        members: nodes.iter().map(|(id, n)| (*id, n.addr.clone())).collect(),
        cluster_id: rand::random::<u64>().max(1),
    };
    match raft.client_write(command).await {
        Ok(r) => match r.data {
            MapResponse(Ok(epoch)) => tracing::info!(epoch, "cluster map created"),
            MapResponse(Err(e)) => tracing::info!(error = %e, "cluster map not created"),
        },
        Err(e) => tracing::warn!(error = %e, "cannot propose the cluster map yet"),
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
