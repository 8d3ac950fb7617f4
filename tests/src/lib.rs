//! A harness for end-to-end tests: a ringup cluster of real `ringup-node`
//! and `ringup-router` processes on loopback, in a temporary directory,
//! with the means to kill, stop and restart its processes.
//!
//! The binaries must be built first (`cargo build --bins`, which the test
//! script does); they are looked up beside the test executable.

pub mod docker;
pub mod healing;
pub mod load;
pub mod membership;
pub mod reports;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use ringup_cli::local::{Layout, Process, wait_ready};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::Mutex;

/// Flags that the harness turns into the layout's settings: plain TCP for
/// every process, values in clear on every node (node flags), the API over
/// HTTPS (a router flag).
const HARNESS_FLAGS: [&str; 3] = ["--insecure-no-tls", "--insecure-no-encryption", "--https"];

/// How long a stopped process gets before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long a cluster gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running cluster of real processes. Shared by reference: its processes
/// can be killed and restarted while other tasks send it traffic.
pub struct TestCluster {
    /// Ports and directories.
    pub layout: Layout,
    nodes: Mutex<Vec<Option<Process>>>,
    /// Where each node listens now; nodes can move.
    addrs: Mutex<Vec<SocketAddr>>,
    router: Mutex<Option<Process>>,
    http: reqwest::Client,
    /// What the harness dials nodes with: a client certificate of the
    /// cluster's CA.
    tls: Option<ringup_rpc::Tls>,
    _dir: TempDir,
}

impl TestCluster {
    /// Starts `n` nodes and a router, and waits until the router is ready.
    pub async fn start(n: usize) -> Self {
        Self::start_sized(n, None).await
    }

    /// [`Self::start`] with a ring of `partitions` (the default when none).
    pub async fn start_sized(n: usize, partitions: Option<u32>) -> Self {
        Self::start_with(n, partitions, &[]).await
    }

    /// [`Self::start_sized`], every node given the flags `node_args` too.
    pub async fn start_with(n: usize, partitions: Option<u32>, node_args: &[&str]) -> Self {
        Self::start_with_router(n, partitions, node_args, &[]).await
    }

    /// [`Self::start_with`], the router given the flags `router_args`.
    pub async fn start_with_router(
        n: usize,
        partitions: Option<u32>,
        node_args: &[&str],
        router_args: &[&str],
    ) -> Self {
        let dir = tempfile::Builder::new().prefix("ringup-e2e-").tempdir().expect("cannot make a temp dir");
        let mut ports = free_ports(n + 1);
        let router = ports.pop().expect("n + 1 ports");
        let layout = Layout {
            dir: dir.path().to_path_buf(),
            bin_dir: bin_dir(),
            nodes: ports.into_iter().map(|p| SocketAddr::from(([127, 0, 0, 1], p))).collect(),
            router: SocketAddr::from(([127, 0, 0, 1], router)),
            partitions,
            node_args: node_args.iter().filter(|a| !HARNESS_FLAGS.contains(a)).map(ToString::to_string).collect(),
            router_args: router_args.iter().filter(|a| !HARNESS_FLAGS.contains(a)).map(ToString::to_string).collect(),
            rpc_tls: !node_args.contains(&"--insecure-no-tls"),
            encryption: !node_args.contains(&"--insecure-no-encryption"),
            https: router_args.contains(&"--https"),
        };
        Self::start_layout(layout, dir).await
    }

    /// Starts again the cluster of an earlier run that `dir` holds (its
    /// data, admin token and data key file), on the addresses it ran on:
    /// plain TCP between the processes, values sealed, the API over HTTP.
    pub async fn start_in(dir: TempDir, nodes: Vec<SocketAddr>, router: SocketAddr) -> Self {
        let layout = Layout {
            dir: dir.path().to_path_buf(),
            bin_dir: bin_dir(),
            nodes,
            router,
            partitions: None,
            node_args: Vec::new(),
            router_args: Vec::new(),
            rpc_tls: false,
            encryption: true,
            https: false,
        };
        Self::start_layout(layout, dir).await
    }

    async fn start_layout(layout: Layout, dir: TempDir) -> Self {
        let token = layout.admin_token().expect("cannot write the admin token");
        let http = layout.http_client(Some(&token), Some(Duration::from_secs(30))).expect("http client");
        let nodes = Mutex::new((0..layout.nodes.len()).map(|_| None).collect());
        let addrs = Mutex::new(layout.nodes.clone());
        let tls = layout.client_tls().expect("cannot make the harness's client certificate");
        let cluster = Self { layout, nodes, addrs, router: Mutex::new(None), http, tls, _dir: dir };
        cluster.start_all().await;
        cluster
    }

    /// Starts every process that is not running and waits until the router
    /// has a map and sees every node live.
    pub async fn start_all(&self) {
        for id in 1..=self.layout.nodes.len() {
            if self.nodes.lock().await[id - 1].is_none() {
                self.start_node(id).await;
            }
        }
        let mut router = self.router.lock().await;
        if router.is_none() {
            let log = self.layout.dir.join("router.log");
            let command = self.layout.router().expect("cannot make the router's certificate");
            *router = Some(Process::start("router", command, &log).expect("cannot start the router"));
        }
        drop(router);
        self.wait_ready().await;
        for id in 1..=self.layout.nodes.len() {
            self.wait_node_live(id).await;
        }
    }

    /// Waits until the router has a map.
    pub async fn wait_ready(&self) {
        let url = self.layout.router_url();
        let mut nodes = self.nodes.lock().await;
        let mut router = self.router.lock().await;
        let mut watched: Vec<&mut Process> = nodes.iter_mut().flatten().chain(router.as_mut()).collect();
        if let Err(e) = wait_ready(&self.http, &url, &mut watched, READY_TIMEOUT).await {
            drop(watched);
            drop((nodes, router));
            panic!("the cluster did not become ready: {e:#}\n{}", self.logs().await);
        }
    }

    /// Starts node `id` (1-based) on its usual port and data directory. A
    /// node past the initial ones starts waiting to be added (or, once
    /// added, with the id it was given).
    pub async fn start_node(&self, id: usize) {
        let log = self.layout.dir.join(format!("node-{id}.log"));
        let addr = self.addrs.lock().await[id - 1];
        let command = if id <= self.layout.nodes.len() {
            self.layout.node_at(id, addr)
        } else {
            self.layout.waiting_node(id, addr)
        };
        let command = command.expect("cannot make the node's certificate");
        let process = Process::start(&format!("node-{id}"), command, &log).expect("cannot start a node");
        self.nodes.lock().await[id - 1] = Some(process);
    }

    /// Starts one more node, waiting to be added, on a free port; returns
    /// its number in this harness and its RPC address.
    pub async fn start_waiting_node(&self) -> (usize, SocketAddr) {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_ports(1)[0]));
        let id = {
            let mut nodes = self.nodes.lock().await;
            nodes.push(None);
            self.addrs.lock().await.push(addr);
            nodes.len()
        };
        self.start_node(id).await;
        let client = self.rpc(addr.to_string());
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        while !matches!(
            client.call(ringup_proto::rpc::Request::Hello, Duration::from_secs(1)).await,
            Ok(ringup_proto::rpc::Response::Hello { .. })
        ) {
            assert!(std::time::Instant::now() < deadline, "node {id} does not answer:\n{}", self.logs().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (id, addr)
    }

    /// SIGTERMs node `id`; returns whether it stopped in time.
    pub async fn stop_node(&self, id: usize) -> bool {
        let node = self.nodes.lock().await[id - 1].take();
        node.unwrap_or_else(|| panic!("node {id} is not running")).stop(STOP_GRACE).await
    }

    /// How many node processes the harness knows, running or not.
    pub async fn node_count(&self) -> usize {
        self.nodes.lock().await.len()
    }

    /// Waits until the router sees node `id` answer its pings.
    pub async fn wait_node_live(&self, id: usize) {
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            let (_, cluster) = self.get("/v1/cluster").await;
            let live = cluster["nodes"].as_array().into_iter().flatten().any(|n| n["id"] == id && n["live"] == true);
            if live {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "node {id} did not come back:\n{}", self.logs().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until node `id` itself answers pings with its map: unlike the
    /// router's liveness, which may still be from before a restart.
    pub async fn wait_node_serving(&self, id: usize) {
        let client = self.rpc(self.node_addr(id).await.to_string());
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            let answer = client.call(ringup_proto::rpc::Request::Ping, Duration::from_secs(1)).await;
            if matches!(answer, Ok(ringup_proto::rpc::Response::Pong { epoch, .. }) if epoch > 0) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "node {id} does not serve:\n{}", self.logs().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops node `id` with SIGTERM and starts it again on a new port, with
    /// the same data; returns the new address.
    pub async fn move_node(&self, id: usize) -> SocketAddr {
        let node = self.nodes.lock().await[id - 1].take();
        assert!(node.unwrap_or_else(|| panic!("node {id} is not running")).stop(STOP_GRACE).await);
        let addr = SocketAddr::from(([127, 0, 0, 1], free_ports(1)[0]));
        self.addrs.lock().await[id - 1] = addr;
        self.start_node(id).await;
        addr
    }

    /// SIGKILLs node `id`.
    pub async fn kill_node(&self, id: usize) {
        let node = self.nodes.lock().await[id - 1].take();
        node.unwrap_or_else(|| panic!("node {id} is not running")).kill().await;
    }

    /// SIGTERMs every process, router first; returns the names of those
    /// that had to be killed.
    pub async fn stop_all(&self) -> Vec<String> {
        let mut processes: Vec<Process> = self.router.lock().await.take().into_iter().collect();
        processes.extend(self.nodes.lock().await.iter_mut().filter_map(Option::take));
        let mut killed = Vec::new();
        for mut process in processes {
            if !process.stop(STOP_GRACE).await {
                killed.push(process.name.clone());
            }
        }
        killed
    }

    /// The HTTP client, for requests that need more than [`Self::call`].
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// An RPC client of the node at `addr`, with the harness's certificate.
    pub fn rpc(&self, addr: impl Into<String>) -> ringup_rpc::Client {
        ringup_rpc::Client::with_tls(addr, self.tls.clone())
    }

    /// The root admin token the router was started with.
    pub fn admin_token(&self) -> String {
        self.layout.admin_token().expect("the admin token was written at start")
    }

    /// The router's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.layout.router_url())
    }

    /// Sends a request and returns the status and the JSON body (`Null` if
    /// the body is empty or not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        send(self.http.request(method, self.url(path)), content_type, body).await
    }

    /// GET as JSON.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None, Vec::new()).await
    }

    /// POST a JSON value.
    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some("application/json"), body.to_string().into_bytes()).await
    }

    /// The peak resident memory (`VmHWM`) of every running process so far,
    /// in MiB, by name.
    pub async fn peak_rss_mib(&self) -> Vec<(String, u64)> {
        self.each_process(|p| Some((p.name.clone(), peak_rss_kib(p.pid()?)? / 1024))).await
    }

    /// The harness's client side of the nodes' mutual TLS, if they use it.
    pub fn rpc_tls(&self) -> Option<&ringup_rpc::Tls> {
        self.tls.as_ref()
    }

    /// How many sockets node `id`'s process holds open now (0 when it is
    /// not running).
    pub async fn open_sockets(&self, id: usize) -> usize {
        let nodes = self.nodes.lock().await;
        let Some(pid) = nodes[id - 1].as_ref().and_then(Process::pid) else { return 0 };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
        fds.flatten()
            .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")))
            .count()
    }

    /// What `f` makes of each running process (nodes, then the router),
    /// leaving out those it gives nothing for.
    async fn each_process<T>(&self, f: impl FnMut(&Process) -> Option<T>) -> Vec<T> {
        let nodes = self.nodes.lock().await;
        let router = self.router.lock().await;
        nodes.iter().flatten().chain(router.as_ref()).filter_map(f).collect()
    }

    /// The RPC address node `id` listens on now.
    pub async fn node_addr(&self, id: usize) -> SocketAddr {
        self.addrs.lock().await[id - 1]
    }

    /// The tail of every process's log, for failure messages.
    pub async fn logs(&self) -> String {
        self.each_process(|p| Some(format!("--- {} ---\n{}\n", p.name, p.log_tail(30)))).await.concat()
    }
}

/// Sends a request; returns the status and the JSON body (`Null` if empty
/// or not JSON).
pub async fn send(request: reqwest::RequestBuilder, content_type: Option<&str>, body: Vec<u8>) -> (StatusCode, Value) {
    let mut request = request.body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let bytes = response.bytes().await.unwrap_or_default();
            (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
        }
        Err(e) => panic!("request failed: {e}"),
    }
}

/// A process's peak resident memory in KiB, from `/proc/PID/status`.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The directory of the ringup binaries: the cargo profile directory that
/// holds this test executable (`target/<profile>/deps/<test>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps").to_path_buf();
    for bin in ["ringup-node", "ringup-router"] {
        assert!(dir.join(bin).exists(), "{} is missing: run `cargo build --bins` first", dir.join(bin).display());
    }
    dir
}

/// `n` distinct free loopback ports.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("cannot bind a loopback port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("bound").port()).collect()
}
