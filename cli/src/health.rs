//! `ringup health`: exits 0 when a router is ready or a node is serving,
//! else prints why and exits 1. Container health checks and scripts use it;
//! the images have no shell or curl.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use ringup_proto::NodeId;
use ringup_proto::rpc::{Request, Response};
use ringup_rpc::Client;
use serde_json::Value;

use super::DEFAULT_ROUTER;

/// Arguments of `ringup health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Check the node whose RPC listens at this HOST:PORT instead of a router.
    #[arg(long)]
    pub node: Option<String>,
    /// The router's URL.
    #[arg(long, env = "RINGUP_ROUTER", default_value = DEFAULT_ROUTER)]
    pub router: String,
    /// How long to wait for the answer, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// The certificates to ping a node with.
    #[command(flatten)]
    pub tls: ringup_process::TlsArgs,
}

/// Runs the check and prints its outcome.
pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms);
    match args.node {
        Some(addr) => {
            let tls = args.tls.load().map_err(anyhow::Error::msg)?;
            let (id, epoch) = node(&addr, tls, timeout).await?;
            println!("node {id} at {addr} is serving, with cluster map epoch {epoch}");
        }
        None => {
            let epoch = router(&args.router, timeout).await?;
            println!("router at {} is ready, with cluster map epoch {epoch}", args.router);
        }
    }
    Ok(())
}

/// Pings the node at `addr`: its id and map epoch, if it answers and holds
/// a cluster map.
pub async fn node(addr: &str, tls: Option<ringup_rpc::Tls>, timeout: Duration) -> anyhow::Result<(NodeId, u64)> {
    match Client::with_tls(addr, tls).call(Request::Ping, timeout).await {
        Ok(Response::Pong { node, epoch }) if epoch > 0 => Ok((node, epoch)),
        Ok(Response::Pong { node, .. }) => bail!("node {node} at {addr} answers but has no cluster map yet"),
        Ok(other) => bail!("the node at {addr} answered a ping with {other:?}"),
        Err(e) => Err(e).context("the node is not serving"),
    }
}

/// Asks the router at `url` whether it is ready: its map epoch if so.
pub async fn router(url: &str, timeout: Duration) -> anyhow::Result<u64> {
    let url = format!("{}/readyz", url.trim_end_matches('/'));
    let client = super::token::client_with(None, Some(timeout))?;
    let response = client.get(&url).send().await.with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("the router is not ready ({status}): {}", body["error"]["message"].as_str().unwrap_or("no message"));
    }
    Ok(body["epoch"].as_u64().unwrap_or_default())
}
