//! The one clock a process hands to everything that waits or reads the
//! time: background loops sleep on it, the hybrid logical clock and every
//! age or deadline read it.
//!
//! Monotonic time is tokio's ([`tokio::time::Instant`], sleeps, intervals),
//! so a test that pauses tokio's clock (`tokio::time::pause`, or
//! `#[tokio::test(start_paused = true)]`) drives every loop, and a paused
//! runtime jumps straight to the next timer when it has nothing else to do.
//! Wall-clock time comes from the system, or, for a clock made with
//! [`Clock::following_tokio`], from a fixed start plus tokio's elapsed time,
//! so that under a paused runtime it moves exactly as far as the test
//! advances it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};

/// A process's clock; cheap to clone.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// For a clock following tokio's time: the instant it was made and the
    /// wall-clock time it read then. `None` for the system's wall clock.
    origin: Option<(Instant, u64)>,
}

impl Clock {
    /// The system's wall clock, and tokio's timers.
    pub fn system() -> Self {
        Self { origin: None }
    }

    /// A clock whose wall time reads `wall_ms` now and advances with tokio's
    /// time: under a paused runtime, only as the test advances it.
    pub fn following_tokio(wall_ms: u64) -> Self {
        Self { origin: Some((Instant::now(), wall_ms)) }
    }

    /// Wall-clock milliseconds since the Unix epoch.
    pub fn wall_ms(&self) -> u64 {
        match self.origin {
            None => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            Some((at, wall_ms)) => wall_ms + at.elapsed().as_millis() as u64,
        }
    }

    /// The monotonic time now.
    pub fn now(&self) -> Instant {
        Instant::now()
    }

    /// A future that ends `duration` from now.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        tokio::time::sleep(duration)
    }

    /// A future that ends at `deadline`.
    pub fn sleep_until(&self, deadline: Instant) -> Sleep {
        tokio::time::sleep_until(deadline)
    }

    /// Ticks every `period`, the first one at once; a tick missed while
    /// the loop was busy is skipped, not made up in a burst.
    pub fn interval(&self, period: Duration) -> Interval {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_clock_following_paused_time_moves_only_as_far_as_the_test_advances() {
        let clock = Clock::following_tokio(1_000_000);
        assert_eq!(clock.wall_ms(), 1_000_000);
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(clock.wall_ms(), 1_002_500);
        let before = clock.now();
        clock.sleep(Duration::from_secs(3600)).await;
        assert_eq!(clock.now() - before, Duration::from_secs(3600));
        assert_eq!(clock.wall_ms(), 1_002_500 + 3_600_000);
    }

    #[test]
    fn the_system_clock_reads_the_wall_clock() {
        let system = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(Clock::system().wall_ms().abs_diff(system) < 60_000);
    }
}
