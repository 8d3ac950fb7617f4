//! `ringup node add|decommission|remove|abort`: membership changes through
//! the router, and with `--wait`, their progress until they complete.
//!
//! The progress comes from `GET /v1/cluster`, polled twice a second: on a
//! terminal, two `indicatif` bars (partitions moved, bytes moved) with rate
//! and time left; elsewhere one plain line every few seconds.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::DEFAULT_ROUTER;
use super::status;

/// How often `--wait` polls the router.
const POLL: Duration = Duration::from_millis(500);
/// How often `--wait` prints a plain line when not on a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Arguments of `ringup node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The router's URL.
    #[arg(long, env = "RINGUP_ROUTER", default_value = DEFAULT_ROUTER, global = true)]
    pub router: String,
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// A membership change.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Add the waiting node at ADDR (host:port of its RPC) and move data onto it.
    Add {
        /// The node's RPC address, as the other nodes reach it.
        addr: String,
        /// The id to give it (default: the next free one).
        #[arg(long)]
        id: Option<u64>,
        /// Show progress until the node is up.
        #[arg(long)]
        wait: bool,
    },
    /// Move every partition off node ID, then mark it removed.
    Decommission {
        /// The node's id.
        id: u64,
        /// Show progress until the node is removed.
        #[arg(long)]
        wait: bool,
    },
    /// Give up dead node ID and re-replicate its partitions from the others.
    Remove {
        /// The node's id.
        id: u64,
        /// Show progress until its partitions have their replicas again.
        #[arg(long)]
        wait: bool,
    },
    /// Abort the change in flight: moves not yet switched go back.
    Abort {
        /// Show progress until the cluster is back where it started.
        #[arg(long)]
        wait: bool,
    },
}

/// Runs `ringup node`.
pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let base = args.router.trim_end_matches('/').to_string();
    let http = super::token::http(Some(Duration::from_secs(30)))?;
    let (method, path, body, wait, what) = match &args.action {
        Action::Add { addr, id, wait } => {
            let mut body = json!({ "addr": addr });
            if let Some(id) = id {
                body["id"] = json!(id);
            }
            (reqwest::Method::POST, "/v1/cluster/nodes".to_string(), Some(body), *wait, format!("adding {addr}"))
        }
        Action::Decommission { id, wait } => (
            reqwest::Method::DELETE,
            format!("/v1/cluster/nodes/{id}"),
            None,
            *wait,
            format!("decommissioning node {id}"),
        ),
        Action::Remove { id, wait } => (
            reqwest::Method::POST,
            format!("/v1/cluster/nodes/{id}/remove"),
            None,
            *wait,
            format!("removing node {id}"),
        ),
        Action::Abort { wait } => {
            (reqwest::Method::POST, "/v1/cluster/migrations/abort".to_string(), None, *wait, "aborting".to_string())
        }
    };
    let mut request = http.request(method, format!("{base}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.with_context(|| format!("cannot reach the router at {base}"))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = answer["error"]["message"].as_str().unwrap_or("no message");
        bail!("the router answered {status}: {message}");
    }
    let epoch = answer["epoch"].as_u64().unwrap_or(0);
    match answer["id"].as_u64() {
        Some(id) => println!("{what}: accepted at epoch {epoch} (node {id})"),
        None => println!("{what}: accepted at epoch {epoch}"),
    }
    if wait {
        follow(&base, epoch).await?;
        print!("{}", status::render(&status::fetch(&base).await?));
    }
    Ok(())
}

/// Shows the change's progress until the map holds no change after
/// `epoch`.
async fn follow(base: &str, epoch: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let bars = Bars::new();
    let mut last_plain = Instant::now();
    loop {
        let cluster = status::fetch(base).await?;
        let summary = &cluster["migration_summary"];
        if cluster["epoch"].as_u64().unwrap_or(0) > epoch && summary.is_null() {
            bars.finish();
            println!("done in {:.1}s, cluster at epoch {}", started.elapsed().as_secs_f64(), cluster["epoch"]);
            return Ok(());
        }
        if !summary.is_null() {
            match &bars {
                Bars::Terminal { .. } => bars.show(summary),
                Bars::Plain if last_plain.elapsed() >= PLAIN_EVERY => {
                    println!("{}", status::plain_line(summary, started.elapsed()));
                    last_plain = Instant::now();
                }
                Bars::Plain => {}
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The progress display.
enum Bars {
    /// Two bars on a terminal.
    Terminal { _all: MultiProgress, partitions: ProgressBar, bytes: ProgressBar },
    /// Plain lines elsewhere.
    Plain,
}

impl Bars {
    fn new() -> Self {
        if !std::io::stderr().is_terminal() {
            return Bars::Plain;
        }
        let all = MultiProgress::new();
        let style = |template: &str| ProgressStyle::with_template(template).expect("a valid template");
        let partitions = all.add(ProgressBar::new(0));
        partitions.set_style(style("partitions {bar:40} {pos}/{len}  {msg}"));
        let bytes = all.add(ProgressBar::new(0));
        bytes.set_style(style("bytes      {bar:40} {bytes}/{total_bytes}  {binary_bytes_per_sec}  eta {eta}"));
        Bars::Terminal { _all: all, partitions, bytes }
    }

    fn show(&self, summary: &Value) {
        let Bars::Terminal { partitions, bytes, .. } = self else { return };
        let done = summary["partitions_done"].as_u64().unwrap_or(0);
        let remaining = summary["partitions_remaining"].as_u64().unwrap_or(0);
        partitions.set_length(done + remaining);
        partitions.set_position(done);
        partitions.set_message(format!("{} moving", summary["partitions_moving"].as_u64().unwrap_or(0)));
        let moved = summary["bytes_moved"].as_u64().unwrap_or(0);
        let left = summary["eta_seconds"].as_u64().unwrap_or(0) * summary["bytes_per_second"].as_u64().unwrap_or(0);
        bytes.set_length(moved + left);
        bytes.set_position(moved);
    }

    fn finish(&self) {
        if let Bars::Terminal { partitions, bytes, .. } = self {
            partitions.finish();
            bytes.finish();
        }
    }
}
