//! `ringup bench`: the load generator ([`ringup_bench`]) pointed at a
//! running cluster through its router.
//!
//! Writes are `POST /v1/shops/{shop}/sales` of a JSON array, GETs and list
//! pages use the record routes, every request at `--consistency`. Each
//! client holds its own HTTP/1.1 connection.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::http::{Method, Request, Uri, header};
use hyper_util::rt::TokioIo;
use ringup_bench::workload::Sale;
use ringup_bench::{Client, LoadArgs, Target};
use ringup_proto::consistency::Consistency;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use super::DEFAULT_ROUTER;

/// Arguments of `ringup bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The router's URL.
    #[arg(long, env = "RINGUP_ROUTER", default_value = DEFAULT_ROUTER)]
    pub router: String,
    /// The consistency level of every request: one, quorum or all.
    #[arg(long, default_value = "quorum")]
    pub consistency: String,
    /// How long one request may take, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// A note on the cluster's set-up, kept in the JSON summary and shown
    /// in the peer comparison's tables (e.g. "no TLS, no encryption").
    #[arg(long)]
    pub note: Option<String>,
    /// The load.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// Runs the benchmark and prints its summary.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let consistency: Consistency = args.consistency.parse().map_err(|e| anyhow::anyhow!("--consistency: {e}"))?;
    args.load.check()?;
    let router = args.router.trim_end_matches('/').to_string();
    let uri: Uri = router.parse().with_context(|| format!("--router {router} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("--router {router}: only http:// URLs are served");
    }
    let authority = uri.authority().with_context(|| format!("--router {router} names no host"))?.to_string();
    super::health::router(&router, Duration::from_secs(5)).await.context("the router is not ready")?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let authorization = super::token::from_env()?
        .map(|t| hyper::http::HeaderValue::from_str(&format!("Bearer {t}")))
        .transpose()
        .context("the token is not a valid header")?;
    let consistency = consistency.to_string();
    let target = Ringup { router, authority, consistency, timeout, authorization, note: args.note.clone() };
    ringup_bench::run(&args.load, target).await?;
    Ok(())
}

/// A cluster, through its router.
#[derive(Clone)]
struct Ringup {
    router: String,
    /// `host:port` of the router.
    authority: String,
    consistency: String,
    timeout: Duration,
    /// `Bearer …`, sent with every request when a token is set.
    authorization: Option<hyper::http::HeaderValue>,
    note: Option<String>,
}

impl Target for Ringup {
    type Client = Connection;

    fn describe(&self) -> Value {
        json!({ "target": "ringup", "router": self.router, "consistency": self.consistency, "note": self.note })
    }

    fn lists(&self) -> bool {
        true
    }

    async fn connect(&self) -> anyhow::Result<Connection> {
        let mut client = Connection { target: self.clone(), sender: None };
        client.sender().await.map_err(|e| anyhow::anyhow!("{}: {e}", self.router))?;
        Ok(client)
    }
}

/// One client's HTTP/1.1 connection to the router, one request at a time,
/// opened again after a failure. A bare hyper connection, with no pool to
/// look up per request: the load generator shares the machine with the
/// cluster it measures, so what it spends per request is taken from ringup.
struct Connection {
    target: Ringup,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    /// The open connection, or a new one.
    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = TcpStream::connect(&self.target.authority).await.map_err(|_| "cannot connect".to_string())?;
            stream.set_nodelay(true).ok();
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|_| "cannot connect")?;
            tokio::spawn(connection);
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("just opened"))
    }

    /// Sends a request; the JSON answer and its size, or the kind of failure.
    async fn send(&mut self, method: Method, path: String, body: Option<Vec<u8>>) -> Result<(Value, u64), String> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.target.authority)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(authorization) = &self.target.authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let request = request.body(Full::new(Bytes::from(body.unwrap_or_default()))).expect("a well-formed request");
        let timeout = self.target.timeout;
        let exchange = async {
            let sender = self.sender().await?;
            sender.ready().await.map_err(|e| format!("transport: {e}"))?;
            let response = sender.send_request(request).await.map_err(|e| format!("transport: {e}"))?;
            let status = response.status();
            let bytes = response.into_body().collect().await.map_err(|e| format!("transport: {e}"))?.to_bytes();
            Ok::<_, String>((status, bytes))
        };
        let (status, bytes) = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                self.sender = None;
                return Err(e);
            }
            Err(_) => {
                self.sender = None;
                return Err("timeout".into());
            }
        };
        let body: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{status} unreadable body: {e}"))?;
        if !status.is_success() {
            return Err(format!("{} {}", status.as_u16(), body["error"]["code"].as_str().unwrap_or("no error code")));
        }
        Ok((body, bytes.len() as u64))
    }

    fn path(&self, shop: &str, rest: &str) -> String {
        format!("/v1/shops/{shop}/sales{rest}")
    }
}

impl Client for Connection {
    async fn write(&mut self, shop: &str, sales: &[Sale]) -> Result<u64, String> {
        let body = serde_json::to_vec(&sales.iter().map(Sale::to_json).collect::<Vec<_>>()).expect("JSON");
        let bytes = body.len() as u64;
        let path = self.path(shop, &format!("?consistency={}", self.target.consistency));
        let (answer, _) = self.send(Method::POST, path, Some(body)).await?;
        let written = answer["written"].as_u64().unwrap_or_default();
        if written != sales.len() as u64 {
            return Err(format!("wrote {written} of {} records", sales.len()));
        }
        Ok(bytes)
    }

    async fn get(&mut self, shop: &str, id: &str) -> Result<u64, String> {
        let path = self.path(shop, &format!("/{id}?consistency={}", self.target.consistency));
        let (record, bytes) = self.send(Method::GET, path, None).await?;
        if record["id"] != id {
            return Err("get answered another record".into());
        }
        Ok(bytes)
    }

    async fn list(&mut self, shop: &str, limit: usize) -> Result<(u64, u64), String> {
        let path = self.path(shop, &format!("?limit={limit}&consistency={}", self.target.consistency));
        let (page, bytes) = self.send(Method::GET, path, None).await?;
        let records = page["records"].as_array().map_or(0, Vec::len) as u64;
        Ok((records, bytes))
    }
}
