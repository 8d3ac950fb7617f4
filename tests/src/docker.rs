//! A ringup cluster in Docker containers, run from the project's
//! `docker-compose.yml` under its own project name, and the means to break
//! its nodes: kill, cut off the network, freeze, restart.
//!
//! The images are built from the binaries beside the test executable, so
//! the containers run the code under test.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use ringup_cli::health;
use serde_json::Value;
use tokio::process::Command;

/// The compose project the tests use; a leftover of an earlier run is
/// taken down first.
const PROJECT: &str = "ringup-faults";
/// The image tag the tests build and use.
const TAG: &str = "e2e";
/// How long a node or the cluster gets to come up.
const UP_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the container tests cannot run here, if they cannot: no docker
/// command, no daemon answering, or no compose.
pub async fn unavailable() -> Option<String> {
    match Command::new("docker").arg("info").output().await {
        Err(e) => return Some(format!("the docker command cannot run ({e})")),
        Ok(out) if !out.status.success() => {
            return Some(format!("no Docker daemon answers: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(_) => {}
    }
    compose_command().await.is_none().then(|| "neither `docker compose` nor `docker-compose` is installed".into())
}

/// `docker compose` if the plugin works, else the standalone
/// `docker-compose`.
async fn compose_command() -> Option<Vec<String>> {
    for candidate in [&["docker", "compose"][..], &["docker-compose"][..]] {
        let ok = Command::new(candidate[0]).args(&candidate[1..]).arg("version").output().await;
        if ok.is_ok_and(|out| out.status.success()) {
            return Some(candidate.iter().map(ToString::to_string).collect());
        }
    }
    None
}

/// The project's top directory.
fn top() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate is in the workspace").to_path_buf()
}

/// Runs a command; panics with its output if it fails.
async fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().await.unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `docker` with `args`; returns what it printed.
async fn docker(args: &[&str]) -> String {
    let out = run(Command::new("docker").args(args)).await;
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Three nodes and a router from `docker-compose.yml`, taken down (with
/// their volumes) when dropped.
pub struct DockerCluster {
    compose: Vec<String>,
    /// The router's URL, published on a loopback port of its own.
    pub router_url: String,
    /// The loopback port the router is published on.
    port: u16,
    /// The compose network the containers share.
    network: String,
    http: reqwest::Client,
    /// The client certificate the `init` service made, to dial nodes.
    tls: Option<ringup_rpc::Tls>,
    /// The admin token and certificates copied out of the `secrets` volume.
    secrets: tempfile::TempDir,
}

impl DockerCluster {
    /// Builds the images from the binaries in `bin_dir`, starts the
    /// cluster and waits until the router sees every node live.
    pub async fn up(bin_dir: &Path) -> Self {
        let compose = compose_command().await.expect("compose is installed (checked by `unavailable`)");
        let script = top().join("scripts/docker-build.sh");
        run(Command::new("bash").arg(script).args(["--tag", TAG, "--bin-dir"]).arg(bin_dir)).await;
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client");
        let secrets = tempfile::Builder::new().prefix("ringup-secrets-").tempdir().expect("a temp dir");
        let router_url = format!("http://127.0.0.1:{port}");
        let network = String::new();
        let mut cluster = Self { compose, router_url, port, network, http, tls: None, secrets };
        cluster.compose_run(&["down", "--volumes", "--remove-orphans"]).await;
        cluster.compose_run(&["up", "-d"]).await;
        // The token and a client certificate, from what `init` made.
        let init = cluster.container("init").await;
        docker(&["cp", &format!("{init}:/secrets/."), &cluster.secrets.path().display().to_string()]).await;
        let token = std::fs::read_to_string(cluster.secrets.path().join("admin-token")).expect("init wrote the token");
        cluster.http =
            ringup_cli::token::client_with(Some(token.trim()), Some(Duration::from_secs(10))).expect("http client");
        let dir = cluster.secrets.path();
        let files =
            ringup_rpc::TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("cli.pem"), key: dir.join("cli.key") };
        cluster.tls = Some(ringup_rpc::Tls::load(files).expect("init made a client certificate"));
        let node1 = cluster.container("node1").await;
        let format = "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}";
        cluster.network = docker(&["inspect", "--format", format, &node1]).await;
        for node in 1..=3 {
            cluster.wait_live(&format!("node{node}")).await;
        }
        cluster
    }

    /// An HTTP client sending the cluster's admin token.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A compose command with the project's file, name, tag and port.
    fn compose_std(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.compose[0]);
        cmd.args(&self.compose[1..]).arg("--file").arg(top().join("docker-compose.yml"));
        cmd.args(["--project-name", PROJECT]).args(args);
        cmd.env("RINGUP_TAG", TAG).env("RINGUP_HTTP", format!("127.0.0.1:{}", self.port));
        cmd
    }

    fn compose_cmd(&self, args: &[&str]) -> Command {
        Command::from(self.compose_std(args))
    }

    async fn compose_run(&self, args: &[&str]) {
        run(&mut self.compose_cmd(args)).await;
    }

    /// The container id of `service`, running or not.
    pub async fn container(&self, service: &str) -> String {
        let project = format!("label=com.docker.compose.project={PROJECT}");
        let service_label = format!("label=com.docker.compose.service={service}");
        let id = docker(&["ps", "--all", "--quiet", "--filter", &project, "--filter", &service_label]).await;
        assert!(!id.is_empty() && !id.contains('\n'), "{service} should have one container, not {id:?}");
        id
    }

    /// Runs `docker <verb> <args...> <container of service>`.
    async fn on(&self, service: &str, verb: &[&str]) {
        let container = self.container(service).await;
        docker(&[verb, &[container.as_str()]].concat()).await;
    }

    /// SIGKILLs `service`'s container.
    pub async fn kill(&self, service: &str) {
        self.on(service, &["kill", "--signal", "KILL"]).await;
    }

    /// Stops `service`'s container as `docker compose stop` does: SIGTERM,
    /// and SIGKILL only after the grace period.
    pub async fn stop(&self, service: &str) {
        self.on(service, &["stop", "--time", "30"]).await;
    }

    /// Starts `service`'s stopped container.
    pub async fn start(&self, service: &str) {
        self.on(service, &["start"]).await;
    }

    /// Restarts `service`'s container: SIGTERM, then a fresh start.
    pub async fn restart(&self, service: &str) {
        self.on(service, &["restart", "--time", "30"]).await;
    }

    /// Freezes every process of `service`'s container.
    pub async fn pause(&self, service: &str) {
        self.on(service, &["pause"]).await;
    }

    /// Thaws `service`'s container.
    pub async fn unpause(&self, service: &str) {
        self.on(service, &["unpause"]).await;
    }

    /// Cuts `service`'s container off the cluster network.
    pub async fn disconnect(&self, service: &str) {
        self.on(service, &["network", "disconnect", &self.network]).await;
    }

    /// Puts `service`'s container back on the cluster network, under its
    /// service name.
    pub async fn connect(&self, service: &str) {
        self.on(service, &["network", "connect", "--alias", service, &self.network]).await;
    }

    /// Wipes `service`'s disk: stops and removes its container, deletes
    /// its volume, and creates it again, empty, with the same name and id.
    pub async fn wipe(&self, service: &str) {
        self.compose_run(&["rm", "--stop", "--force", service]).await;
        docker(&["volume", "rm", &format!("{PROJECT}_{service}-data")]).await;
        self.compose_run(&["up", "-d", "--no-deps", service]).await;
    }

    /// Waits until the router shows `service` (`nodeN`) live with no refill
    /// left; returns how long that took.
    pub async fn wait_refilled(&self, service: &str) -> Duration {
        let start = Instant::now();
        self.wait_router_shows(service, "live and refilled", |n| n["live"] == true && n["refill"].is_null()).await;
        start.elapsed()
    }

    /// Waits until `service` answers pings with its map, straight at its
    /// container address; returns how long that took.
    pub async fn wait_serving(&self, service: &str) -> Duration {
        let start = Instant::now();
        let container = self.container(service).await;
        loop {
            let format = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}";
            let ip = docker(&["inspect", "--format", format, &container]).await;
            if !ip.is_empty()
                && health::node(&format!("{ip}:7001"), self.tls.clone(), Duration::from_millis(500)).await.is_ok()
            {
                return start.elapsed();
            }
            assert!(start.elapsed() < UP_TIMEOUT, "{service} did not serve again:\n{}", self.logs().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the router sees `service` (`nodeN`) answer its pings.
    pub async fn wait_live(&self, service: &str) {
        self.wait_router_sees(service, true).await;
    }

    /// Waits until the router sees `service` fail its pings: proof that a
    /// fault took effect.
    pub async fn wait_out(&self, service: &str) {
        self.wait_router_sees(service, false).await;
    }

    async fn wait_router_sees(&self, service: &str, live: bool) {
        let seen = if live { "live" } else { "out" };
        self.wait_router_shows(service, seen, |n| n["live"] == live).await;
    }

    /// Waits until `GET /v1/cluster` shows `service` (`nodeN`) as `shows`
    /// says; `what` names it for the failure message.
    async fn wait_router_shows(&self, service: &str, what: &str, shows: impl Fn(&Value) -> bool) {
        let id: u64 = service.trim_start_matches("node").parse().expect("services are named nodeN");
        let start = Instant::now();
        loop {
            let url = format!("{}/v1/cluster", self.router_url);
            let cluster: Value = match self.http.get(&url).send().await {
                Ok(response) => response.json().await.unwrap_or_default(),
                Err(_) => Value::Null,
            };
            let nodes = cluster["nodes"].as_array().cloned().unwrap_or_default();
            if nodes.iter().any(|n| n["id"] == id && shows(n)) {
                return;
            }
            assert!(start.elapsed() < UP_TIMEOUT, "the router does not see {service} {what}:\n{}", self.logs().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The tail of every container's log, for failure messages.
    pub async fn logs(&self) -> String {
        match self.compose_cmd(&["logs", "--no-color", "--tail", "40"]).output().await {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(e) => format!("(no logs: {e})"),
        }
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        let down = ["down", "--volumes", "--remove-orphans", "--timeout", "30"];
        if let Err(e) = self.compose_std(&down).output() {
            eprintln!("cannot take the test cluster down: {e}");
        }
    }
}
