//! The router's Prometheus metrics, served on `GET /metrics` as
//! Prometheus text, or as OpenMetrics text to a scraper that asks for it
//! (every family is listed in `docs/openapi.yaml`).
//!
//! Handlers count requests, their latency and their errors; the
//! coordinator counts its replica calls, speculative asks and read repairs
//! through [`CoordinatorCounters`]; gauges are set from the router's state
//! when the text is rendered, and the nodes' families (`ringup_node_*`)
//! from what each member answers to a stats call at that moment.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use ringup_proto::NodeId;
use ringup_proto::stats::NodeStats;

use crate::admission::Refusal;
pub use exposition::Format;

mod exposition;
mod nodes;

/// Labels of the request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    status: u16,
}

/// Labels of the latency histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    method: &'static str,
    /// The route's path template, `/v1/shops/{shop}/{collection}` say, or
    /// `unmatched`.
    route: String,
    /// `one`, `quorum` or `all` on the records' routes; `none` elsewhere.
    consistency: &'static str,
}

/// Labels of the error counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    status: u16,
    /// The `code` of the JSON error.
    code: &'static str,
}

/// One answered request, as the metrics count it.
#[derive(Debug, Clone)]
pub struct Answered<'a> {
    /// The HTTP method, or `other`.
    pub method: &'static str,
    /// The route's path template, or `unmatched`.
    pub route: &'a str,
    /// The consistency level asked, or `none`.
    pub consistency: &'static str,
    /// The status answered.
    pub status: u16,
    /// The JSON error's code, for an error answer.
    pub error: Option<&'static str>,
    /// Time from arrival to answer.
    pub seconds: f64,
}

/// Labels of the overload counter: `requests` or `bytes`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

/// How one call to a replica ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The replica answered.
    Answered,
    /// The replica answered with an error (a stale epoch, say).
    Refused,
    /// No answer: unreachable, closed or timed out.
    Failed,
}

impl CallOutcome {
    fn label(self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::Refused => "refused",
            CallOutcome::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// How asking a replica to keep a hint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintOutcome {
    /// It keeps it.
    Kept,
    /// Its hints for that replica are over their bound.
    Refused,
    /// No answer, or another error.
    Failed,
}

impl HintOutcome {
    fn label(self) -> &'static str {
        match self {
            HintOutcome::Kept => "kept",
            HintOutcome::Refused => "refused",
            HintOutcome::Failed => "failed",
        }
    }
}

/// What the coordinator counts; cheap to clone, every clone counts into
/// the same metrics.
#[derive(Debug, Clone, Default)]
pub struct CoordinatorCounters {
    calls: Family<OutcomeLabels, Counter>,
    speculative: Counter,
    repairs: Counter,
    hints: Family<OutcomeLabels, Counter>,
}

impl CoordinatorCounters {
    /// Counts one replica call by how it ended.
    pub fn call(&self, outcome: CallOutcome) {
        self.calls.get_or_create(&OutcomeLabels { outcome: outcome.label() }).inc();
    }

    /// Counts replicas a read asked beyond its level's first ones, because
    /// one failed or was slow.
    pub fn speculative(&self, asked: usize) {
        self.speculative.inc_by(asked as u64);
    }

    /// Counts read-repair writes sent to stale replicas.
    pub fn repairs(&self, sent: usize) {
        self.repairs.inc_by(sent as u64);
    }

    /// Counts one hint asked of a replica, by how it ended.
    pub fn hint(&self, outcome: HintOutcome) {
        self.hints.get_or_create(&OutcomeLabels { outcome: outcome.label() }).inc();
    }
}

/// Values read from the router's state when the metrics are rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// The epoch of the map held (0 without one).
    pub epoch: u64,
    /// Members that answered the last ping.
    pub live_nodes: usize,
    /// Data requests admitted and not yet answered.
    pub in_flight_requests: usize,
    /// Body bytes those requests hold.
    pub in_flight_bytes: usize,
}

/// Counters, gauges and histograms, rendered on `GET /metrics`.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    refusals: Family<LimitLabels, Counter>,
    records: Counter,
    coordinator: CoordinatorCounters,
    epoch: Gauge,
    live_nodes: Gauge,
    in_flight_requests: Gauge,
    in_flight_bytes: Gauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ringup_router");
        let requests = Family::<RequestLabels, Counter>::default();
        // 100 µs to about 26 s, doubling.
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1e-4, 2.0, 19))
        });
        let errors = Family::<ErrorLabels, Counter>::default();
        let refusals = Family::<LimitLabels, Counter>::default();
        let coordinator = CoordinatorCounters::default();
        let (records, epoch, live_nodes) = (Counter::default(), Gauge::default(), Gauge::default());
        let (in_flight_requests, in_flight_bytes) = (Gauge::default(), Gauge::default());
        // Every label a counter can take shows from the start, at zero.
        for limit in ["requests", "bytes"] {
            drop(refusals.get_or_create(&LimitLabels { limit }));
        }
        for outcome in [CallOutcome::Answered, CallOutcome::Refused, CallOutcome::Failed] {
            drop(coordinator.calls.get_or_create(&OutcomeLabels { outcome: outcome.label() }));
        }
        for outcome in [HintOutcome::Kept, HintOutcome::Refused, HintOutcome::Failed] {
            drop(coordinator.hints.get_or_create(&OutcomeLabels { outcome: outcome.label() }));
        }
        registry.register("http_requests", "HTTP requests answered, by method and status", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer, by method, route and consistency level",
            latency.clone(),
        );
        registry.register("http_errors", "Error answers, by status and error code", errors.clone());
        registry.register(
            "overload_refusals",
            "Data requests refused with 503 overloaded, by the limit they hit",
            refusals.clone(),
        );
        registry.register("records_written", "Records acknowledged to clients", records.clone());
        let CoordinatorCounters { calls, speculative, repairs, hints } = &coordinator;
        registry.register("replica_calls", "Calls to replicas, by how they ended", calls.clone());
        registry.register(
            "speculative_asks",
            "Replicas a read asked beyond its level because one failed or was slow",
            speculative.clone(),
        );
        registry.register("read_repairs", "Newest values written back to stale replicas by reads", repairs.clone());
        registry.register(
            "hints",
            "Writes a replica missed, handed to a replica that took them to replay, by how that ended",
            hints.clone(),
        );
        registry.register("map_epoch", "Epoch of the cluster map the router holds", epoch.clone());
        registry.register("live_nodes", "Members that answered the last ping", live_nodes.clone());
        registry.register(
            "in_flight_requests",
            "Data requests admitted and not yet answered",
            in_flight_requests.clone(),
        );
        registry.register(
            "in_flight_body_bytes",
            "Body bytes held by the data requests in flight",
            in_flight_bytes.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            errors,
            refusals,
            records,
            coordinator,
            epoch,
            live_nodes,
            in_flight_requests,
            in_flight_bytes,
        }
    }

    /// The counters the coordinator feeds.
    pub fn coordinator(&self) -> CoordinatorCounters {
        self.coordinator.clone()
    }

    /// Counts one answered request, its error code if any, and how long
    /// it took.
    pub fn count_request(&self, answered: Answered<'_>) {
        let Answered { method, route, consistency, status, error, seconds } = answered;
        self.requests.get_or_create(&RequestLabels { method, status }).inc();
        let route = route.to_string();
        self.latency.get_or_create(&LatencyLabels { method, route, consistency }).observe(seconds);
        if let Some(code) = error {
            self.errors.get_or_create(&ErrorLabels { status, code }).inc();
        }
    }

    /// Counts a request refused for overload.
    pub fn count_refusal(&self, refusal: Refusal) {
        let limit = match refusal {
            Refusal::Requests { .. } => "requests",
            Refusal::Bytes { .. } => "bytes",
        };
        self.refusals.get_or_create(&LimitLabels { limit }).inc();
    }

    /// Counts acknowledged records.
    pub fn count_records(&self, n: u64) {
        self.records.inc_by(n);
    }

    /// The exposition text in `format`, with the gauges set from `now`,
    /// and the nodes' families from what each member answered (`None`
    /// for one that did not).
    pub fn render(&self, now: Snapshot, nodes: &[(NodeId, Option<NodeStats>)], wall_ms: u64, format: Format) -> String {
        self.epoch.set(now.epoch as i64);
        self.live_nodes.set(now.live_nodes as i64);
        self.in_flight_requests.set(now.in_flight_requests as i64);
        self.in_flight_bytes.set(now.in_flight_bytes as i64);
        let mut out = String::new();
        let write = |out: &mut String| -> std::fmt::Result {
            encode_registry(out, &self.registry)?;
            encode_registry(out, &nodes::registry(nodes, wall_ms))?;
            encode_eof(out)
        };
        write(&mut out).expect("writing to a String cannot fail");
        match format {
            Format::OpenMetrics => out,
            Format::Prometheus => exposition::to_prometheus(&out),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
