//! `ringup local`: a whole cluster on loopback, for trying ringup out and
//! for tests.
//!
//! [`Layout`] says where each process listens and keeps its data; a
//! [`Process`] is one running `ringup-node` or `ringup-router` with its log
//! file. `ringup local` starts them, waits for the router to be ready,
//! pushes sample data, prints how to use the cluster, and on SIGINT or
//! SIGTERM stops the router, then the nodes, each with SIGTERM first.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use super::{certs, status};

/// How long processes get to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long `ringup local` waits for the router to see every node.
const LIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the router gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Arguments of `ringup local`.
#[derive(Debug, Clone, Args)]
pub struct LocalArgs {
    /// Where the nodes keep their data and every process its log.
    #[arg(long, env = "RINGUP_LOCAL_DIR", default_value = ".ringup/local")]
    pub dir: PathBuf,
    /// How many nodes to start.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// The first node's RPC port; node i listens on this port + i - 1.
    #[arg(long, default_value_t = 7101)]
    pub base_port: u16,
    /// Where the router listens.
    #[arg(long, env = "RINGUP_ROUTER_LISTEN", default_value = "127.0.0.1:8080")]
    pub router_listen: SocketAddr,
    /// Where the ringup-node and ringup-router binaries are (default: beside this one).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Do not push sample data.
    #[arg(long)]
    pub no_sample: bool,
    /// Plain TCP between the processes instead of mutual TLS (for
    /// measuring what TLS costs; not for real data).
    #[arg(long, env = "RINGUP_INSECURE_NO_TLS")]
    pub insecure_no_tls: bool,
    /// Store values in clear instead of sealed under `data-keys` (for
    /// measuring what encryption costs; not for real data).
    #[arg(long, env = "RINGUP_INSECURE_NO_ENCRYPTION")]
    pub insecure_no_encryption: bool,
    /// Serve the router's API over HTTPS, with a certificate for 127.0.0.1
    /// and localhost from the cluster's CA (`certs/ca.pem` verifies it).
    #[arg(long)]
    pub https: bool,
}

/// Where every process of a local cluster listens and keeps its files.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The cluster's directory.
    pub dir: PathBuf,
    /// Where the binaries are.
    pub bin_dir: PathBuf,
    /// The nodes' RPC addresses; node `i + 1` listens on `nodes[i]`.
    pub nodes: Vec<SocketAddr>,
    /// The router's HTTP address.
    pub router: SocketAddr,
    /// The ring size of a fresh cluster; the nodes' default when none.
    pub partitions: Option<u32>,
    /// More flags for every node.
    pub node_args: Vec<String>,
    /// More flags for the router.
    pub router_args: Vec<String>,
    /// Mutual TLS on the internal RPC, with certificates made in `certs/`
    /// (plain TCP when false).
    pub rpc_tls: bool,
    /// Encryption at rest under the key file `data-keys` (made if missing;
    /// values in clear when false).
    pub encryption: bool,
    /// The router serves HTTPS, with a certificate for 127.0.0.1 and
    /// localhost from the cluster's CA (`certs/api.pem`).
    pub https: bool,
}

impl Layout {
    /// The directory holding the running binary.
    pub fn own_bin_dir() -> anyhow::Result<PathBuf> {
        let exe = std::env::current_exe().context("cannot find this program's path")?;
        Ok(exe.parent().context("this program has no directory")?.to_path_buf())
    }

    /// The router's base URL.
    pub fn router_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.router)
    }

    /// An HTTP client of the router sending `token`, trusting the cluster's
    /// CA when the router serves HTTPS.
    pub fn http_client(&self, token: Option<&str>, timeout: Option<Duration>) -> anyhow::Result<reqwest::Client> {
        let ca = match self.https {
            true => Some(self.api_certificate()?.ca),
            false => None,
        };
        super::token::client_trusting(token, timeout, ca.as_deref())
    }

    /// The router's HTTPS certificate, made if missing: for 127.0.0.1 and
    /// localhost, from the cluster's CA.
    fn api_certificate(&self) -> anyhow::Result<ringup_rpc::TlsFiles> {
        let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
        Ok(certs::ensure(&self.certs_dir(), "api", certs::Kind::Server, &hosts)?.0)
    }

    /// Where the CA and every process's certificate are.
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }

    /// The TLS flags of a process, its certificate made if missing; none
    /// without [`Self::rpc_tls`].
    fn tls_flags(&self, name: &str, kind: certs::Kind) -> anyhow::Result<Vec<String>> {
        if !self.rpc_tls {
            return Ok(vec!["--insecure-no-tls".into()]);
        }
        let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
        let (files, _) = certs::ensure(&self.certs_dir(), name, kind, &hosts)?;
        Ok([("--tls-ca", files.ca), ("--tls-cert", files.cert), ("--tls-key", files.key)]
            .into_iter()
            .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
            .collect())
    }

    /// The nodes' data key file.
    pub fn data_key_file(&self) -> PathBuf {
        self.dir.join("data-keys")
    }

    /// The encryption flags of a node, the key file made if missing.
    fn encryption_flags(&self) -> anyhow::Result<Vec<String>> {
        if !self.encryption {
            return Ok(vec!["--insecure-no-encryption".into()]);
        }
        let file = self.data_key_file();
        if !file.exists() {
            super::key::add_key(&file)?;
        }
        Ok(vec!["--data-key-file".into(), file.display().to_string()])
    }

    /// What a tool speaking to the nodes directly dials with: a client
    /// certificate of the cluster's CA, or plain TCP.
    pub fn client_tls(&self) -> anyhow::Result<Option<ringup_rpc::Tls>> {
        if !self.rpc_tls {
            return Ok(None);
        }
        let (files, _) = certs::ensure(&self.certs_dir(), "cli", certs::Kind::Client, &[])?;
        Ok(Some(ringup_rpc::Tls::load(files)?))
    }

    /// The file holding the cluster's root admin token.
    pub fn admin_token_file(&self) -> PathBuf {
        self.dir.join(super::token::ADMIN_TOKEN_FILE)
    }

    /// The cluster's root admin token: read from [`Self::admin_token_file`],
    /// or made and written there (readable by its owner only) the first time.
    pub fn admin_token(&self) -> anyhow::Result<String> {
        super::token::ensure_root_token(&self.admin_token_file())
    }

    /// The command that starts node `id` (1-based) at its usual address.
    pub fn node(&self, id: usize) -> anyhow::Result<Command> {
        self.node_at(id, self.nodes[id - 1])
    }

    /// The command that starts node `id` (1-based) listening on `addr`.
    pub fn node_at(&self, id: usize, addr: SocketAddr) -> anyhow::Result<Command> {
        let initial: Vec<String> = self.nodes.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let mut cmd = Command::new(self.bin_dir.join("ringup-node"));
        cmd.arg("--id").arg(id.to_string());
        cmd.arg("--listen").arg(addr.to_string());
        cmd.arg("--data-dir").arg(self.dir.join(format!("node-{id}")));
        cmd.arg("--initial-nodes").arg(initial.join(","));
        if let Some(partitions) = self.partitions {
            cmd.arg("--partitions").arg(partitions.to_string());
        }
        cmd.args(self.tls_flags(&format!("node-{id}"), certs::Kind::Node)?);
        cmd.args(self.encryption_flags()?);
        cmd.args(&self.node_args);
        Ok(cmd)
    }

    /// The command that starts a node that waits to be added: no id, no
    /// initial nodes, data in `node-{name}`.
    pub fn waiting_node(&self, name: usize, addr: SocketAddr) -> anyhow::Result<Command> {
        let mut cmd = Command::new(self.bin_dir.join("ringup-node"));
        cmd.arg("--listen").arg(addr.to_string());
        cmd.arg("--data-dir").arg(self.dir.join(format!("node-{name}")));
        cmd.args(self.tls_flags(&format!("node-{name}"), certs::Kind::Node)?);
        cmd.args(self.encryption_flags()?);
        cmd.args(&self.node_args);
        Ok(cmd)
    }

    /// The command that starts the router.
    pub fn router(&self) -> anyhow::Result<Command> {
        let seeds: Vec<String> = self.nodes.iter().map(ToString::to_string).collect();
        let mut cmd = Command::new(self.bin_dir.join("ringup-router"));
        cmd.arg("--listen").arg(self.router.to_string());
        cmd.arg("--nodes").arg(seeds.join(","));
        cmd.arg("--admin-token-file").arg(self.admin_token_file());
        cmd.args(self.tls_flags("router", certs::Kind::Client)?);
        if self.https {
            let files = self.api_certificate()?;
            cmd.arg("--http-tls-cert").arg(files.cert).arg("--http-tls-key").arg(files.key);
        }
        cmd.args(&self.router_args);
        Ok(cmd)
    }
}

/// One running process with its log file.
pub struct Process {
    /// A name for messages: `node-2`, `router`.
    pub name: String,
    log: PathBuf,
    child: Child,
}

impl Process {
    /// Starts `cmd` with stdin closed and its output appended to `log`.
    pub fn start(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("cannot start {name}: {:?}", cmd.as_std().get_program()))?;
        Ok(Self { name: name.to_string(), log: log.to_path_buf(), child })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether it has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `signal` to the process, while it runs (it is not reaped
    /// before it exits, so its pid is still its own).
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// SIGKILL, then reaps it.
    pub async fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait().await;
    }

    /// SIGTERM, then waits up to `grace` before SIGKILL. True if it stopped
    /// on its own.
    pub async fn stop(&mut self, grace: Duration) -> bool {
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(_) => true,
            Err(_) => {
                self.kill().await;
                false
            }
        }
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Polls `/readyz` until the router answers 200, or fails after `timeout`,
/// or as soon as one of `watch` exits.
pub async fn wait_ready(
    client: &reqwest::Client,
    router_url: &str,
    watch: &mut [&mut Process],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = client.get(format!("{router_url}/readyz")).timeout(Duration::from_secs(1)).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        for p in watch.iter_mut() {
            if let Some(status) = p.exited() {
                bail!("{} exited ({status}) before the cluster was ready; its log ends:\n{}", p.name, p.log_tail(20));
            }
        }
        if Instant::now() > deadline {
            bail!("the router at {router_url} was not ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `ringup local`.
pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let layout = Layout {
        dir: args.dir.canonicalize()?,
        bin_dir: match &args.bin_dir {
            Some(dir) => dir.clone(),
            None => Layout::own_bin_dir()?,
        },
        nodes: (0..args.nodes).map(|i| SocketAddr::from(([127, 0, 0, 1], args.base_port + i as u16))).collect(),
        router: args.router_listen,
        node_args: Vec::new(),
        router_args: Vec::new(),
        partitions: None,
        rpc_tls: !args.insecure_no_tls,
        encryption: !args.insecure_no_encryption,
        https: args.https,
    };
    let token = layout.admin_token()?;
    let http = layout.http_client(Some(&token), Some(Duration::from_secs(30)))?;
    // Listening before any process starts: a SIGTERM while the cluster is
    // still starting stops it too, instead of killing this process and
    // leaving the nodes and the router running.
    let shutdown = ringup_process::listen_for_shutdown().context("cannot listen for SIGTERM")?;
    tokio::pin!(shutdown);
    let mut nodes = (1..=args.nodes)
        .map(|id| Process::start(&format!("node-{id}"), layout.node(id)?, &layout.dir.join(format!("node-{id}.log"))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut router = Process::start("router", layout.router()?, &layout.dir.join("router.log"))?;
    println!("starting {} nodes and a router in {} ...", args.nodes, layout.dir.display());

    let started = {
        let mut watched: Vec<&mut Process> = nodes.iter_mut().chain(std::iter::once(&mut router)).collect();
        let start = async {
            wait_ready(&http, &layout.router_url(), &mut watched, READY_TIMEOUT).await?;
            show(&layout, &http, !args.no_sample).await
        };
        tokio::select! {
            shown = start => Some(shown),
            () = &mut shutdown => None,
        }
    };
    match started {
        Some(Ok(())) => {
            println!("Press Ctrl-C (or send SIGTERM) to stop.");
            shutdown.await;
        }
        Some(Err(e)) => {
            stop_all(router, nodes).await;
            return Err(e);
        }
        None => {}
    }
    println!("stopping ...");
    stop_all(router, nodes).await;
    println!("stopped");
    Ok(())
}

/// Pushes sample data and prints how to use the cluster and its status.
async fn show(layout: &Layout, http: &reqwest::Client, sample: bool) -> anyhow::Result<()> {
    let url = layout.router_url();
    if sample {
        let written = push_sample(http, &url).await?;
        println!("pushed {written} sample records for 3 shops into collection \"sales\"");
    }
    println!();
    println!("ringup is running");
    println!("  router:  {url}");
    for (i, addr) in layout.nodes.iter().enumerate() {
        println!("  node {}:  {addr}  (data {}/node-{})", i + 1, layout.dir.display(), i + 1);
    }
    println!("  logs:    {}/*.log", layout.dir.display());
    println!("  admin token: {}  (in {})", layout.admin_token()?, layout.admin_token_file().display());
    println!();
    println!("Every /v1 request needs a token. Try:");
    println!("  export RINGUP_TOKEN=$(cat {})", layout.admin_token_file().display());
    let auth = match layout.https {
        true => format!(
            "--cacert {} -H \"authorization: Bearer $RINGUP_TOKEN\"",
            layout.certs_dir().join("ca.pem").display()
        ),
        false => "-H \"authorization: Bearer $RINGUP_TOKEN\"".to_string(),
    };
    if layout.https {
        println!("  export RINGUP_CA_FILE={}   # for the ringup commands", layout.certs_dir().join("ca.pem").display());
    }
    println!(
        "  curl -s {auth} -X POST {url}/v1/shops/demo-shop/sales -H 'content-type: application/json' \\\n    -d '[{{\"id\":\"o-1\",\"amount\":12.5,\"sku\":\"A-1\"}},{{\"id\":\"o-2\",\"amount\":3,\"sku\":\"B-7\"}}]'"
    );
    println!("  curl -s {auth} {url}/v1/shops/demo-shop/sales/o-1");
    println!("  curl -s {auth} '{url}/v1/shops/demo-shop/sales?limit=10'");
    println!("  curl -s {auth} {url}/v1/shops/demo-shop/sales/_count");
    println!("  curl -s {auth} -X DELETE {url}/v1/shops/demo-shop/sales/o-2");
    println!("  curl -s {auth} {url}/v1/cluster");
    println!("  ringup token create --role shop --shop demo-shop   # a token for one shop");
    println!();
    println!("$ ringup status");
    print!("{}", status::render(&all_live(http, &url, LIVE_TIMEOUT).await?));
    Ok(())
}

/// The cluster status once the router sees every node live, or as it is
/// after `timeout`.
async fn all_live(http: &reqwest::Client, router_url: &str, timeout: Duration) -> anyhow::Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let cluster = status::fetch_with(http, router_url).await?;
        let nodes = cluster["nodes"].as_array().cloned().unwrap_or_default();
        if nodes.iter().all(|n| n["live"] == true) || Instant::now() > deadline {
            return Ok(cluster);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes a few sales for a few shops; returns how many were acknowledged.
pub async fn push_sample(client: &reqwest::Client, router_url: &str) -> anyhow::Result<usize> {
    let mut written = 0;
    for shop in ["shop-amsterdam", "shop-berlin", "shop-lisbon"] {
        let batch: Vec<Value> = (1..=10)
            .map(|i| json!({"id": format!("sale-{i:03}"), "amount": i * 5, "sku": format!("SKU-{}", i % 4), "paid": i % 3 != 0}))
            .collect();
        let response = client
            .post(format!("{router_url}/v1/shops/{shop}/sales"))
            .json(&batch)
            .send()
            .await
            .context("cannot reach the router")?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("sample write for {shop} failed with {status}: {body}");
        }
        written += body["written"].as_u64().unwrap_or(0) as usize;
    }
    Ok(written)
}

/// Stops the router, then the nodes.
async fn stop_all(mut router: Process, nodes: Vec<Process>) {
    if !router.stop(STOP_GRACE).await {
        eprintln!("router did not stop within {STOP_GRACE:?}; killed");
    }
    let stops = nodes.into_iter().map(|mut node| async move {
        if !node.stop(STOP_GRACE).await {
            eprintln!("{} did not stop within {STOP_GRACE:?}; killed", node.name);
        }
    });
    futures::future::join_all(stops).await;
}
