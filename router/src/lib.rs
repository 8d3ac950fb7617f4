//! `ringup-router` and the `ringup` CLI.
//!
//! The router is the stateless HTTP front door. A batch for one shop's
//! collection travels through it like this:
//!
//! 0. [`admission`] admits the request and its body's bytes, or answers
//!    503 at once when the router is at its limits.
//! 1. [`api::records::ingest`] checks the path, the consistency level, the
//!    content type and the size, then [`records::parse_batch`] checks every
//!    record. One bad record refuses the batch, with its index; nothing is
//!    stored.
//! 2. Each record is stamped with a version from the coordinator's hybrid
//!    logical clock and encoded.
//! 3. [`coordinator::Coordinator::write`] finds the shop's partition and
//!    replica set in the map held by the [`view::ClusterView`], serializes
//!    the batch once and sends it to every replica at once with the map's
//!    epoch, and answers as soon as the level is met, or 503 if it cannot
//!    be met in time. Whom to ask and when the level is met are decided by
//!    the pure core in [`ringup_proto::coordinator`].
//! 4. A node that knows a newer epoch refuses; the coordinator fetches the
//!    newer map from it and routes again.
//!
//! Reads ask only as many replicas as their level needs (one more if one
//! fails or is slow, see [`latency`]), merge the answers by
//! last-writer-wins, and repair stale replicas before answering. The
//! `ringup` CLI is a crate of its own, `ringup-cli`.

pub mod admission;
pub mod api;
pub mod config;
pub mod coordinator;
pub mod https;
pub mod latency;
pub mod metrics;
pub mod records;
pub mod reports;
pub mod view;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use ringup_rpc::{Clock, Pool};
use tokio::net::TcpListener;

use crate::api::AppState;
use crate::config::RouterConfig;
use crate::coordinator::Coordinator;
use crate::metrics::Metrics;
use crate::view::ClusterView;

/// Runs the router until `shutdown` completes.
pub async fn run(config: RouterConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let auth = config.auth()?;
    if !auth.enabled() {
        tracing::warn!(
            "authentication is OFF (--insecure-no-auth): anyone who reaches this router can read and write every shop"
        );
    } else if config.admin_token_file.is_none() {
        tracing::warn!("no --admin-token-file: only tokens in the cluster map are accepted");
    }
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let rpc_tls = config.tls.load().map_err(anyhow::Error::msg)?;
    if rpc_tls.is_none() {
        tracing::warn!("the RPC to the nodes is plain TCP (--insecure-no-tls)");
    }
    let clock = Clock::system();
    let view = Arc::new(ClusterView::new(Arc::new(Pool::with_tls(rpc_tls)), config.nodes.clone()).on_clock(clock));
    let follower = tokio::spawn(view.clone().follow());
    let pinger = tokio::spawn(view.clone().watch_liveness());
    let metrics = Metrics::new();
    let coordinator = Coordinator::with_speculation(view.clone(), config.request_timeout(), config.speculation())
        .counting(metrics.coordinator())
        .on_clock(clock);
    let state = Arc::new(AppState {
        coordinator,
        view,
        metrics,
        admission: config.admission(),
        reports: config.report_limits(),
        auth,
        clock,
    });
    let app = api::routes(state);
    match (&config.http_tls_cert, &config.http_tls_key) {
        (Some(cert), Some(key)) => {
            let acceptor = https::acceptor(cert, key)?;
            tracing::info!(listen = %config.listen, nodes = ?config.nodes, "router started, serving HTTPS");
            https::serve(listener, acceptor, app, shutdown).await;
        }
        (None, None) => {
            tracing::info!(listen = %config.listen, nodes = ?config.nodes, "router started");
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
        }
        _ => anyhow::bail!("--http-tls-cert and --http-tls-key go together"),
    }
    follower.abort();
    pinger.abort();
    tracing::info!("router stopped");
    Ok(())
}
