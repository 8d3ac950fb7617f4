//! The HTTP API: routes, shared state and the JSON fallbacks.
//!
//! One file per handler family: [`records`] for shops, [`cluster`] for
//! admins, [`ops`] for health and metrics.

pub mod cluster;
pub mod error;
pub mod ops;
pub mod records;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::coordinator::Coordinator;
use crate::metrics::Metrics;
use crate::view::ClusterView;
use error::ApiError;

/// What every handler can reach.
pub struct AppState {
    /// The router's view of the cluster.
    pub view: Arc<ClusterView>,
    /// Coordinates reads and writes.
    pub coordinator: Coordinator,
    /// Request counters.
    pub metrics: Metrics,
}

/// The shared state as handlers take it.
pub type State = axum::extract::State<Arc<AppState>>;

/// The API's routes.
pub fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/shops/{shop}/{collection}", get(records::list).post(records::ingest))
        .route(
            "/v1/shops/{shop}/{collection}/{id}",
            get(records::get).put(records::put).patch(records::patch).delete(records::delete),
        )
        .route("/v1/cluster", get(cluster::show))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::method_not_allowed(format!("{} is not allowed on {}", request.method(), request.uri().path()))
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!("no such path: {}", request.uri().path()))
}

/// Counts every request by method and status.
async fn count_requests(state: State, request: Request, next: Next) -> Response {
    // Only the methods the API serves become labels; anything else is "other".
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        _ => "other",
    };
    let response = next.run(request).await.into_response();
    state.metrics.count_request(method, response.status().as_u16());
    response
}
