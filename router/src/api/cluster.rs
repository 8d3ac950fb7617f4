//! `GET /v1/cluster`: the map as admins see it.

use axum::Json;
use serde_json::{Value, json};

use super::State;
use super::error::ApiError;

/// The epoch, ring shape, members with their load and liveness, and
/// migrations in flight.
pub async fn show(state: State) -> Result<Json<Value>, ApiError> {
    let map = state.view.map().ok_or_else(ApiError::no_map)?;
    let load = map.placement.as_ref().map(|p| p.load()).unwrap_or_default();
    let liveness = state.view.liveness();
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
                "live": seen.is_some_and(|l| l.live),
                "last_seen_ms_ago": seen.and_then(|l| l.last_seen).map(|t| t.elapsed().as_millis() as u64),
            })
        })
        .collect();
    Ok(Json(json!({
        "epoch": map.epoch,
        "replication_factor": map.replication_factor,
        "partitions": map.ring.partitions(),
        "nodes": nodes,
        "migrations": [],
    })))
}
