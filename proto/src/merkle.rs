//! Per-partition digests for anti-entropy, and the rule that makes
//! dropping tombstones safe.
//!
//! A partition's digest is [`BUCKETS`] hash buckets. A record falls in the
//! bucket its key hashes to, and each bucket holds the XOR of the hashes of
//! its records' key, version and tombstone flag. Two replicas that hold the
//! same records at the same versions have equal digests; where they differ,
//! only the records of the differing buckets need to travel (about
//! 1/[`BUCKETS`] of the partition per differing record). XOR makes the
//! digest independent of the order records are seen in.
//!
//! **Tombstones.** A deleted record stays as a tombstone so that a replica
//! that missed the delete cannot bring the old value back. A node drops a
//! tombstone only when both hold:
//! - it is older than the grace period, and
//! - it is older than the start of the node's last comparison of the
//!   partition in which *every* other replica's digest equalled its own.
//!
//! At that comparison every replica held the tombstone (or a newer write),
//! so no replica holds an older value the tombstone must still shadow: no
//! anti-entropy pull, read repair, stream or refill can bring one back.
//! Hints older than the grace period are dropped rather than replayed, for
//! the same reason. While a replica is down no comparison with all of them
//! succeeds, so tombstones wait for it however long it stays away.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::value::Version;

/// Hash buckets per partition digest.
pub const BUCKETS: usize = 64;

/// A partition's digest: per bucket, the XOR of its records' hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionDigest {
    /// One hash per bucket.
    pub buckets: Vec<u64>,
    /// Records seen, tombstones included.
    pub records: u64,
}

impl Default for PartitionDigest {
    fn default() -> Self {
        Self { buckets: vec![0; BUCKETS], records: 0 }
    }
}

impl PartitionDigest {
    /// Adds one record.
    pub fn add(&mut self, key: &[u8], version: Version, tombstone: bool) {
        let mut leaf = Vec::with_capacity(key.len() + 17);
        leaf.extend_from_slice(key);
        leaf.extend_from_slice(&version.hlc.to_be_bytes());
        leaf.extend_from_slice(&version.origin.to_be_bytes());
        leaf.push(u8::from(tombstone));
        self.buckets[bucket_of(key)] ^= xxh3_64(&leaf);
        self.records += 1;
    }

    /// The buckets in which `self` and `other` differ, in order.
    pub fn differing(&self, other: &PartitionDigest) -> Vec<u16> {
        let theirs = other.buckets.iter().chain(std::iter::repeat(&0));
        self.buckets.iter().zip(theirs).enumerate().filter(|(_, (a, b))| a != b).map(|(i, _)| i as u16).collect()
    }
}

/// The bucket of a record key.
pub fn bucket_of(key: &[u8]) -> usize {
    // The high bits: the low ones also pick the partition of nearby keys.
    (xxh3_64(key) >> 58) as usize % BUCKETS
}

/// Whether a node may drop a tombstone written at `written_ms` (wall-clock
/// milliseconds of its version), at `now_ms`, given the grace period and
/// the start of its last comparison of the partition in which every other
/// replica agreed (`None` if none yet). See the module doc.
pub fn tombstone_droppable(written_ms: u64, now_ms: u64, grace_ms: u64, agreed_since_ms: Option<u64>) -> bool {
    let past_grace = written_ms.saturating_add(grace_ms) < now_ms;
    past_grace && agreed_since_ms.is_some_and(|agreed| written_ms < agreed)
}

/// Whether a hint of a write stamped at `written_ms` may still be
/// replayed at `now_ms`: not once its write is older than the grace
/// period, since a tombstone it predates may have been dropped.
pub fn hint_replayable(written_ms: u64, now_ms: u64, grace_ms: u64) -> bool {
    written_ms.saturating_add(grace_ms) >= now_ms
}

/// The bytes of hints a node keeps for each replica that missed writes.
///
/// A hint is stored only while the replica's hints stay within `limit`;
/// past it, the node stops hinting for that replica (anti-entropy will
/// bring it the rest) until replays bring it back under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HintBudget {
    limit: u64,
    held: std::collections::BTreeMap<u64, u64>,
}

/// What [`HintBudget::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Store it.
    Store,
    /// Drop it: the replica's hints would exceed the limit.
    OverLimit,
}

impl HintBudget {
    /// A budget of `limit` bytes per replica.
    pub fn new(limit: u64) -> Self {
        Self { limit, held: Default::default() }
    }

    /// Decides on a hint of `bytes` for `node`, and counts it if stored.
    pub fn admit(&mut self, node: u64, bytes: u64) -> Admission {
        let held = self.held.entry(node).or_default();
        if held.saturating_add(bytes) > self.limit {
            return Admission::OverLimit;
        }
        *held += bytes;
        Admission::Store
    }

    /// Counts hints of `node` already kept, whatever the limit (at start).
    pub fn force(&mut self, node: u64, bytes: u64) {
        *self.held.entry(node).or_default() += bytes;
    }

    /// Counts hints of `node` replayed or dropped.
    pub fn release(&mut self, node: u64, bytes: u64) {
        if let Some(held) = self.held.get_mut(&node) {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                self.held.remove(&node);
            }
        }
    }

    /// Bytes held per replica.
    pub fn held(&self) -> &std::collections::BTreeMap<u64, u64> {
        &self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hlc: u64) -> Version {
        Version { hlc, origin: 1 }
    }

    #[test]
    fn equal_records_give_equal_digests_whatever_the_order() {
        let (mut a, mut b) = (PartitionDigest::default(), PartitionDigest::default());
        for i in 0..100u64 {
            a.add(&i.to_be_bytes(), v(i), i % 7 == 0);
        }
        for i in (0..100u64).rev() {
            b.add(&i.to_be_bytes(), v(i), i % 7 == 0);
        }
        assert_eq!(a, b);
        assert!(a.differing(&b).is_empty());
    }

    #[test]
    fn a_newer_version_or_a_delete_shows_in_its_bucket_only() {
        let (mut a, mut b, mut c) =
            (PartitionDigest::default(), PartitionDigest::default(), PartitionDigest::default());
        for i in 0..50u64 {
            a.add(&i.to_be_bytes(), v(1), false);
            b.add(&i.to_be_bytes(), v(if i == 7 { 2 } else { 1 }), false);
            c.add(&i.to_be_bytes(), v(1), i == 9);
        }
        assert_eq!(a.differing(&b), vec![bucket_of(&7u64.to_be_bytes()) as u16]);
        assert_eq!(a.differing(&c), vec![bucket_of(&9u64.to_be_bytes()) as u16]);
    }

    #[test]
    fn a_missing_record_shows() {
        let (mut a, mut b) = (PartitionDigest::default(), PartitionDigest::default());
        a.add(b"k1", v(1), false);
        a.add(b"k2", v(1), false);
        b.add(b"k1", v(1), false);
        assert_eq!(a.differing(&b), vec![bucket_of(b"k2") as u16]);
    }

    #[test]
    fn a_tombstone_is_dropped_only_past_grace_and_after_every_replica_agreed() {
        let grace = 1_000;
        assert!(!tombstone_droppable(5_000, 5_500, grace, Some(9_000)), "within grace");
        assert!(!tombstone_droppable(5_000, 7_000, grace, None), "no comparison agreed yet");
        assert!(!tombstone_droppable(5_000, 7_000, grace, Some(4_000)), "agreed before the delete");
        assert!(tombstone_droppable(5_000, 7_000, grace, Some(6_000)));
        assert!(!tombstone_droppable(u64::MAX, u64::MAX, grace, Some(u64::MAX)), "no overflow");
    }

    #[test]
    fn hints_older_than_grace_are_not_replayed() {
        assert!(hint_replayable(5_000, 5_900, 1_000));
        assert!(!hint_replayable(5_000, 6_001, 1_000));
        assert!(hint_replayable(u64::MAX, 0, 1_000));
    }

    #[test]
    fn hints_stop_at_the_limit_and_resume_once_replayed() {
        let mut budget = HintBudget::new(100);
        assert_eq!(budget.admit(2, 60), Admission::Store);
        assert_eq!(budget.admit(2, 60), Admission::OverLimit, "60 + 60 > 100");
        assert_eq!(budget.admit(3, 60), Admission::Store, "each replica has its own budget");
        budget.release(2, 60);
        assert_eq!(budget.admit(2, 60), Admission::Store);
        assert_eq!(budget.held().get(&2), Some(&60));
        budget.release(2, 1_000);
        assert_eq!(budget.held().get(&2), None);
    }
}
