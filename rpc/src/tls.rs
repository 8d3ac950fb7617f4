//! Mutual TLS for the internal RPC (rustls, with ring's cryptography).
//!
//! Every process of a cluster holds the cluster's CA certificate and a
//! certificate of its own signed by that CA (`ringup certs` makes them).
//! A server accepts only clients presenting such a certificate. A client
//! accepts only a server whose certificate the CA signed for the name
//! [`NODE_NAME`], which every node certificate carries (a router's does
//! not), whatever address it dialled: addresses change as nodes move and
//! containers restart, membership in the cluster does not. So a process
//! without a certificate of the cluster's CA cannot speak to a node, and
//! only a node's certificate can pose as a node.
//!
//! The files are read again when they change: each new connection, made
//! or accepted, looks at their modification times at most every
//! [`RECHECK`], and a changed set that loads replaces the old one. A set
//! that does not load is logged and the old one kept.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The name every node certificate is issued for, and the name a client
/// checks whatever address it dialled.
pub const NODE_NAME: &str = "ringup-node";

/// How often the files' modification times are looked at, at most.
const RECHECK: Duration = Duration::from_secs(2);

/// Where a process's certificates are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster's CA certificate (PEM).
    pub ca: PathBuf,
    /// This process's certificate chain (PEM).
    pub cert: PathBuf,
    /// This process's private key (PEM).
    pub key: PathBuf,
}

/// Why the certificates cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file cannot be read or holds no PEM of the kind expected.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificates and key do not make a configuration.
    #[error("the TLS configuration is invalid: {0}")]
    Config(String),
}

/// Loaded configurations for both sides of a connection.
struct Loaded {
    connector: TlsConnector,
    acceptor: TlsAcceptor,
    /// The files' modification times when they were read.
    stamps: [Option<SystemTime>; 3],
}

/// A process's TLS set-up. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    files: Arc<TlsFiles>,
    /// The configuration in use and when the files were last looked at.
    /// Held only to read or swap, never across an `.await`.
    current: Arc<Mutex<(Arc<Loaded>, Instant)>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Reads the files; fails if they do not make a valid configuration.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let loaded = load(&files)?;
        Ok(Self { files: Arc::new(files), current: Arc::new(Mutex::new((Arc::new(loaded), Instant::now()))) })
    }

    /// The configuration to use now, read again if the files changed.
    fn loaded(&self) -> Arc<Loaded> {
        let (held, checked) = {
            let current = self.current.lock().expect("tls config poisoned");
            (current.0.clone(), current.1)
        };
        if checked.elapsed() < RECHECK {
            return held;
        }
        let stamps = stamps(&self.files);
        let fresh = if stamps == held.stamps {
            held
        } else {
            match load(&self.files) {
                Ok(loaded) => {
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificates changed; using the new ones");
                    Arc::new(loaded)
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificates changed but do not load; keeping the old ones");
                    Arc::new(Loaded { stamps, ..clone_loaded(&held) })
                }
            }
        };
        *self.current.lock().expect("tls config poisoned") = (fresh.clone(), Instant::now());
        fresh
    }

    /// The client side, and the name the server's certificate must carry.
    pub fn connector(&self) -> (TlsConnector, ServerName<'static>) {
        let name = ServerName::try_from(NODE_NAME).expect("a valid DNS name");
        (self.loaded().connector.clone(), name)
    }

    /// The server side.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.loaded().acceptor.clone()
    }
}

fn clone_loaded(l: &Loaded) -> Loaded {
    Loaded { connector: l.connector.clone(), acceptor: l.acceptor.clone(), stamps: l.stamps }
}

fn stamps(files: &TlsFiles) -> [Option<SystemTime>; 3] {
    [&files.ca, &files.cert, &files.key].map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let stamps = stamps(files);
    let file_error = |path: &PathBuf, reason: String| TlsError::File { path: path.clone(), reason };
    let certs = |path: &PathBuf| -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| file_error(path, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error(path, e.to_string()))?;
        if certs.is_empty() {
            return Err(file_error(path, "holds no certificate".into()));
        }
        Ok(certs)
    };
    let mut roots = RootCertStore::empty();
    for ca in certs(&files.ca)? {
        roots.add(ca).map_err(|e| file_error(&files.ca, e.to_string()))?;
    }
    let roots = Arc::new(roots);
    let chain = certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e.to_string()))?;
    // ring rather than rustls' default aws-lc-rs, whose build needs cmake
    // and several minutes; ring's provider offers no post-quantum key
    // exchange, hence the deprecation, which is accepted here.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = |e: rustls::Error| TlsError::Config(e.to_string());
    let client = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config)?
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(chain.clone(), key.clone_key())
        .map_err(config)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(config)?;
    Ok(Loaded {
        connector: TlsConnector::from(Arc::new(client)),
        acceptor: TlsAcceptor::from(Arc::new(server)),
        stamps,
    })
}
