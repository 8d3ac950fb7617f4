//! The one rate limiter for background work that must leave the disk and
//! the network to foreground requests: hint replay, anti-entropy and the
//! reseal pass each keep their bytes within a rate with a [`Pacer`].

use std::time::Duration;

use ringup_rpc::Clock;
use tokio::time::Instant;

/// Keeps a run of work within `bytes_per_sec`: the work since the pacer
/// was made, or since its last [`Pacer::pace`] returned, takes at least as
/// long as its bytes take at that rate. A piece that took longer waits not
/// at all, and is not saved up for a burst later; a run of work that ends
/// (a pass, a replay) drops its pacer, so that idle time is not either.
#[derive(Debug)]
pub struct Pacer {
    clock: Clock,
    bytes_per_sec: u64,
    /// When the piece of work being paced started.
    since: Instant,
}

impl Pacer {
    /// A pacer at `bytes_per_sec` (at least 1) on `clock`, from now.
    pub fn new(clock: Clock, bytes_per_sec: u64) -> Self {
        Self { clock, bytes_per_sec: bytes_per_sec.max(1), since: clock.now() }
    }

    /// A piece of `bytes` was just done: waits until it is due at the rate.
    pub async fn pace(&mut self, bytes: u64) {
        let due = self.since + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        self.clock.sleep_until(due).await;
        self.since = self.clock.now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_faster_than_the_rate_waits_and_slower_work_does_not() {
        let clock = Clock::following_tokio(0);
        let start = clock.now();
        let mut pacer = Pacer::new(clock, 1_000);
        pacer.pace(500).await;
        pacer.pace(500).await;
        assert_eq!(clock.now() - start, Duration::from_secs(1), "1000 bytes at 1000 bytes/s");

        // 200 ms of work for 100 bytes: slower than the rate, no wait.
        tokio::time::advance(Duration::from_millis(200)).await;
        pacer.pace(100).await;
        assert_eq!(clock.now() - start, Duration::from_millis(1_200));

        // A slow piece is not saved up: the next 2000 bytes take 2 s.
        let resumed = clock.now();
        pacer.pace(2_000).await;
        assert_eq!(clock.now() - resumed, Duration::from_secs(2));
    }
}
