//! The `ringup-node` binary: parses the configuration and runs a node until
//! SIGTERM or SIGINT.

use clap::Parser;
use ringup_node::config::Config;
use ringup_process as process;

/// mimalloc: every RPC allocates and frees small buffers from several
/// threads, where it costs about half of what glibc's malloc does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    process::init_tracing("info,openraft=warn");
    let config = Config::parse();
    let runtime = tokio::runtime::Runtime::new().expect("cannot start the tokio runtime");
    match runtime.block_on(ringup_node::run(config, process::shutdown_signal())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringup-node: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
