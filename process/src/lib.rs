//! What every ringup binary sets up the same way: logging, the shutdown
//! signal and the flags of the internal RPC's TLS. Flags belong to
//! binaries, so the libraries (`ringup-rpc` among them) take plain values.

use std::io::IsTerminal;
use std::path::PathBuf;

use ringup_rpc::{Tls, TlsFiles};

/// Logs to stderr, filtered by `RUST_LOG` (else `default_filter`), with
/// colours only on a terminal.
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Listens for SIGTERM and SIGINT from the moment it is called (not from
/// the first poll); the future ends at the first of them. For a process
/// that must not die by the default action of a signal sent while it is
/// still starting.
pub fn listen_for_shutdown() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("cannot listen for SIGTERM");
    let mut int = signal(SignalKind::interrupt()).expect("cannot listen for SIGINT");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The flags (and environment variables) that set up a process's RPC TLS.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// The cluster's CA certificate (PEM), made by `ringup certs`.
    #[arg(long, env = "RINGUP_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This process's certificate, signed by the CA (PEM).
    #[arg(long, env = "RINGUP_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This process's private key (PEM).
    #[arg(long, env = "RINGUP_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Speak plain TCP on the internal RPC. For development only: anyone
    /// who reaches a node's port can then read and write its data.
    #[arg(long, env = "RINGUP_INSECURE_NO_TLS")]
    pub insecure_no_tls: bool,
}

impl TlsArgs {
    /// The TLS set-up they name; `None` with `--insecure-no-tls`. Without
    /// either, an error that says what to give.
    pub fn load(&self) -> Result<Option<Tls>, String> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key, self.insecure_no_tls) {
            (None, None, None, true) => Ok(None),
            (_, _, _, true) => Err("--insecure-no-tls goes with none of --tls-ca, --tls-cert and --tls-key".into()),
            (Some(ca), Some(cert), Some(key), false) => {
                let files = TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() };
                Tls::load(files).map(Some).map_err(|e| e.to_string())
            }
            _ => Err("the internal RPC runs over mutual TLS: give --tls-ca, --tls-cert and --tls-key \
                      (RINGUP_TLS_CA, RINGUP_TLS_CERT, RINGUP_TLS_KEY; `ringup certs` makes them), \
                      or --insecure-no-tls for plain TCP"
                .into()),
        }
    }
}
