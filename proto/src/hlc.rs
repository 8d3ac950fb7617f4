//! The hybrid logical clock that stamps versions.
//!
//! A timestamp packs wall-clock milliseconds in its high 48 bits and a
//! logical counter in its low 16. It never goes backwards, even when the wall
//! clock does, and it stays close to real time, so last-writer-wins picks the
//! write a person would call the last one.

/// Bits of the logical counter.
const LOGICAL_BITS: u32 = 16;

/// A hybrid logical clock. Pure: the caller passes the wall-clock time in.
#[derive(Debug, Default, Clone)]
pub struct Hlc {
    last: u64,
}

impl Hlc {
    /// A clock that has issued nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new timestamp, greater than every one issued or observed before.
    pub fn tick(&mut self, now_ms: u64) -> u64 {
        self.last = (self.last + 1).max(now_ms << LOGICAL_BITS);
        self.last
    }

    /// Takes note of a timestamp seen elsewhere, so later ticks exceed it.
    pub fn observe(&mut self, remote: u64) {
        self.last = self.last.max(remote);
    }

    /// The wall-clock milliseconds of a timestamp.
    pub fn millis(timestamp: u64) -> u64 {
        timestamp >> LOGICAL_BITS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn follows_the_wall_clock() {
        let mut clock = Hlc::new();
        let t = clock.tick(1_700_000_000_000);
        assert_eq!(Hlc::millis(t), 1_700_000_000_000);
    }

    #[test]
    fn survives_a_clock_going_backwards() {
        let mut clock = Hlc::new();
        let a = clock.tick(5_000);
        let b = clock.tick(4_000);
        assert!(b > a);
        assert_eq!(Hlc::millis(b), 5_000);
    }

    #[test]
    fn ticks_after_an_observed_timestamp() {
        let mut clock = Hlc::new();
        clock.observe(Hlc::new().tick(9_000));
        assert!(Hlc::millis(clock.tick(1_000)) >= 9_000);
    }

    proptest! {
        #[test]
        fn strictly_increases(times in proptest::collection::vec(0u64..1 << 40, 1..50)) {
            let mut clock = Hlc::new();
            let mut last = 0;
            for now in times {
                let t = clock.tick(now);
                prop_assert!(t > last);
                last = t;
            }
        }
    }
}
