//! The `ringup-router` binary.

use clap::Parser;
use ringup_router::config::RouterConfig;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    ringup_router::init_tracing();
    let config = RouterConfig::parse();
    match ringup_router::run(config, ringup_router::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringup-router: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
