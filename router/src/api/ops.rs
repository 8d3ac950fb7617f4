//! Health, readiness and metrics.

use std::time::Duration;

use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use ringup_proto::NodeId;
use ringup_proto::rpc::{Request, Response};
use ringup_proto::stats::NodeStats;
use serde_json::json;

use super::State;
use super::error::ApiError;
use crate::metrics::{Format, Snapshot};

/// How long a scrape waits for a node's stats.
const STATS_TIMEOUT: Duration = Duration::from_millis(500);

/// `GET /healthz`: 200 while the process runs.
pub async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 once the router has a cluster map.
pub async fn readyz(state: State) -> Result<impl IntoResponse, ApiError> {
    let map = state.view.map().ok_or_else(ApiError::no_map)?;
    Ok(axum::Json(json!({ "status": "ready", "epoch": map.epoch })))
}

/// `GET /metrics`: the router's metrics and every member's, as
/// Prometheus text, or OpenMetrics text when the scraper asks for it.
pub async fn metrics(state: State, headers: HeaderMap) -> impl IntoResponse {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let nodes = node_stats(&state, STATS_TIMEOUT).await;
    let (in_flight_requests, in_flight_bytes) = state.admission.in_flight();
    let now = Snapshot {
        epoch: state.view.map().map_or(0, |m| m.epoch),
        live_nodes: state.view.liveness().values().filter(|l| l.live).count(),
        in_flight_requests,
        in_flight_bytes,
    };
    let body = state.metrics.render(now, &nodes, state.clock.wall_ms(), format);
    ([(header::CONTENT_TYPE, format.content_type())], body)
}

/// Every member's stats, asked in parallel, waiting at most `timeout`;
/// `None` for a member that did not answer in time.
pub(super) async fn node_stats(state: &State, timeout: Duration) -> Vec<(NodeId, Option<NodeStats>)> {
    let Some(map) = state.view.map() else { return Vec::new() };
    let asks = map.members.values().filter(|m| !map.is_gone(m.id)).map(|member| {
        let client = state.view.client(&map, member.id);
        async move {
            let answer = match client {
                Some(client) => client.call(Request::Stats, timeout).await.ok(),
                None => None,
            };
            match answer {
                Some(Response::Stats(stats)) => (member.id, Some(*stats)),
                _ => (member.id, None),
            }
        }
    });
    futures::future::join_all(asks).await
}
