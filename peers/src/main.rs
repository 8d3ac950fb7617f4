//! `ringup-peers`: the load of `ringup bench`, the same seeded records in
//! the same batches from the same number of clients, sent to the stores a
//! team would pick instead of ringup, and to the ceiling of the machine.
//!
//! - `redis`: a Redis Cluster. Each batch is one pipeline of `SET`s (a
//!   shop's keys share a hash tag, so one master takes them all) ending in
//!   `WAIT`, so a batch counts only once a replica holds it.
//! - `postgres`: one table keyed by (shop, id); each batch is one multi-row
//!   `INSERT … ON CONFLICT DO UPDATE`.
//! - `rocksdb`: the ceiling. The records, encoded exactly as a node stores
//!   them, merged by the node's own storage layer into three RocksDB
//!   instances in this process: no network, no router, no RPC.
//! - `reports`: the reports benchmark's sales, as CSV or pushed to ringup,
//!   and its query timings (`scripts/bench-reports.sh`).
//! - `table`: the side-by-side table of several runs' `--json` summaries:
//!   throughput, or with `--latency` the latency of runs at a fixed `--rate`.
//!
//! `scripts/bench-peers.sh` starts each store on loopback, runs `ringup
//! bench` and these one after another, and prints the tables.

mod postgres;
mod redis;
mod reports;
mod rocks;
mod table;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc, as in ringup's own binaries: every client of the comparison
/// and the ceiling's storage run on the same allocator as ringup does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "ringup-peers", version, about = "Run ringup's benchmark load against a peer store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load a Redis Cluster.
    Redis(redis::RedisArgs),
    /// Load a PostgreSQL server.
    Postgres(postgres::PostgresArgs),
    /// Load RocksDB directly: the ceiling.
    Rocksdb(rocks::RocksArgs),
    /// The reports benchmark's data (CSV, or pushed to ringup) and query timings.
    Reports(reports::ReportsArgs),
    /// Print the side-by-side table of `--json` summaries; the first is the
    /// baseline the others are compared with.
    Table {
        /// What the table compares: write or get.
        #[arg(long, default_value = "write")]
        op: String,
        /// The latency table of runs at a fixed `--rate`: rate asked and
        /// achieved, p50, p99, p99.9 and errors.
        #[arg(long)]
        latency: bool,
        /// The title above the table.
        #[arg(long, default_value = "")]
        title: String,
        /// The summaries, baseline first.
        #[arg(required = true)]
        summaries: Vec<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Redis(args) => redis::run(args).await,
        Command::Postgres(args) => postgres::run(args).await,
        Command::Rocksdb(args) => rocks::run(args).await,
        Command::Reports(args) => reports::run(args).await,
        Command::Table { op, title, latency, summaries } => {
            let summaries = table::read(&summaries)?;
            let text = if latency {
                table::render_latency(&title, &op, &summaries)?
            } else {
                table::render(&title, &op, &summaries)?
            };
            print!("{text}");
            Ok(())
        }
    }
}
