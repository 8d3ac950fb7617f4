//! The `ringup-router` binary.

use clap::Parser;
use ringup_process as process;
use ringup_router::config::RouterConfig;

/// mimalloc: the router allocates and frees small buffers on every request
/// from several threads, where it costs about half of what glibc's malloc does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    process::init_tracing("info");
    let config = RouterConfig::parse();
    match ringup_router::run(config, process::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringup-router: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
