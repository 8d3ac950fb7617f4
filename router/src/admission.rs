//! The router's bound on work in flight: requests and body bytes.
//!
//! Every data request takes a [`Ticket`] before its body is read: one of
//! the requests allowed in flight, and as many bytes as its body declares
//! (`Content-Length`; a body of unknown length counts as the largest one
//! allowed). A request that does not fit is refused at once with `503` and
//! `Retry-After`, never queued: under overload the router finishes what it
//! admitted, fast, and its memory stays near `max bytes × the cost of
//! parsing a byte of JSON` (measured in `tests/tests/overload.rs`).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many requests in flight.
    Requests {
        /// The limit.
        limit: usize,
    },
    /// Too many body bytes in flight.
    Bytes {
        /// The limit.
        limit: usize,
    },
}

/// What an admitted request holds until it is answered.
#[derive(Debug)]
pub struct Ticket {
    _request: OwnedSemaphorePermit,
    _bytes: Option<OwnedSemaphorePermit>,
}

/// The limits and what is taken of them.
#[derive(Debug)]
pub struct Admission {
    requests: Arc<Semaphore>,
    max_requests: usize,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
}

impl Admission {
    /// At most `max_requests` requests and `max_bytes` body bytes in flight
    /// (each at least 1).
    pub fn new(max_requests: usize, max_bytes: usize) -> Self {
        let (max_requests, max_bytes) = (max_requests.max(1), max_bytes.clamp(1, u32::MAX as usize));
        Self {
            requests: Arc::new(Semaphore::new(max_requests)),
            max_requests,
            bytes: Arc::new(Semaphore::new(max_bytes)),
            max_bytes,
        }
    }

    /// Admits a request whose body brings `body` bytes, or refuses it at
    /// once. A body larger than the whole byte limit is admitted only when
    /// nothing else holds bytes.
    pub fn admit(&self, body: usize) -> Result<Ticket, Refusal> {
        let request =
            self.requests.clone().try_acquire_owned().map_err(|_| Refusal::Requests { limit: self.max_requests })?;
        let bytes = match body.min(self.max_bytes) {
            0 => None,
            n => Some(
                self.bytes
                    .clone()
                    .try_acquire_many_owned(n as u32)
                    .map_err(|_| Refusal::Bytes { limit: self.max_bytes })?,
            ),
        };
        Ok(Ticket { _request: request, _bytes: bytes })
    }

    /// Requests and body bytes admitted and not yet answered.
    pub fn in_flight(&self) -> (usize, usize) {
        (self.max_requests - self.requests.available_permits(), self.max_bytes - self.bytes.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_past_the_limit_are_refused_until_one_ends() {
        let admission = Admission::new(2, 1000);
        let a = admission.admit(0).unwrap();
        let _b = admission.admit(0).unwrap();
        assert_eq!(admission.admit(0).unwrap_err(), Refusal::Requests { limit: 2 });
        assert_eq!(admission.in_flight(), (2, 0));
        drop(a);
        assert!(admission.admit(0).is_ok());
    }

    #[test]
    fn bodies_past_the_byte_limit_are_refused_until_one_ends() {
        let admission = Admission::new(10, 100);
        let big = admission.admit(60).unwrap();
        assert_eq!(admission.admit(50).unwrap_err(), Refusal::Bytes { limit: 100 });
        let fits = admission.admit(40);
        assert!(fits.is_ok(), "what still fits is admitted");
        assert_eq!(admission.in_flight(), (2, 100));
        drop((big, fits));
        assert!(admission.admit(50).is_ok());
    }

    #[test]
    fn a_request_refused_for_its_body_gives_its_request_slot_back() {
        let admission = Admission::new(2, 10);
        let _held = admission.admit(8).unwrap();
        assert_eq!(admission.admit(5).unwrap_err(), Refusal::Bytes { limit: 10 });
        assert!(admission.admit(2).is_ok(), "the refused request left its slot");
    }

    #[test]
    fn a_body_over_the_whole_limit_gets_in_alone() {
        let admission = Admission::new(4, 10);
        let alone = admission.admit(11).unwrap();
        assert!(admission.admit(1).is_err());
        drop(alone);
        assert!(admission.admit(1).is_ok());
    }
}
