//! When a client dials its peer: one dial at a time, shared by every caller
//! that needs the connection meanwhile, and after a failed dial none until
//! a backoff has passed.
//!
//! A dial is costly beyond its socket: it resolves the peer's name, which
//! the system does on a thread of its own that no timeout stops. A peer
//! that is away would otherwise be dialed by every call made to it, a
//! thousand a second under load, and the lookups that outlive their
//! callers pile up on the resolver. With [`Redial`], calls to a peer that
//! just failed to connect fail at once with the reason of the last failure.
//!
//! The time is a parameter: the caller passes `now` to every step.

use std::fmt;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;

/// The wait after failed dials in a row: 100 ms after the first, doubling
/// up to 1 s between two dials of a peer that stays away.
pub const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));

/// One peer's dialing state.
#[derive(Debug, Clone, Default)]
pub struct Redial {
    state: State,
    /// Dials failed in a row.
    failures: u32,
}

#[derive(Debug, Clone, Default)]
enum State {
    /// No dial in flight, none refused.
    #[default]
    Idle,
    /// A dial is in flight.
    Dialing,
    /// The last dial failed; the next may start at `until`.
    Failed { until: Instant, reason: String },
}

/// What a caller that needs a connection does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start a dial, and report its outcome with [`Redial::dialed`].
    Dial,
    /// Wait for the dial in flight.
    Join,
    /// Fail now: the last dial failed for `reason`, and the next may start
    /// in `retry_in`.
    Refuse { reason: String, retry_in: Duration },
}

impl Redial {
    /// A caller needs a connection at `now` and has none open.
    pub fn need(&mut self, now: Instant) -> Decision {
        match &self.state {
            State::Dialing => Decision::Join,
            State::Failed { until, reason } if now < *until => {
                Decision::Refuse { reason: reason.clone(), retry_in: *until - now }
            }
            State::Idle | State::Failed { .. } => {
                self.state = State::Dialing;
                Decision::Dial
            }
        }
    }

    /// The dial in flight ended at `now`: with a connection, or failed for
    /// the reason given. Returns how long the dials are held off.
    pub fn dialed(&mut self, now: Instant, outcome: Result<(), String>) -> Duration {
        match outcome {
            Ok(()) => {
                self.failures = 0;
                self.state = State::Idle;
                Duration::ZERO
            }
            Err(reason) => {
                self.failures = self.failures.saturating_add(1);
                let backoff = BACKOFF.after(self.failures);
                self.state = State::Failed { until: now + backoff, reason };
                backoff
            }
        }
    }
}

impl fmt::Display for Redial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Idle => write!(f, "idle")?,
            State::Dialing => write!(f, "dialing")?,
            State::Failed { reason, .. } => write!(f, "failed ({reason})")?,
        }
        write!(f, ", {} failed in a row", self.failures)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Dial => write!(f, "dial"),
            Decision::Join => write!(f, "join"),
            Decision::Refuse { reason, retry_in } => write!(f, "refuse: {reason}; next dial in {retry_in:?}"),
        }
    }
}
