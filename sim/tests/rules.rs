//! The simulation can fail: with each protocol rule switched off (the
//! `rule-switches` feature, this crate's tests only), some seed among the
//! first thousand shows the loss or stale read the rule prevents.

use ringup_proto::rules::{Rule, switch_off};
use ringup_sim::{Settings, run};

/// Runs seeds until one breaks a promise; prints it.
fn first_failing(rule: Rule) -> Option<u64> {
    let _off = switch_off(rule);
    for seed in 0..1000 {
        let one = run(seed, Settings::default());
        if let Some(violation) = &one.violation {
            println!("{rule:?} off: seed {seed}: {}\n{}", violation.what, one.shortest_trace());
            return Some(seed);
        }
    }
    None
}

#[test]
fn without_quorum_in_each_set_during_a_move_a_write_is_lost_or_a_read_stale() {
    assert!(first_failing(Rule::QuorumPerSet).is_some(), "no seed found what the rule prevents");
}

#[test]
fn without_the_refill_barrier_a_quorum_read_goes_back_in_time() {
    assert!(first_failing(Rule::RefillBarrier).is_some(), "no seed found what the rule prevents");
}

#[test]
fn without_the_use_new_barrier_a_quorum_read_goes_back_in_time() {
    assert!(first_failing(Rule::UseNewBarrier).is_some(), "no seed found what the rule prevents");
}
