//! Consistency levels and the counting of replica answers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How many replicas must answer before a read or write succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Consistency {
    /// One replica.
    One,
    /// A majority of the replica set.
    #[default]
    Quorum,
    /// Every replica.
    All,
}

impl Consistency {
    /// How many of `replicas` must answer.
    pub fn required(self, replicas: usize) -> usize {
        match self {
            Consistency::One => 1.min(replicas),
            Consistency::Quorum => replicas / 2 + 1,
            Consistency::All => replicas,
        }
    }

    /// The lower-case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::One => "one",
            Consistency::Quorum => "quorum",
            Consistency::All => "all",
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Consistency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "one" => Ok(Consistency::One),
            "quorum" => Ok(Consistency::Quorum),
            "all" => Ok(Consistency::All),
            _ => Err(format!("unknown consistency level {s:?}: use one, quorum or all")),
        }
    }
}

/// Where a fan-out to a replica set stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    /// Not decided yet: wait for more answers.
    Pending,
    /// Enough replicas succeeded.
    Met,
    /// Too many failed for the level to be met.
    Failed,
}

/// Counts the answers of a fan-out to `replicas` replicas.
#[derive(Debug, Clone)]
pub struct AckCounter {
    replicas: usize,
    required: usize,
    acks: usize,
    failures: usize,
}

impl AckCounter {
    /// A counter for `level` over `replicas` replicas.
    pub fn new(level: Consistency, replicas: usize) -> Self {
        Self { replicas, required: level.required(replicas), acks: 0, failures: 0 }
    }

    /// How many successes are needed.
    pub fn required(&self) -> usize {
        self.required
    }

    /// How many successes so far.
    pub fn acks(&self) -> usize {
        self.acks
    }

    /// Counts one answer and says where the fan-out stands.
    pub fn record(&mut self, ok: bool) -> Tally {
        if ok {
            self.acks += 1;
        } else {
            self.failures += 1;
        }
        self.tally()
    }

    /// Where the fan-out stands.
    pub fn tally(&self) -> Tally {
        if self.acks >= self.required && self.required > 0 {
            Tally::Met
        } else if self.replicas - self.failures < self.required || self.required == 0 {
            Tally::Failed
        } else {
            Tally::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_counts() {
        assert_eq!([1, 2, 3].map(|n| Consistency::One.required(n)), [1, 1, 1]);
        assert_eq!([1, 2, 3, 5].map(|n| Consistency::Quorum.required(n)), [1, 2, 2, 3]);
        assert_eq!([1, 2, 3].map(|n| Consistency::All.required(n)), [1, 2, 3]);
    }

    #[test]
    fn parses_names_and_refuses_others() {
        assert_eq!("QUORUM".parse(), Ok(Consistency::Quorum));
        assert_eq!("one".parse(), Ok(Consistency::One));
        assert!("two".parse::<Consistency>().is_err());
    }

    #[test]
    fn quorum_of_three_survives_one_failure_not_two() {
        let mut c = AckCounter::new(Consistency::Quorum, 3);
        assert_eq!(c.record(false), Tally::Pending);
        assert_eq!(c.record(true), Tally::Pending);
        assert_eq!(c.record(true), Tally::Met);

        let mut c = AckCounter::new(Consistency::Quorum, 3);
        assert_eq!(c.record(true), Tally::Pending);
        assert_eq!(c.record(false), Tally::Pending);
        assert_eq!(c.record(false), Tally::Failed);
    }

    #[test]
    fn all_fails_on_the_first_failure() {
        let mut c = AckCounter::new(Consistency::All, 3);
        assert_eq!(c.record(true), Tally::Pending);
        assert_eq!(c.record(false), Tally::Failed);
    }

    #[test]
    fn no_replicas_never_succeeds() {
        assert_eq!(AckCounter::new(Consistency::One, 0).tally(), Tally::Failed);
    }
}
