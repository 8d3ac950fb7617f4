//! The HTTP API: routes, shared state and the JSON fallbacks.
//!
//! One file per handler family: [`records`] for shops, [`query`] for
//! analysts, [`cluster`] and [`tokens`] for admins, [`ops`] for health and
//! metrics; [`auth`] checks every request's token first.

pub mod auth;
pub mod body;
pub mod cluster;
pub mod error;
pub mod ops;
pub mod query;
pub mod records;
pub mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::body::HttpBody;
use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use ringup_proto::consistency::Consistency;

use crate::admission::{Admission, Refusal};
use crate::coordinator::Coordinator;
use crate::metrics::{Answered, Metrics};
use crate::records::MAX_BODY;
use crate::reports::ReportLimits;
use crate::view::ClusterView;
use error::{ApiError, ErrorCode};

/// What every handler can reach.
pub struct AppState {
    /// The router's view of the cluster.
    pub view: Arc<ClusterView>,
    /// Coordinates reads and writes.
    pub coordinator: Coordinator,
    /// Request counters.
    pub metrics: Metrics,
    /// The bound on requests and bytes in flight.
    pub admission: Admission,
    /// The limits of a report.
    pub reports: ReportLimits,
    /// How requests are authenticated.
    pub auth: auth::Auth,
    /// What the handlers read the time from.
    pub clock: ringup_rpc::Clock,
}

/// The shared state as handlers take it.
pub type State = axum::extract::State<Arc<AppState>>;

/// Every path the router serves, with its handlers. `docs/openapi.yaml`
/// lists exactly these paths with these methods; the conformance test
/// (`tests/tests/api_conformance.rs`) checks both ways.
fn table() -> Vec<(&'static str, MethodRouter<Arc<AppState>>)> {
    vec![
        ("/v1/shops/{shop}/{collection}", get(records::list).post(records::ingest)),
        ("/v1/shops/{shop}/{collection}/_count", get(records::count)),
        (
            "/v1/shops/{shop}/{collection}/{id}",
            get(records::get).put(records::put).patch(records::patch).delete(records::delete),
        ),
        ("/v1/query", post(query::run)),
        ("/v1/cluster", get(cluster::show)),
        ("/v1/cluster/nodes", post(cluster::add)),
        ("/v1/cluster/nodes/{id}", delete(cluster::decommission)),
        ("/v1/cluster/nodes/{id}/remove", post(cluster::remove)),
        ("/v1/cluster/migrations/abort", post(cluster::abort)),
        ("/v1/tokens", get(tokens::list).post(tokens::create)),
        ("/v1/tokens/{id}", delete(tokens::revoke)),
        ("/healthz", get(ops::healthz)),
        ("/readyz", get(ops::readyz)),
        ("/metrics", get(ops::metrics)),
    ]
}

/// The path templates the router serves.
pub fn paths() -> Vec<&'static str> {
    table().into_iter().map(|(path, _)| path).collect()
}

/// The API's routes.
pub fn routes(state: Arc<AppState>) -> Router {
    table()
        .into_iter()
        .fold(Router::new(), |router, (path, handlers)| router.route(path, handlers))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::check))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), admit))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::method_not_allowed(format!("{} is not allowed on {}", request.method(), request.uri().path()))
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!("no such path: {}", request.uri().path()))
}

/// Admits a data request (`/v1/…`) with its body's bytes, or refuses it at
/// once: `413` for a body declared over the limit, `503` with
/// `Retry-After` past the limits in flight. Health, readiness and metrics
/// are always answered.
async fn admit(state: State, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .or_else(|| request.body().size_hint().exact());
    let admitted = match declared {
        Some(n) if n > MAX_BODY as u64 => Err(ApiError::body_too_large(MAX_BODY)),
        // A body of unknown length may be as large as any.
        n => state.admission.admit(n.map_or(MAX_BODY, |n| n as usize)).map_err(|refusal| {
            state.metrics.count_refusal(refusal);
            overloaded(refusal)
        }),
    };
    match admitted {
        Ok(_ticket) => next.run(request).await,
        Err(refusal) => {
            body::discard(request.into_body()).await;
            refusal.into_response()
        }
    }
}

fn overloaded(refusal: Refusal) -> ApiError {
    let why = match refusal {
        Refusal::Requests { limit } => format!("the router is at its limit of {limit} requests in flight"),
        Refusal::Bytes { limit } => format!("the router is at its limit of {limit} body bytes in flight"),
    };
    ApiError::unavailable("overloaded", format!("{why}; retry later"))
}

/// Counts every request by method and status, its latency by method,
/// route and consistency level, and its error code if it failed.
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
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let consistency = match &route {
        Some(route) if route.starts_with("/v1/shops/") => consistency_label(request.uri().query()),
        _ => "none",
    };
    let started = std::time::Instant::now();
    let response = next.run(request).await.into_response();
    state.metrics.count_request(Answered {
        method,
        route: route.as_deref().unwrap_or("unmatched"),
        consistency,
        status: response.status().as_u16(),
        error: response.extensions().get::<ErrorCode>().map(|c| c.0),
        seconds: started.elapsed().as_secs_f64(),
    });
    response
}

/// The level a records request asked for, as a metric label: the default
/// `quorum` when it names none, `invalid` for one that is not a level.
fn consistency_label(query: Option<&str>) -> &'static str {
    let asked = query.unwrap_or("").split('&').find_map(|pair| pair.strip_prefix("consistency="));
    match asked.map(str::parse::<Consistency>) {
        None => Consistency::default().as_str(),
        Some(Ok(level)) => level.as_str(),
        Some(Err(_)) => "invalid",
    }
}
