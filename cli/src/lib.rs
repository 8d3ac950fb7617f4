//! The `ringup` admin and developer CLI.

pub mod bench;
pub mod certs;
pub mod health;
pub mod key;
pub mod local;
pub mod node;
pub mod query;
pub mod repair;
pub mod status;
pub mod table;
pub mod token;

use clap::{Parser, Subcommand};

/// The default router URL.
pub const DEFAULT_ROUTER: &str = "http://127.0.0.1:8080";

/// `ringup`: run and inspect ringup clusters.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the cluster map: members, their state, liveness and load.
    Status(status::StatusArgs),
    /// Run a local cluster (nodes and a router on loopback) until Ctrl-C or SIGTERM.
    Local(local::LocalArgs),
    /// Exit 0 if the router is ready (or, with --node, the node is serving).
    Health(health::HealthArgs),
    /// Put load on a cluster and report throughput, latency and errors.
    Bench(bench::BenchArgs),
    /// Add, decommission or remove a node, or abort the change in flight.
    Node(node::NodeArgs),
    /// Show healing: hints pending, anti-entropy passes, refills.
    Repair(repair::RepairArgs),
    /// Run a SQL report across every shop and print the result.
    Query(query::QueryArgs),
    /// Create, list or revoke API tokens.
    Token(token::TokenArgs),
    /// Make the cluster's CA and certificates for mutual TLS on the internal RPC.
    Certs(certs::CertsArgs),
    /// Make or extend the data key file for encryption at rest.
    Key(key::KeyArgs),
}

/// Runs the CLI.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Status(args) => status::run(args).await,
        Command::Local(args) => local::run(args).await,
        Command::Health(args) => health::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Node(args) => node::run(args).await,
        Command::Repair(args) => repair::run(args).await,
        Command::Query(args) => query::run(args).await,
        Command::Token(args) => token::run(args).await,
        Command::Certs(args) => certs::run(args),
        Command::Key(args) => key::run(args),
    }
}
