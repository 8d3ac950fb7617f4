//! When a client sends its next request.
//!
//! - Closed loop (the default): each client sends its next request as soon
//!   as the previous one is answered, up to its share of `--requests`. The
//!   latency of a request counts from when it was sent, so a stall delays
//!   the requests behind it without showing in their latency (coordinated
//!   omission).
//! - Open loop (`--rate N`), the wrk2 way: the clients share one
//!   [`Schedule`]. Ticket `i` is due at `start + i/N`; a client takes the
//!   next ticket, sleeps until it is due, sends, and the latency counts
//!   from the due time. A request that waited for a free client therefore
//!   counts its wait. `--concurrency` still bounds the requests in flight.
//!
//! Tokio's timer works in whole milliseconds: a client that slept until the
//! due time would wake half a millisecond to two late (about one at the
//! median) and count that as the store's latency. A client therefore
//! sleeps until [`TIMER_SLACK`] before the due time, sends on waking, and
//! counts from the due time or, when it woke early, from the send: the
//! latency is never shortened, and the timer's own delay in it drops to
//! under a tenth of a millisecond at the median and one at worst.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long before its due time a client wakes to send: the timer's
/// millisecond.
pub const TIMER_SLACK: Duration = Duration::from_millis(1);

/// How one client paces its requests.
#[derive(Debug, Clone)]
pub enum Pace {
    /// One request after another, up to `quota` if a count was asked for.
    Closed {
        /// This client's share of `--requests`.
        quota: Option<u64>,
    },
    /// Requests due on the schedule all clients share.
    Rate(Arc<Schedule>),
}

impl Pace {
    /// Waits until the next request may go and returns when its latency
    /// starts counting, or `None` once this client is done. `sent` is how
    /// many requests this client has sent.
    pub async fn next(&self, sent: u64) -> Option<Instant> {
        match self {
            Pace::Closed { quota } => quota.is_none_or(|q| sent < q).then(Instant::now),
            Pace::Rate(schedule) => {
                let due = schedule.take()?;
                let wake = due.checked_sub(TIMER_SLACK).unwrap_or(due);
                tokio::time::sleep_until(wake.into()).await;
                Some(due.min(Instant::now()))
            }
        }
    }
}

/// The arrival times of an open-loop run: one ticket per request.
#[derive(Debug)]
pub struct Schedule {
    start: Instant,
    /// Requests per second, over all clients.
    rate: f64,
    /// Tickets there are, with `--requests`.
    total: Option<u64>,
    /// No ticket falls due at or after this, with `--duration`.
    deadline: Option<Instant>,
    /// The next ticket to hand out.
    next: AtomicU64,
}

impl Schedule {
    /// `rate` requests a second from `start`, until `total` tickets are
    /// out or the next would fall due at `deadline`.
    pub fn new(start: Instant, rate: f64, total: Option<u64>, deadline: Option<Instant>) -> Self {
        assert!(rate.is_finite() && rate > 0.0, "a schedule needs a rate above 0, not {rate}");
        Self { start, rate, total, deadline, next: AtomicU64::new(0) }
    }

    /// When ticket `ticket` (from 0) is due.
    pub fn due(&self, ticket: u64) -> Instant {
        self.start + Duration::from_secs_f64(ticket as f64 / self.rate)
    }

    /// Takes the next ticket: when it is due, or `None` when none is left.
    pub fn take(&self) -> Option<Instant> {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let due = self.due(ticket);
        let spent = self.total.is_some_and(|t| ticket >= t) || self.deadline.is_some_and(|d| due >= d);
        (!spent).then_some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_i_falls_due_i_over_the_rate_after_the_start() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 100.0, None, None);
        assert_eq!(schedule.due(0), start);
        assert_eq!(schedule.due(50) - start, Duration::from_millis(500));
        assert_eq!(Schedule::new(start, 1000.0, None, None).due(3000) - start, Duration::from_secs(3));
    }

    #[test]
    fn tickets_come_in_order_and_stop_at_the_asked_count() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 10.0, Some(3), None);
        let taken: Vec<_> = std::iter::from_fn(|| schedule.take()).collect();
        let offsets: Vec<_> = taken.iter().map(|due| *due - start).collect();
        assert_eq!(offsets, [Duration::ZERO, Duration::from_millis(100), Duration::from_millis(200)]);
        assert_eq!(schedule.take(), None, "and stay spent");
    }

    #[test]
    fn no_ticket_falls_due_at_or_after_the_deadline() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 4.0, None, Some(start + Duration::from_secs(1)));
        assert_eq!(std::iter::from_fn(|| schedule.take()).count(), 4, "due at 0, 0.25, 0.5 and 0.75 s");
    }

    #[tokio::test]
    async fn a_closed_loop_stops_at_its_quota_and_an_open_one_waits_for_the_due_time() {
        let closed = Pace::Closed { quota: Some(2) };
        assert!(closed.next(1).await.is_some());
        assert!(closed.next(2).await.is_none());
        assert!(Pace::Closed { quota: None }.next(u64::MAX).await.is_some());

        let start = Instant::now();
        let open = Pace::Rate(Arc::new(Schedule::new(start, 50.0, Some(2), None)));
        assert_eq!(open.next(0).await, Some(start), "the first is due at once, and late by now");
        let second = open.next(0).await.expect("a second ticket");
        let due = start + Duration::from_millis(20);
        assert!(second <= due, "counts from the due time at the latest");
        assert!(second + TIMER_SLACK >= due, "slept until about the due time");
        assert_eq!(open.next(0).await, None);
    }
}
