//! The router's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of the request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    status: u16,
}

/// Counters and gauges, rendered on `GET /metrics`.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    records: Counter,
    epoch: Gauge,
    live_nodes: Gauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ringup_router");
        let requests = Family::<RequestLabels, Counter>::default();
        let records = Counter::default();
        let epoch = Gauge::default();
        let live_nodes = Gauge::default();
        registry.register("http_requests", "HTTP requests answered, by method and status", requests.clone());
        registry.register("records_written", "Records acknowledged to clients", records.clone());
        registry.register("map_epoch", "Epoch of the cluster map the router holds", epoch.clone());
        registry.register("live_nodes", "Members that answered the last ping", live_nodes.clone());
        Self { registry, requests, records, epoch, live_nodes }
    }

    /// Counts one answered request.
    pub fn count_request(&self, method: &str, status: u16) {
        self.requests.get_or_create(&RequestLabels { method: method.to_string(), status }).inc();
    }

    /// Counts acknowledged records.
    pub fn count_records(&self, n: u64) {
        self.records.inc_by(n);
    }

    /// The exposition text, with the gauges set to the values given.
    pub fn render(&self, epoch: u64, live_nodes: usize) -> String {
        self.epoch.set(epoch as i64);
        self.live_nodes.set(live_nodes as i64);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
