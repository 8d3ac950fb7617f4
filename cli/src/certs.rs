//! `ringup certs`: the cluster's CA and the certificates of its processes,
//! for mutual TLS on the internal RPC (see `ringup_rpc::Tls`), and for the
//! router's HTTPS.
//!
//! A directory holds `ca.pem` and `ca.key` (the CA, which signs), and for
//! each process `NAME.pem` and `NAME.key`. A node's certificate is issued
//! for [`NODE_NAME`] (what every client checks) and any extra hosts, and
//! may serve and dial; a client's (a router's, the CLI's) may only dial; a
//! server's (the router's HTTPS) is issued for its hosts only and cannot
//! pose as a node.
//! Keys are ECDSA P-256, files holding keys are readable by their owner
//! only, and certificates are valid for [`VALID_DAYS`] days.
//!
//! Nothing that exists is overwritten, so the command can run at every
//! start (the local cluster and the compose file do): it makes what is
//! missing, and a new certificate is signed by the CA already there.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use ringup_rpc::{NODE_NAME, TlsFiles};
use time::{Duration, OffsetDateTime};

/// How long a certificate is valid.
pub const VALID_DAYS: i64 = 825;

/// Arguments of `ringup certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Where the CA and the certificates are (made if missing).
    #[arg(long, default_value = ".ringup/certs")]
    pub dir: PathBuf,
    /// Node certificates to make, by name (e.g. node1); each may serve
    /// the internal RPC and dial other nodes.
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Client certificates to make, by name (e.g. router, cli); each may
    /// only dial nodes.
    #[arg(long, value_delimiter = ',')]
    pub clients: Vec<String>,
    /// HTTPS server certificates to make, by name (e.g. api), for the
    /// router's --http-tls-cert: issued for --hosts only.
    #[arg(long, value_delimiter = ',')]
    pub servers: Vec<String>,
    /// Host names or IP addresses written into every node and server
    /// certificate made now (node clients check only the name ringup-node;
    /// HTTPS clients check these).
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Also make a root admin token in `admin-token` (for the routers'
    /// --admin-token-file), if there is none.
    #[arg(long)]
    pub admin_token: bool,
    /// Also make a data key file `data-keys` (for the nodes'
    /// --data-key-file), if there is none.
    #[arg(long)]
    pub data_keys: bool,
}

/// What a certificate may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Serves the internal RPC and dials it.
    Node,
    /// Dials the internal RPC only.
    Client,
    /// Serves HTTPS for its hosts; no part in the internal RPC.
    Server,
}

/// Runs `ringup certs`.
pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let none = args.nodes.is_empty() && args.clients.is_empty() && args.servers.is_empty();
    if none && !args.admin_token && !args.data_keys {
        bail!("name at least one certificate to make: --nodes node1,..., --clients router,..., --servers api,...");
    }
    let mut made = Vec::new();
    for name in &args.nodes {
        made.extend(ensure(&args.dir, name, Kind::Node, &args.hosts)?.1);
    }
    for name in &args.clients {
        made.extend(ensure(&args.dir, name, Kind::Client, &[])?.1);
    }
    for name in &args.servers {
        made.extend(ensure(&args.dir, name, Kind::Server, &args.hosts)?.1);
    }
    if args.admin_token {
        let path = args.dir.join(super::token::ADMIN_TOKEN_FILE);
        if !path.exists() {
            std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
            super::token::ensure_root_token(&path)?;
            made.push(path);
        }
    }
    if args.data_keys {
        let path = args.dir.join("data-keys");
        if !path.exists() {
            std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
            super::key::add_key(&path)?;
            made.push(path);
        }
    }
    for path in &made {
        println!("made {}", path.display());
    }
    if made.is_empty() {
        println!("every certificate named is already in {}", args.dir.display());
    }
    Ok(())
}

/// The files of `name`'s certificate in `dir`, made (with the CA, if
/// missing) unless they exist; also the files made.
pub fn ensure(dir: &Path, name: &str, kind: Kind, hosts: &[String]) -> anyhow::Result<(TlsFiles, Vec<PathBuf>)> {
    if name.is_empty() || name == "ca" || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        bail!("{name:?} is not a certificate name: use letters, digits, '-' and '_' (and not \"ca\")");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut made = Vec::new();
    let (ca_pem, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    if !ca_key.exists() {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        write_private(&ca_key, &key.serialize_pem())?;
        std::fs::write(&ca_pem, cert.pem()).with_context(|| format!("cannot write {}", ca_pem.display()))?;
        made.extend([ca_pem.clone(), ca_key.clone()]);
    }
    let files = TlsFiles { ca: ca_pem, cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) };
    if !files.cert.exists() || !files.key.exists() {
        let ca_text = std::fs::read_to_string(&ca_key).with_context(|| format!("cannot read {}", ca_key.display()))?;
        let issuer = Issuer::new(ca_params()?, KeyPair::from_pem(&ca_text).context("the CA key does not load")?);
        let key = KeyPair::generate()?;
        let cert = leaf_params(name, kind, hosts)?.signed_by(&key, &issuer)?;
        write_private(&files.key, &key.serialize_pem())?;
        std::fs::write(&files.cert, cert.pem()).with_context(|| format!("cannot write {}", files.cert.display()))?;
        made.extend([files.cert.clone(), files.key.clone()]);
    }
    Ok((files, made))
}

/// The CA's parameters: the same every time, so that the CA key alone
/// issues certificates that chain to `ca.pem`.
fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "ringup cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params);
    Ok(params)
}

fn leaf_params(name: &str, kind: Kind, hosts: &[String]) -> anyhow::Result<CertificateParams> {
    let sans: Vec<String> = match kind {
        Kind::Node => std::iter::once(NODE_NAME.to_string()).chain(hosts.iter().cloned()).collect(),
        Kind::Client => Vec::new(),
        Kind::Server => hosts.to_vec(),
    };
    let mut params = CertificateParams::new(sans).context("a host is not a valid DNS name or IP address")?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match kind {
        Kind::Node => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        Kind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Kind::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
    };
    params.use_authority_key_identifier_extension = true;
    validity(&mut params);
    Ok(params)
}

fn validity(params: &mut CertificateParams) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(VALID_DAYS);
}

/// Writes a key readable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_made_once_and_load_as_a_tls_set_up() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("certs");
        let (node, made) = ensure(&dir, "node1", Kind::Node, &["127.0.0.1".into()]).unwrap();
        assert_eq!(made.len(), 4, "the CA and the node's pair: {made:?}");
        let (client, made) = ensure(&dir, "router", Kind::Client, &[]).unwrap();
        assert_eq!(made.len(), 2, "only the router's pair, signed by the CA there: {made:?}");
        assert!(ensure(&dir, "node1", Kind::Node, &[]).unwrap().1.is_empty(), "nothing is made twice");
        assert!(ringup_rpc::Tls::load(node).is_ok());
        assert!(ringup_rpc::Tls::load(client).is_ok());
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.join("ca.key")).unwrap().permissions());
        assert_eq!(mode & 0o077, 0, "the CA key is private");
        assert!(ensure(&dir, "../x", Kind::Client, &[]).is_err());
    }
}
