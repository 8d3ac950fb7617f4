//! The hybrid logical clock that stamps versions.
//!
//! A timestamp packs wall-clock milliseconds in its high 48 bits and a
//! logical counter in its low 16. It never goes backwards, even when the wall
//! clock does, and it stays close to real time, so last-writer-wins picks the
//! write a person would call the last one.

/// How far ahead of a node's clock a version may be, by default, before
/// the node refuses it.
pub const DEFAULT_MAX_SKEW_MS: u64 = 5_000;

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

    /// A new timestamp, greater than every one issued or observed before
    /// (until the clock saturates at `u64::MAX`).
    pub fn tick(&mut self, now_ms: u64) -> u64 {
        self.last = self.last.saturating_add(1).max(Self::at(now_ms));
        self.last
    }

    /// Takes note of a timestamp seen elsewhere, so later ticks exceed it,
    /// unless it lies more than `max_ahead_ms` ahead of `now_ms`: then it
    /// is ignored, and `false` returned.
    pub fn observe(&mut self, remote: u64, now_ms: u64, max_ahead_ms: u64) -> bool {
        if ahead_ms(remote, now_ms) > max_ahead_ms {
            return false;
        }
        self.last = self.last.max(remote);
        true
    }

    /// The wall-clock milliseconds of a timestamp.
    pub fn millis(timestamp: u64) -> u64 {
        timestamp >> LOGICAL_BITS
    }

    /// The first timestamp of a wall-clock millisecond; saturates for
    /// times past what 48 bits hold.
    fn at(now_ms: u64) -> u64 {
        now_ms.saturating_mul(1 << LOGICAL_BITS)
    }
}

/// How many milliseconds `timestamp` lies ahead of the wall-clock time
/// `now_ms`; 0 when it does not.
pub fn ahead_ms(timestamp: u64, now_ms: u64) -> u64 {
    Hlc::millis(timestamp).saturating_sub(now_ms)
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
        assert!(clock.observe(Hlc::new().tick(9_000), 8_000, 5_000));
        assert!(Hlc::millis(clock.tick(1_000)) >= 9_000);
    }

    #[test]
    fn a_timestamp_too_far_ahead_is_not_observed() {
        let mut clock = Hlc::new();
        let far = Hlc::new().tick(20_000);
        assert!(!clock.observe(far, 10_000, 5_000), "10 s ahead, 5 s allowed");
        assert_eq!(Hlc::millis(clock.tick(10_000)), 10_000, "the clock did not jump");
        assert_eq!(ahead_ms(far, 10_000), 10_000);
        assert_eq!(ahead_ms(far, 30_000), 0, "behind is not ahead");
    }

    #[test]
    fn extreme_inputs_neither_overflow_nor_panic() {
        let mut clock = Hlc::new();
        assert_eq!(clock.tick(u64::MAX), u64::MAX, "a wall clock past 48 bits saturates");
        assert_eq!(clock.tick(0), u64::MAX, "and stays there");
        let mut clock = Hlc::new();
        assert!(clock.observe(u64::MAX, u64::MAX, 0));
        assert_eq!(clock.tick(1), u64::MAX);
        assert!(!Hlc::new().observe(u64::MAX, 0, 5_000), "u64::MAX is far ahead of any real clock");
        assert_eq!(ahead_ms(u64::MAX, 0), u64::MAX >> LOGICAL_BITS);
        assert_eq!(ahead_ms(0, u64::MAX), 0);
    }

    proptest! {
        #[test]
        fn any_input_is_safe(now in any::<u64>(), remote in any::<u64>(), bound in any::<u64>()) {
            let mut clock = Hlc::new();
            let before = clock.tick(now);
            clock.observe(remote, now, bound);
            prop_assert!(clock.tick(now) >= before);
        }

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
