//! The router's configuration: command-line flags, each with an environment
//! variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// `ringup-router`: the stateless HTTP front door of a ringup cluster.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct RouterConfig {
    /// Where the HTTP API listens.
    #[arg(long, env = "RINGUP_ROUTER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// RPC addresses of nodes to learn the cluster map from, comma-separated.
    /// Any one live node is enough; the map then names the rest.
    #[arg(long, env = "RINGUP_NODES", value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,

    /// How long a request waits for replicas before answering 503, in ms.
    #[arg(long, env = "RINGUP_REQUEST_TIMEOUT_MS", default_value_t = 2000)]
    pub request_timeout_ms: u64,
}

impl RouterConfig {
    /// The per-request replica timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}
