//! The coordinator's decisions, without any I/O: the pure core that the
//! router's async coordinator only feeds.
//!
//! A request to one partition goes like this:
//!
//! 1. [`fanout::preference`] orders the partition's replicas: live before
//!    down, fast before slow, equals in turns.
//! 2. A [`fanout::Fanout`] says whom to ask: a write every replica, a read
//!    as many as its level needs. Each answer, failure, stale-epoch refusal
//!    or passed speculative delay is fed back as an [`fanout::Event`]; the
//!    machine answers with the next [`fanout::Step`]: ask more, wait, met,
//!    or failed (with the newer epoch to route again with, if one was
//!    reported).
//! 3. A read then [`read::resolve`]s the answers to the newest value and
//!    plans its [`read::Repair`]: the stale replicas first, the silent ones
//!    if too few of those take the value, and whether the answer may stand.
//!
//! Scenario tests for both live in `proto/tests/scripts/`, run by
//! `proto/tests/coordinator_scripts.rs`.

pub mod fanout;
pub mod read;
