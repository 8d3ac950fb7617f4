//! The `ringup` CLI.

use clap::Parser;
use ringup_router::cli::{self, Cli};

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
