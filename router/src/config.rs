//! The router's configuration: command-line flags, each with an environment
//! variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::admission::Admission;
use crate::coordinator::Speculation;

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

    /// How long a report (`POST /v1/query`) may take before it is answered
    /// 503, in ms.
    #[arg(long, env = "RINGUP_QUERY_TIMEOUT_MS", default_value_t = 60_000)]
    pub query_timeout_ms: u64,

    /// The most groups and distinct values a report may hold in memory, on
    /// each node and merged on the router; past it the report is answered
    /// 422.
    #[arg(long, env = "RINGUP_MAX_QUERY_GROUPS", default_value_t = 200_000)]
    pub max_query_groups: u64,

    /// Data requests in flight at most; more are answered 503 at once.
    #[arg(long, env = "RINGUP_MAX_REQUESTS", default_value_t = 1024)]
    pub max_requests: usize,

    /// Request body bytes in flight at most, in MiB; more are answered 503
    /// at once. A body of unknown length counts as 16 MiB.
    #[arg(long, env = "RINGUP_MAX_BODY_MIB", default_value_t = 64)]
    pub max_body_mib: usize,

    /// The file holding the root administrator token (`rgu_root_…`, made
    /// by `ringup token root`). Other tokens are created through
    /// `POST /v1/tokens` and kept in the cluster map.
    #[arg(long, env = "RINGUP_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<std::path::PathBuf>,

    /// Serve every request without checking tokens. For development only:
    /// anyone who reaches the router may then read and write every shop.
    #[arg(long, env = "RINGUP_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// A certificate chain (PEM) to serve the HTTP API over TLS with; with
    /// `--http-tls-key`. Plain HTTP without both.
    #[arg(long, env = "RINGUP_HTTP_TLS_CERT")]
    pub http_tls_cert: Option<std::path::PathBuf>,

    /// The private key (PEM) of `--http-tls-cert`.
    #[arg(long, env = "RINGUP_HTTP_TLS_KEY")]
    pub http_tls_key: Option<std::path::PathBuf>,

    /// Mutual TLS on the RPC to the nodes.
    #[command(flatten)]
    pub tls: ringup_process::TlsArgs,

    /// The shortest speculative delay of a read, in ms: how long it waits
    /// at least for the replicas it asked before asking one more.
    #[arg(long, env = "RINGUP_SPECULATIVE_FLOOR_MS", default_value_t = 5)]
    pub speculative_floor_ms: u64,

    /// The longest speculative delay of a read, in ms (the delay follows the
    /// recent p99 of the replicas asked, between the floor and this).
    #[arg(long, env = "RINGUP_SPECULATIVE_CEILING_MS", default_value_t = 200)]
    pub speculative_ceiling_ms: u64,
}

impl RouterConfig {
    /// How requests are authenticated.
    pub fn auth(&self) -> anyhow::Result<crate::api::auth::Auth> {
        if self.insecure_no_auth {
            return Ok(crate::api::auth::Auth::off());
        }
        crate::api::auth::Auth::on(self.admin_token_file.as_deref())
    }

    /// The limits of a report.
    pub fn report_limits(&self) -> crate::reports::ReportLimits {
        crate::reports::ReportLimits {
            deadline: Duration::from_millis(self.query_timeout_ms),
            max_groups: self.max_query_groups,
        }
    }

    /// The per-request replica timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The speculative delay of reads.
    pub fn speculation(&self) -> Speculation {
        Speculation {
            floor: Duration::from_millis(self.speculative_floor_ms),
            ceiling: Duration::from_millis(self.speculative_ceiling_ms),
        }
    }

    /// The bound on work in flight.
    pub fn admission(&self) -> Admission {
        Admission::new(self.max_requests, self.max_body_mib.saturating_mul(1 << 20))
    }
}
