//! Three protocol rules that keep acknowledged writes and QUORUM reads
//! safe while the cluster changes, named so that the simulation can show
//! each one matters: with the `rule-switches` feature (the simulation's
//! alone) a test switches one off on its thread and the simulation must
//! find the loss or stale read that follows. Without the feature every
//! rule always holds and [`holds`] is a constant.

/// A rule that can be switched off in the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// While a partition moves, a write's level is met in the old replica
    /// set and in the new one, not in the old set alone
    /// ([`crate::coordinator::fanout::Fanout::spanning`]).
    QuorumPerSet,
    /// A replica refilling a partition after its data directory was wiped
    /// serves no reads of it ([`crate::cluster::ClusterMap::readable`]).
    RefillBarrier,
    /// A move's writes leave the old set (`use-new`) only once every
    /// replica of both sets has applied `write-both-read-new`
    /// ([`crate::migration::Driver`]).
    UseNewBarrier,
}

#[cfg(not(feature = "rule-switches"))]
/// Whether `rule` holds: always, in every build but the simulation's.
#[inline(always)]
pub const fn holds(_rule: Rule) -> bool {
    true
}

#[cfg(feature = "rule-switches")]
mod switches {
    use std::cell::Cell;

    use super::Rule;

    thread_local! {
        static OFF: Cell<[bool; 3]> = const { Cell::new([false; 3]) };
    }

    fn slot(rule: Rule) -> usize {
        match rule {
            Rule::QuorumPerSet => 0,
            Rule::RefillBarrier => 1,
            Rule::UseNewBarrier => 2,
        }
    }

    /// Whether `rule` holds on this thread.
    pub fn holds(rule: Rule) -> bool {
        !OFF.with(|off| off.get()[slot(rule)])
    }

    /// Switches `rule` off on this thread until the guard drops.
    pub fn switch_off(rule: Rule) -> Off {
        OFF.with(|off| {
            let mut now = off.get();
            now[slot(rule)] = true;
            off.set(now);
        });
        Off(rule)
    }

    /// Switches its rule on again when dropped.
    #[must_use]
    pub struct Off(Rule);

    impl Drop for Off {
        fn drop(&mut self) {
            OFF.with(|off| {
                let mut now = off.get();
                now[slot(self.0)] = false;
                off.set(now);
            });
        }
    }
}

#[cfg(feature = "rule-switches")]
pub use switches::{Off, holds, switch_off};
