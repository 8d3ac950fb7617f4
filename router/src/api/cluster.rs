//! The admins' routes: `GET /v1/cluster` shows the map, its members and the
//! partition moves in flight; the others change the membership through the
//! metadata leader.
//!
//! | route                                  | command                       |
//! |----------------------------------------|-------------------------------|
//! | `POST /v1/cluster/nodes`               | [`MapCommand::AddNode`]       |
//! | `DELETE /v1/cluster/nodes/{id}`        | [`MapCommand::Decommission`]  |
//! | `POST /v1/cluster/nodes/{id}/remove`   | [`MapCommand::RemoveNode`]    |
//! | `POST /v1/cluster/migrations/abort`    | [`MapCommand::AbortChange`]   |
//!
//! Each answers `202` once the command is committed: the moves it plans
//! then run in the background, and `GET /v1/cluster` shows their progress.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use ringup_proto::NodeId;
use ringup_proto::cluster::{ClusterMap, MapCommand, MapError};
use ringup_proto::migration::Streamed;
use ringup_proto::ring::PartitionId;
use ringup_proto::rpc::{Request, Response, RpcError};
use ringup_proto::stats::{HealingStats, NodeStats};
use serde::Deserialize;
use serde_json::{Value, json};

use super::State;
use super::error::ApiError;

/// How long a proposal may take at the leader.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the router waits to hear of the epoch a proposal produced.
const EPOCH_WAIT: Duration = Duration::from_secs(5);
/// How long a node to be added has to answer.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `GET /v1/cluster` waits for a streaming node's progress.
const PROGRESS_TIMEOUT: Duration = Duration::from_millis(300);

/// The epoch, ring shape, members with their load and liveness, and the
/// moves in flight with a summary of the change.
pub async fn show(state: State) -> Result<Json<Value>, ApiError> {
    let map = state.view.map().ok_or_else(ApiError::no_map)?;
    let now_ms = state.clock.wall_ms();
    let load = map.placement.as_ref().map(|p| p.load()).unwrap_or_default();
    let liveness = state.view.liveness();
    let stats: BTreeMap<NodeId, NodeStats> =
        super::ops::node_stats(&state, PROGRESS_TIMEOUT).await.into_iter().filter_map(|(n, s)| Some((n, s?))).collect();
    let nodes: Vec<Value> = map
        .members
        .values()
        .map(|m| {
            let seen = liveness.get(&m.id);
            json!({
                "id": m.id,
                "addr": m.addr,
                "state": m.state.as_str(),
                "partition_replicas": load.get(&m.id).copied().unwrap_or(0),
                // A removed member is no longer pinged.
                "live": seen.is_some_and(|l| l.live) && !map.is_gone(m.id),
                "last_seen_ms_ago": seen.and_then(|l| l.last_seen).map(|t| t.elapsed().as_millis() as u64),
                "healing": stats.get(&m.id).map(|s| healing(&s.healing, now_ms)),
                "refill": map.refills.get(&m.id).map(|r| json!({
                    "since_epoch": r.epoch,
                    "partitions_total": r.total,
                    "partitions_remaining": r.partitions.len(),
                    "bytes": r.copied.bytes,
                    "records": r.copied.records,
                })),
            })
        })
        .collect();
    let progress = stream_progress(&state, &map).await;
    let migrations: Vec<Value> = map
        .moves
        .iter()
        .map(|(p, m)| {
            let copied = |n: &NodeId| {
                m.streamed
                    .get(n)
                    .copied()
                    .or_else(|| progress.get(&(*p, m.started_epoch, *n)).copied())
                    .unwrap_or_default()
            };
            let targets: Vec<Value> = m
                .added()
                .iter()
                .map(|n| {
                    let c = copied(n);
                    json!({"node": n, "bytes": c.bytes, "records": c.records, "done": m.streamed.contains_key(n)})
                })
                .collect();
            let bytes: u64 = m.added().iter().map(|n| copied(n).bytes).sum();
            let records: u64 = m.added().iter().map(|n| copied(n).records).sum();
            json!({
                "partition": p,
                "stage": m.stage.as_str(),
                "from": m.from,
                "to": m.to,
                "sources": m.dropped(),
                "targets": targets,
                "bytes": bytes,
                "records": records,
            })
        })
        .collect();
    Ok(Json(json!({
        "epoch": map.epoch,
        "replication_factor": map.replication_factor,
        "partitions": map.ring.partitions(),
        "nodes": nodes,
        "migrations": migrations,
        "migration_summary": summary(&map, &migrations, now_ms),
        "last_migration": map.last_change.map(|c| json!({
            "partitions_done": c.moves_done,
            "partitions_aborted": c.moves_aborted,
            "bytes_moved": c.bytes,
            "records_moved": c.records,
            "seconds": ((c.finished_ms - c.started_ms).max(0) as f64 / 100.0).round() / 10.0,
        })),
    })))
}

/// A node's hints and anti-entropy, as it reported them.
fn healing(h: &HealingStats, now_ms: u64) -> Value {
    let age_of = |at: u64| (now_ms.saturating_sub(at) as f64 / 100.0).round() / 10.0;
    json!({
        "hints_pending_bytes": h.hints_pending.iter().map(|(n, b)| (n.to_string(), *b)).collect::<BTreeMap<_, _>>(),
        "hints_stored": h.hints_stored,
        "hints_refused": h.hints_refused,
        "hints_replayed": h.hints_replayed,
        "anti_entropy": {
            "passes": h.passes,
            "last_pass_age_seconds": h.last_pass_ms.map(age_of),
            "partitions_held": h.partitions_held,
            "partitions_unagreed": h.partitions_unagreed,
            "oldest_agreement_age_seconds": h.oldest_agreement_ms.map(age_of),
            "pass_partitions_done": h.pass_done,
            "pass_partitions_total": h.pass_total,
            "records_pulled": h.pulled,
            "tombstones_dropped": h.tombstones_dropped,
        },
    })
}

/// The change in flight as a whole: partitions done and remaining, bytes
/// and records moved, the rate and the time left at that rate.
fn summary(map: &ClusterMap, migrations: &[Value], now_ms: u64) -> Value {
    let Some(change) = &map.change else {
        return Value::Null;
    };
    let remaining = map.moves_remaining();
    let in_flight_bytes: u64 = migrations.iter().filter_map(|m| m["bytes"].as_u64()).sum();
    let moving = map.moves.values().filter(|m| !m.stage.switched()).count();
    let bytes = change.bytes + in_flight_bytes;
    let elapsed_s = ((now_ms as i64 - change.started_ms).max(1) as f64) / 1000.0;
    let rate = bytes as f64 / elapsed_s;
    let done = change.moves_done;
    // The partitions left move about as many bytes each as those done.
    let per_move = if done > 0 { change.bytes as f64 / done as f64 } else { 0.0 };
    let eta = (rate > 0.0 && done > 0).then(|| (remaining as f64 * per_move - in_flight_bytes as f64).max(0.0) / rate);
    json!({
        "partitions_done": done,
        "partitions_aborted": change.moves_aborted,
        "partitions_remaining": remaining,
        "partitions_moving": moving,
        "bytes_moved": bytes,
        "records_moved": change.records + migrations.iter().filter_map(|m| m["records"].as_u64()).sum::<u64>(),
        "bytes_per_second": rate.round() as u64,
        "elapsed_seconds": (elapsed_s * 10.0).round() / 10.0,
        "eta_seconds": eta.map(|s| s.round() as u64),
    })
}

/// What each node streaming a partition in has copied so far, asked of the
/// nodes with a short timeout: (partition, move, node) → copied.
async fn stream_progress(state: &State, map: &ClusterMap) -> BTreeMap<(PartitionId, u64, NodeId), Streamed> {
    let mut targets: Vec<NodeId> = map.moves.values().flat_map(|m| m.added()).collect();
    targets.sort_unstable();
    targets.dedup();
    let asks = targets.into_iter().filter_map(|node| {
        let client = state.view.client(map, node)?;
        Some(async move { (node, client.call(Request::Progress, PROGRESS_TIMEOUT).await) })
    });
    let mut out = BTreeMap::new();
    for (node, answer) in futures::future::join_all(asks).await {
        if let Ok(Response::Progress(streams)) = answer {
            for (p, started, copied) in streams {
                out.insert((p, started, node), copied);
            }
        }
    }
    out
}

/// The body of `POST /v1/cluster/nodes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNode {
    addr: String,
    #[serde(default)]
    id: Option<NodeId>,
}

/// `POST /v1/cluster/nodes`: adds the waiting node at `addr` and plans the
/// moves onto it.
pub async fn add(state: State, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: AddNode = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body must be {{\"addr\": \"host:port\"}}: {e}"))
    })?;
    check_addr(&request.addr)?;
    let map = state.view.map().ok_or_else(ApiError::no_map)?;
    if let Some(id) = map.member_at(&request.addr) {
        return Err(ApiError::conflict("already_member", format!("{} is already node {id}", request.addr)));
    }
    let id = hello(&state, &map, &request).await?;
    let command = MapCommand::AddNode { id, addr: request.addr.clone(), at_ms: state.clock.wall_ms() as i64 };
    let epoch = propose(&state, command).await?;
    let id = state
        .view
        .map()
        .and_then(|m| m.member_at(&request.addr))
        .ok_or_else(|| ApiError::unavailable("map_lagging", "the node was added; its id is not known here yet"))?;
    Ok((StatusCode::ACCEPTED, Json(json!({"epoch": epoch, "id": id}))))
}

/// `DELETE /v1/cluster/nodes/{id}`: moves every partition-replica off the
/// node, then marks it removed.
pub async fn decommission(state: State, Path(id): Path<String>) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = member(&state, &id)?;
    let epoch = propose(&state, MapCommand::Decommission { id, at_ms: state.clock.wall_ms() as i64 }).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"epoch": epoch, "id": id}))))
}

/// `POST /v1/cluster/nodes/{id}/remove`: gives up a dead node; the
/// survivors re-replicate its partitions.
pub async fn remove(state: State, Path(id): Path<String>) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = member(&state, &id)?;
    if state.view.liveness().get(&id).is_some_and(|l| l.live) {
        return Err(ApiError::conflict(
            "node_alive",
            format!("node {id} answers; decommission it instead (DELETE /v1/cluster/nodes/{id}), or stop it first"),
        ));
    }
    let epoch = propose(&state, MapCommand::RemoveNode { id, at_ms: state.clock.wall_ms() as i64 }).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"epoch": epoch, "id": id}))))
}

/// `POST /v1/cluster/migrations/abort`: gives up the change in flight.
pub async fn abort(state: State) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.view.map().ok_or_else(ApiError::no_map)?;
    let epoch = propose(&state, MapCommand::AbortChange).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"epoch": epoch}))))
}

/// `host:port` with a port number.
fn check_addr(addr: &str) -> Result<(), ApiError> {
    let valid = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && !host.contains(['/', ' ']) && port.parse::<u16>().is_ok());
    if valid { Ok(()) } else { Err(ApiError::bad_request("invalid_addr", format!("{addr:?} is not host:port"))) }
}

/// Asks the node at `addr` who it is; the id it already has, if any. A
/// node that belongs elsewhere, or none at all, is refused.
async fn hello(state: &State, map: &ClusterMap, request: &AddNode) -> Result<Option<NodeId>, ApiError> {
    let addr = &request.addr;
    let answer = state.view.pool().get(addr).call(Request::Hello, HELLO_TIMEOUT).await;
    let (known, epoch) = match answer {
        Ok(Response::Hello { id, epoch, .. }) => (id, epoch),
        Ok(other) => {
            let message = format!("the process at {addr} is not a ringup node that can join (it answered {other:?})");
            return Err(ApiError::bad_request("no_node", message));
        }
        Err(e) => {
            let message = format!("no ringup node answers at {addr}: {e}; start it first, with no initial nodes");
            return Err(ApiError::bad_request("no_node", message));
        }
    };
    match (known, request.id) {
        (Some(has), Some(asked)) if has != asked => {
            Err(ApiError::bad_request("id_mismatch", format!("the node at {addr} is node {has}, not node {asked}")))
        }
        (Some(has), _) if map.members.contains_key(&has) => Err(ApiError::conflict(
            "node_known",
            format!(
                "the node at {addr} is node {has}, which is {} at {}; a removed node rejoins with an empty data directory",
                map.members[&has].state.as_str(),
                map.members[&has].addr
            ),
        )),
        (Some(has), _) if epoch > 0 => Err(ApiError::conflict(
            "other_cluster",
            format!("the node at {addr} is node {has} of another cluster (epoch {epoch})"),
        )),
        (Some(has), _) => Ok(Some(has)),
        (None, asked) => Ok(asked),
    }
}

/// The member named by a path's id.
fn member(state: &State, id: &str) -> Result<NodeId, ApiError> {
    let id: NodeId = id.parse().map_err(|_| ApiError::bad_request("invalid_id", format!("{id:?} is not a node id")))?;
    let map = state.view.map().ok_or_else(ApiError::no_map)?;
    if !map.members.contains_key(&id) {
        return Err(ApiError::not_found(format!("no node {id} in the cluster")));
    }
    Ok(id)
}

/// Proposes a command through the metadata leader, then waits (a little)
/// until this router's map holds it, so that `GET /v1/cluster` right after
/// the answer shows the change; the map's refusals become 4xx answers.
pub(crate) async fn propose(state: &State, command: MapCommand) -> Result<u64, ApiError> {
    let epoch = state.view.propose(command, PROPOSE_TIMEOUT).await.map_err(|e| match e {
        RpcError::Refused(refusal) => refused(refusal),
        other => ApiError::unavailable("metadata_unavailable", format!("the change was not made: {other}")),
    })?;
    state.view.wait_epoch(epoch, EPOCH_WAIT).await;
    Ok(epoch)
}

fn refused(e: MapError) -> ApiError {
    let message = e.to_string();
    match e {
        MapError::AlreadyMember { .. } => ApiError::conflict("already_member", message),
        MapError::IdTaken(_) => ApiError::conflict("id_taken", message),
        MapError::TooFewNodes { .. } => ApiError::conflict("too_few_nodes", message),
        MapError::Conflict(_) | MapError::Unchanged => ApiError::conflict("change_conflict", message),
        MapError::UnknownNode(_) | MapError::UnknownToken(_) => ApiError::not_found(message),
        MapError::InvalidToken(_) => ApiError::bad_request("invalid_token", message),
        MapError::NotBootstrapped => ApiError::no_map(),
        MapError::AlreadyBootstrapped
        | MapError::InvalidBootstrap(_)
        | MapError::NoSuchMove(_)
        | MapError::InvalidMove(_) => ApiError::bad_request("invalid_change", message),
    }
}
