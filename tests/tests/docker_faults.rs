//! Faults across real containers: the cluster from `docker-compose.yml`
//! (three node containers and a router) takes QUORUM batches from 100 shops
//! while, in turn, a node container is SIGKILLed, cut off the network,
//! frozen, all three are restarted one at a time, and one node's volume is
//! deleted (it comes back empty and is refilled from its peers). After
//! each fault every acknowledged record is read back at ALL with its
//! newest value.
//!
//! With one node out at a time, no QUORUM write may fail and no
//! acknowledged write may be lost. The writers act as shops' clients do: a
//! batch answered `503` is sent again after its `Retry-After`, at most
//! twice, and the report counts those retries (on 2 cores a node coming
//! back can hold a write past the router's timeout now and then). Without a Docker daemon the test fails,
//! saying why.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringup_tests::docker::{self, DockerCluster};
use ringup_tests::load::{Ledger, Load, LoadSpec, lost_records};
use tokio::sync::Mutex;

const SPEC: LoadSpec = LoadSpec { shops: 100, writers: 20, batch: 20, level: "quorum", read_back: false };
/// Load before each fault.
const BEFORE: Duration = Duration::from_secs(2);
/// How long a node stays killed, cut off or frozen (at least until the
/// router notices).
const OUT_FOR: Duration = Duration::from_secs(6);
/// Load after the node serves again.
const AFTER: Duration = Duration::from_secs(3);

/// One fault, applied to one node or, for the rolling restart, to all.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill(&'static str),
    Disconnect(&'static str),
    Pause(&'static str),
    RollingRestart,
    /// Stop, delete the volume, start again empty.
    Wipe(&'static str),
}

/// What one fault cost.
struct Report {
    fault: String,
    batches: usize,
    failures: Vec<String>,
    /// Batches answered `503` and sent again (they count as failures only
    /// when the retries fail too).
    retried: usize,
    acked_writes: usize,
    lost: Vec<String>,
    /// Per node put back: how long until it served again.
    back_after: Vec<(&'static str, Duration)>,
}

impl Report {
    fn line(&self) -> String {
        let rate = self.failures.len() as f64 / self.batches.max(1) as f64 * 100.0;
        let back: Vec<String> = self.back_after.iter().map(|(n, d)| format!("{n} {:.2}s", d.as_secs_f64())).collect();
        format!(
            "{:<34} batches {:>5}  acked record writes {:>6}  503s retried {}  QUORUM failures {} ({rate:.2}%)  lost {}  served again after: {}",
            self.fault,
            self.batches,
            self.acked_writes,
            self.retried,
            self.failures.len(),
            self.lost.len(),
            back.join(", ")
        )
    }
}

/// Applies `fault` and puts things right again; returns, per node put
/// back, the time from putting it back to its serving again.
async fn apply(cluster: &DockerCluster, fault: Fault) -> Vec<(&'static str, Duration)> {
    let back = |node: &'static str| async move {
        let took = cluster.wait_serving(node).await;
        cluster.wait_live(node).await;
        (node, took)
    };
    // Holds a node out: the router must notice, so the fault is real.
    let out = |node: &'static str| async move {
        let start = Instant::now();
        cluster.wait_out(node).await;
        tokio::time::sleep(OUT_FOR.saturating_sub(start.elapsed())).await;
    };
    match fault {
        Fault::Kill(node) => {
            cluster.kill(node).await;
            out(node).await;
            cluster.start(node).await;
            vec![back(node).await]
        }
        Fault::Disconnect(node) => {
            cluster.disconnect(node).await;
            out(node).await;
            cluster.connect(node).await;
            vec![back(node).await]
        }
        Fault::Pause(node) => {
            cluster.pause(node).await;
            out(node).await;
            cluster.unpause(node).await;
            vec![back(node).await]
        }
        Fault::Wipe(node) => {
            cluster.wipe(node).await;
            // Served again once refilled from its peers.
            vec![(node, cluster.wait_refilled(node).await)]
        }
        Fault::RollingRestart => {
            let mut times = Vec::new();
            for node in ["node1", "node2", "node3"] {
                // Timed from the restart order: SIGTERM, stop, start, serve.
                let start = Instant::now();
                cluster.restart(node).await;
                let (node, _) = back(node).await;
                times.push((node, start.elapsed()));
            }
            times
        }
    }
}

/// Runs the load through one fault, then reads every acknowledged record
/// back at ALL.
async fn phase(cluster: &DockerCluster, http: &reqwest::Client, ledger: &Arc<Mutex<Ledger>>, fault: Fault) -> Report {
    let (batches, failures, retried, acked_writes) = {
        let l = ledger.lock().await;
        (l.batches, l.failures.len(), l.retried, l.acked_writes)
    };
    let load = Load::start(http, &cluster.router_url, SPEC, ledger);
    tokio::time::sleep(BEFORE).await;
    let back_after = apply(cluster, fault).await;
    tokio::time::sleep(AFTER).await;
    load.stop().await;
    let l = ledger.lock().await;
    let lost = lost_records(http, &cluster.router_url, &l.acked, "all").await;
    let fault = match fault {
        Fault::Kill(n) => format!("docker kill {n}, then start"),
        Fault::Disconnect(n) => format!("network disconnect {n}, reconnect"),
        Fault::Pause(n) => format!("docker pause {n}, unpause"),
        Fault::RollingRestart => "rolling restart node1..node3".to_string(),
        Fault::Wipe(n) => format!("wipe {n}'s volume, start it empty"),
    };
    Report {
        fault,
        batches: l.batches - batches,
        failures: l.failures[failures..].to_vec(),
        retried: l.retried - retried,
        acked_writes: l.acked_writes - acked_writes,
        lost,
        back_after,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_across_containers_lose_no_acknowledged_write() {
    if let Some(reason) = docker::unavailable().await {
        panic!("docker_faults needs Docker: {reason}");
    }
    let cluster = DockerCluster::up(&ringup_tests::bin_dir()).await;
    let http = cluster.http().clone();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let faults = [
        Fault::Kill("node1"),
        Fault::Disconnect("node2"),
        Fault::Pause("node3"),
        Fault::RollingRestart,
        Fault::Wipe("node2"),
    ];
    let mut reports = Vec::new();
    for fault in faults {
        let report = phase(&cluster, &http, &ledger, fault).await;
        eprintln!("{}", report.line());
        reports.push(report);
    }
    let records = ledger.lock().await.acked.len();
    eprintln!("{records} distinct records from {} shops, each read back at ALL after every fault", SPEC.shops);

    let mut problems = Vec::new();
    for r in &reports {
        if !r.failures.is_empty() {
            problems.push(format!(
                "{}: QUORUM writes failed, e.g.:\n{}",
                r.fault,
                r.failures[..r.failures.len().min(5)].join("\n")
            ));
        }
        if !r.lost.is_empty() {
            problems.push(format!(
                "{}: acknowledged writes lost, e.g.:\n{}",
                r.fault,
                r.lost[..r.lost.len().min(5)].join("\n")
            ));
        }
    }
    assert!(problems.is_empty(), "{}\n{}", problems.join("\n"), cluster.logs().await);
}
