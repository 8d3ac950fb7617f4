//! How fast each node has answered lately: the typical latency that orders
//! replicas for reads, and the p99 that sets a read's speculative delay.
//!
//! Each node keeps a window of its last [`WINDOW`] call latencies; a failed
//! or timed-out call counts as one slow sample ([`FAILURE_PENALTY`]), so a
//! node that stops answering falls to the back of the order quickly and
//! comes forward again once it answers fast.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use ringup_proto::NodeId;

/// How many recent calls a node's figures come from.
pub const WINDOW: usize = 128;
/// How often (in samples) a node's p99 is computed again.
const P99_EVERY: usize = 16;
/// What a failed call counts as.
pub const FAILURE_PENALTY: Duration = Duration::from_millis(500);
/// Weight of a new sample in the typical latency (an exponential average).
const EWMA_WEIGHT: f64 = 0.1;

/// One node's recent calls.
#[derive(Debug, Clone)]
struct Window {
    samples: Vec<u32>,
    next: usize,
    recorded: usize,
    ewma_us: f64,
    p99_us: u32,
}

impl Window {
    fn new(first_us: u32) -> Self {
        Self {
            samples: Vec::with_capacity(WINDOW),
            next: 0,
            recorded: 0,
            ewma_us: f64::from(first_us),
            p99_us: first_us,
        }
    }

    fn record(&mut self, us: u32) {
        if self.samples.len() < WINDOW {
            self.samples.push(us);
        } else {
            self.samples[self.next] = us;
        }
        self.next = (self.next + 1) % WINDOW;
        self.recorded += 1;
        self.ewma_us += EWMA_WEIGHT * (f64::from(us) - self.ewma_us);
        if self.recorded.is_multiple_of(P99_EVERY) || self.samples.len() < P99_EVERY {
            self.p99_us = p99(&self.samples);
        }
    }
}

/// The 99th percentile of `samples` (nearest rank).
fn p99(samples: &[u32]) -> u32 {
    let mut sorted = samples.to_vec();
    let rank = (sorted.len() * 99).div_ceil(100).saturating_sub(1);
    *sorted.select_nth_unstable(rank).1
}

/// Recent latencies of every node this router calls.
#[derive(Debug, Default)]
pub struct Latencies {
    /// Held only to record or read one node's figures, never across an
    /// `.await`.
    nodes: Mutex<BTreeMap<NodeId, Window>>,
}

impl Latencies {
    /// No figures yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes a call to `node` that was answered after `took`.
    pub fn answered(&self, node: NodeId, took: Duration) {
        self.record(node, took);
    }

    /// Notes a call to `node` that failed or timed out.
    pub fn failed(&self, node: NodeId) {
        self.record(node, FAILURE_PENALTY);
    }

    fn record(&self, node: NodeId, took: Duration) {
        let us = took.as_micros().min(u128::from(u32::MAX)) as u32;
        let mut nodes = self.nodes.lock().expect("latencies poisoned");
        nodes.entry(node).or_insert_with(|| Window::new(us)).record(us);
    }

    /// The node's typical latency in microseconds, if it was called.
    pub fn typical_us(&self, node: NodeId) -> Option<u64> {
        self.nodes.lock().expect("latencies poisoned").get(&node).map(|w| w.ewma_us as u64)
    }

    /// How long to wait for `nodes` before asking one more replica: the
    /// highest recent p99 among them, within `[floor, ceiling]`. A node
    /// never called counts as `floor`.
    pub fn speculative_delay(&self, nodes: &[NodeId], floor: Duration, ceiling: Duration) -> Duration {
        let known = self.nodes.lock().expect("latencies poisoned");
        let p99 = nodes.iter().filter_map(|n| known.get(n)).map(|w| w.p99_us).max().unwrap_or(0);
        Duration::from_micros(u64::from(p99)).clamp(floor, ceiling.max(floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOOR: Duration = Duration::from_millis(2);
    const CEILING: Duration = Duration::from_millis(200);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_p99_is_the_nearest_rank_of_the_window() {
        let samples: Vec<u32> = (1..=100).collect();
        assert_eq!(p99(&samples), 99);
        assert_eq!(p99(&[7]), 7);
        assert_eq!(p99(&[5, 1]), 5);
    }

    #[test]
    fn the_speculative_delay_follows_the_slowest_asked_within_its_bounds() {
        let l = Latencies::new();
        assert_eq!(l.speculative_delay(&[1], FLOOR, CEILING), FLOOR, "an unknown node waits the floor");
        for _ in 0..WINDOW {
            l.answered(1, Duration::from_micros(300));
            l.answered(2, ms(9));
        }
        assert_eq!(l.speculative_delay(&[1], FLOOR, CEILING), FLOOR, "0.3 ms is under the floor");
        assert_eq!(l.speculative_delay(&[1, 2], FLOOR, CEILING), ms(9));
        for _ in 0..WINDOW {
            l.failed(2);
        }
        assert_eq!(l.speculative_delay(&[2], FLOOR, CEILING), CEILING, "failures count as slow, up to the ceiling");
    }

    #[test]
    fn a_node_that_fails_falls_behind_and_recovers_when_it_answers_fast_again() {
        let l = Latencies::new();
        for _ in 0..20 {
            l.answered(1, ms(1));
            l.answered(2, ms(1));
        }
        for _ in 0..5 {
            l.failed(2);
        }
        assert!(l.typical_us(2) > Some(100_000), "{:?}", l.typical_us(2));
        for _ in 0..100 {
            l.answered(2, ms(1));
        }
        assert!(l.typical_us(2) < Some(2_000), "{:?}", l.typical_us(2));
        assert_eq!(l.typical_us(3), None);
    }

    #[test]
    fn only_the_last_window_of_samples_counts_for_the_p99() {
        let l = Latencies::new();
        for _ in 0..WINDOW {
            l.answered(1, ms(50));
        }
        for _ in 0..WINDOW {
            l.answered(1, ms(3));
        }
        assert_eq!(l.speculative_delay(&[1], FLOOR, CEILING), ms(3));
    }
}
