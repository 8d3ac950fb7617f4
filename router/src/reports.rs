//! Runs a report across the cluster: each partition is scanned by one
//! replica (per [`Schedule`]), the nodes' partial results are merged as
//! whole batches come back, and the merged result is finished.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use ringup_proto::NodeId;
use ringup_proto::cluster::ClusterMap;
use ringup_proto::consistency::Consistency;
use ringup_proto::query::schedule::{NoReplica, Schedule};
use ringup_proto::query::{Accumulator, Plan, Scalar};
use ringup_proto::rpc::{Recovery, Request, Response, RpcError};
use ringup_rpc::CallError;
use thiserror::Error;

use crate::view::ClusterView;

/// Partitions per request to a node.
const BATCH: usize = 16;
/// Requests in flight per node.
const PER_NODE: usize = 2;
/// The longest one batch may take before its node counts as failed.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times the partitions' replicas may change under one report.
const MAX_MOVES: usize = 8;

/// The limits of a report.
#[derive(Debug, Clone, Copy)]
pub struct ReportLimits {
    /// How long a report may take.
    pub deadline: Duration,
    /// The most groups and distinct values held, per node and merged.
    pub max_groups: u64,
}

/// A finished report: column names and rows.
#[derive(Debug)]
pub struct Table {
    /// The column names.
    pub columns: Vec<String>,
    /// The rows.
    pub rows: Vec<Vec<Scalar>>,
    /// Live records the nodes read.
    pub scanned: u64,
}

/// Why a report has no answer.
#[derive(Debug, Error)]
pub enum ReportError {
    /// The router knows no map yet.
    #[error("the router has no cluster map yet")]
    NoMap,
    /// No record of the collection exists on any scanned replica.
    #[error("there is no table {0}: no shop has written to a collection of that name")]
    UnknownTable(String),
    /// Past the group cap.
    #[error("the report holds more than {0} groups and distinct values; narrow it with WHERE or fewer GROUP BY keys")]
    TooManyGroups(u64),
    /// Past the deadline.
    #[error("the report did not finish within {0:?}; narrow it with WHERE (a ts range scans less)")]
    Deadline(Duration),
    /// A partition could not be scanned.
    #[error("{0}")]
    Unavailable(String),
}

/// Runs `plan` at `level` over the cluster `view` shows.
pub async fn run(
    view: &ClusterView,
    plan: Plan,
    level: Consistency,
    limits: ReportLimits,
) -> Result<Table, ReportError> {
    match tokio::time::timeout(limits.deadline, run_within(view, plan, level, limits)).await {
        Ok(result) => result,
        Err(_) => Err(ReportError::Deadline(limits.deadline)),
    }
}

/// The replicas that may scan `partition`: those serving reads, the ones
/// not known to be down first.
fn candidates(view: &ClusterView, map: &ClusterMap, partition: u32) -> Vec<NodeId> {
    let mut nodes = map.readable(partition);
    nodes.sort_by_key(|n| view.is_down(*n));
    nodes
}

async fn run_within(
    view: &ClusterView,
    plan: Plan,
    level: Consistency,
    limits: ReportLimits,
) -> Result<Table, ReportError> {
    let mut map = view.map().ok_or(ReportError::NoMap)?;
    let partitions = map.ring.partitions();
    let mut schedule =
        Schedule::new((0..partitions).map(|p| (p, candidates(view, &map, p))), BATCH, PER_NODE).map_err(unavailable)?;
    let plan = Arc::new(plan);
    let mut merged = Accumulator::new(&plan, usize::try_from(limits.max_groups).unwrap_or(usize::MAX));
    let (mut exists, mut scanned, mut moves) = (false, 0, 0);
    let started = tokio::time::Instant::now();
    let mut calls = FuturesUnordered::new();
    loop {
        for batch in schedule.to_send() {
            let budget = limits.deadline.saturating_sub(started.elapsed());
            // A node that hangs (no answer, no reset) fails its batch after
            // this long, and its partitions go elsewhere.
            let wait = budget.min(BATCH_TIMEOUT);
            let request = Request::Query {
                epoch: map.epoch,
                partitions: batch.partitions.clone(),
                plan: Box::new((*plan).clone()),
                max_groups: limits.max_groups,
                budget_ms: budget.as_millis() as u64,
                reconcile: reconcile_with(level, &map, &batch.partitions),
            };
            let client = view.client(&map, batch.node);
            calls.push(async move {
                let answer = match client {
                    Some(client) => client.call(request, wait).await,
                    None => Err(CallError::Unreachable {
                        addr: format!("node {}", batch.node),
                        reason: "not in the map".into(),
                    }),
                };
                (batch, answer)
            });
        }
        if schedule.is_done() {
            break;
        }
        let Some((batch, answer)) = calls.next().await else {
            return Err(ReportError::Unavailable("the report's scans ended before every partition was read".into()));
        };
        match answer {
            Ok(Response::QueryPart { part, exists: e, scanned: n }) => {
                schedule.succeeded(batch.id);
                merged.merge(*part).map_err(|e| ReportError::TooManyGroups(e.cap as u64))?;
                exists |= e;
                scanned += n;
            }
            Ok(Response::Error(RpcError::TooManyGroups { cap })) => return Err(ReportError::TooManyGroups(cap)),
            // A call that ran into the report's own deadline is not the
            // node's fault; one that ran out its batch time is.
            Ok(Response::Error(RpcError::QueryDeadline)) => return Err(ReportError::Deadline(limits.deadline)),
            Err(CallError::Timeout(_)) if started.elapsed() >= limits.deadline => {
                return Err(ReportError::Deadline(limits.deadline));
            }
            Ok(Response::Error(e)) if e.recovery() == Recovery::RouteAgain && moves < MAX_MOVES => {
                moves += 1;
                if let (RpcError::StaleEpoch { current }, Some(client)) = (&e, view.client(&map, batch.node)) {
                    view.refresh_from(&client, *current, Duration::from_secs(2)).await;
                }
                map = view.map().ok_or(ReportError::NoMap)?;
                tracing::debug!(node = batch.node, error = %e, epoch = map.epoch, "report partitions moved");
                let current = map.clone();
                schedule.moved(batch.id, |p| candidates(view, &current, p)).map_err(unavailable)?;
            }
            other => {
                let why = match &other {
                    Ok(Response::Error(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                    Ok(_) => "an answer that is not a report part".to_string(),
                };
                tracing::warn!(node = batch.node, why, "a report scan failed; its partitions go to other replicas");
                schedule.failed(batch.id).map_err(unavailable)?;
            }
        }
    }
    if !exists {
        return Err(ReportError::UnknownTable(plan.collection.clone()));
    }
    let (columns, rows) = merged.finish();
    Ok(Table { columns, rows, scanned })
}

/// How many other replicas a scanning node first reconciles each
/// partition with: none at ONE; at QUORUM and ALL enough that the scanner
/// and they make up the level, so every write acknowledged at that level
/// is among them.
fn reconcile_with(level: Consistency, map: &ClusterMap, partitions: &[u32]) -> u32 {
    let replicas = partitions.iter().map(|p| map.read_set(*p).len()).max().unwrap_or(1);
    match level {
        Consistency::One => 0,
        level => level.required(replicas).saturating_sub(1) as u32,
    }
}

fn unavailable(e: NoReplica) -> ReportError {
    ReportError::Unavailable(e.to_string())
}
