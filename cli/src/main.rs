//! The `ringup` CLI.

use clap::Parser;
use ringup_cli::{self as cli, Cli};

/// mimalloc, as in the servers: `ringup bench` is the load generator the
/// peer comparison measures ringup with, and `ringup-peers` uses it too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringup: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
