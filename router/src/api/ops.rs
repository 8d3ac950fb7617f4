//! Health, readiness and metrics.

use axum::http::header;
use axum::response::IntoResponse;
use serde_json::json;

use super::State;
use super::error::ApiError;
use crate::metrics::Snapshot;

/// `GET /healthz`: 200 while the process runs.
pub async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 once the router has a cluster map.
pub async fn readyz(state: State) -> Result<impl IntoResponse, ApiError> {
    let map = state.view.map().ok_or_else(ApiError::no_map)?;
    Ok(axum::Json(json!({ "status": "ready", "epoch": map.epoch })))
}

/// `GET /metrics`: OpenMetrics text, as Prometheus scrapes it.
pub async fn metrics(state: State) -> impl IntoResponse {
    let (in_flight_requests, in_flight_bytes) = state.admission.in_flight();
    let body = state.metrics.render(Snapshot {
        epoch: state.view.map().map_or(0, |m| m.epoch),
        live_nodes: state.view.liveness().values().filter(|l| l.live).count(),
        in_flight_requests,
        in_flight_bytes,
    });
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
}
