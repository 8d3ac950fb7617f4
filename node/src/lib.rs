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
pub mod formation;
pub mod gate;
pub mod hints;
pub mod identity;
pub mod migrate;
pub mod pace;
pub mod parts;
pub mod progress;
pub mod propose;
pub mod raft;
pub mod refill;
pub mod repair;
pub mod report;
pub mod reseal;
pub mod rows;
pub mod service;
pub mod storage;
#[cfg(test)]
mod testing;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ringup_proto::cluster::ClusterMap;
use ringup_rpc::{Clock, Pool};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::columns::ColumnCache;
use crate::config::Config;
use crate::formation::Begin;
use crate::gate::Gate;
use crate::hints::Hints;
use crate::migrate::Mover;
use crate::parts::Parts;
use crate::progress::Progress;
use crate::propose::Announce;
use crate::raft::Raft;
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::StateMachine;
use crate::refill::Refiller;
use crate::repair::Repairer;
use crate::service::{Healing, Service};
use crate::storage::Storage;

/// Runs a node until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    run_with(config, Clock::system(), shutdown).await
}

/// Runs a node on `clock` until `shutdown` completes: every loop of the
/// node sleeps on it and every age it reckons reads it, so a test that
/// hands it a clock following paused time drives them all.
pub async fn run_with(config: Config, clock: Clock, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
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

    let (gate, mut adoptions) = Gate::new(config.id);
    let stop = CancellationToken::new();
    let serving =
        ringup_rpc::serve_tls(listener, gate.clone(), config.limits(), tls.clone(), stop.clone().cancelled_owned());
    let server = tokio::spawn(serving);
    tokio::pin!(shutdown);
    let pool = Arc::new(Pool::with_tls(tls.clone()));

    let begin = tokio::select! {
        begin = formation::begin(&config, &storage, &pool, &clock) => begin?,
        _ = &mut shutdown => return stop_serving(&stop, server).await,
    };
    let (id, adopted) = match begin {
        Begin::Serve(id) => (id, None),
        Begin::Wait => {
            gate.wait_for_adoption();
            tracing::info!(
                listen = %config.listen,
                id = ?config.id,
                "waiting to be adopted: a new node is added with POST /v1/cluster/nodes; a member that came back \
                 with an empty data directory is adopted again by the metadata leader, and refilled"
            );
            tokio::select! {
                Some(adoption) = adoptions.recv() => {
                    identity::store_adoption(&storage, adoption.id, adoption.reads_from)?;
                    tracing::info!(node = adoption.id, reads_from = adoption.reads_from, "adopted by the cluster");
                    (adoption.id, Some(adoption.started))
                }
                _ = &mut shutdown => return stop_serving(&stop, server).await,
            }
        }
    };
    drop(adoptions);
    let reads_from = identity::reads_from(&storage)?;

    let (map_tx, map_rx) = watch::channel(Arc::new(ClusterMap::default()));
    let state_machine = StateMachine::load(storage.clone(), map_tx)?;
    let cluster_id = map_rx.borrow().cluster_id;
    formation::check_cluster(&pool, &config, cluster_id).await?;
    let raft = Raft::new(
        id,
        Arc::new(raft::config()?),
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
        clock,
    };
    let hints = Arc::new(Hints::open(parts.clone(), config.hint_settings())?);
    let repair = Arc::new(Repairer::new(parts.clone(), config.repair_settings()));
    let healing = Healing { hints: hints.clone(), repair: repair.clone(), max_skew_ms: config.max_clock_skew_ms };
    gate.open(Arc::new(Service::new(parts.clone(), healing, reads_from, stop.clone())));
    let adopted = adopted.map(|ack| ack.send(())).is_some();
    tracing::info!(node = id, listen = %config.listen, data_dir = %config.data_dir.display(), "node started");

    // An adopted node joins a cluster that exists: it never forms one.
    if !config.initial_nodes.is_empty() && !adopted {
        formation::initialize(&raft, id, &config).await?;
        let formed = formation::bootstrap_map(
            raft.clone(),
            id,
            config.clone(),
            pool.clone(),
            clock,
            map_rx.clone(),
            stop.clone(),
        );
        tokio::spawn(formed);
    }

    tokio::spawn(reseal::run(storage.clone(), clock, config.reseal_mib_per_sec << 20, stop.clone()));
    tokio::spawn(Arc::new(Mover::new(parts.clone())).run(stop.clone()));
    tokio::spawn(Refiller::new(parts).run(stop.clone()));
    let hint_stop = stop.clone();
    tokio::spawn(async move { hints.run(hint_stop).await });
    let repair_stop = stop.clone();
    tokio::spawn(async move { repair.run(repair_stop).await });
    let leader =
        migrate::lead(raft.clone(), id, pool.clone(), clock, map_rx.clone(), config.move_limits(), stop.clone());
    tokio::spawn(leader);

    let me = Announce {
        id,
        addr: config.advertise_addr(),
        peers: config.initial_nodes.iter().map(|n| n.addr.clone()).collect(),
    };
    tokio::spawn(propose::announce_address(raft.clone(), pool, clock, me, map_rx.clone(), stop.clone()));

    shutdown.await;
    tracing::info!(node = id, "shutting down");
    stop.cancel();
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

/// Stops a node that never started its tasks: the RPC server only.
async fn stop_serving(stop: &CancellationToken, server: tokio::task::JoinHandle<()>) -> anyhow::Result<()> {
    stop.cancel();
    let _ = server.await;
    Ok(())
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
