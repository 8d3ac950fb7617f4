//! The partition ring: `Q` fixed partitions and the stable shop → partition
//! hash.
//!
//! `partition(shop) = (xxh3_64_with_seed(shop, SEED) * Q) >> 64`. The hash and
//! its seed are part of the on-disk format: every process and every version
//! must agree on them, so they never change.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The seed of the shop hash. Fixed forever.
const SEED: u64 = 0x7269_6e67_7570_0001;

/// The default number of partitions.
pub const DEFAULT_PARTITIONS: u32 = 1024;

/// A partition's number, `0..Q`.
pub type PartitionId = u32;

/// The ring's shape: how many partitions it has. Fixed when a cluster is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    partitions: u32,
}

impl Ring {
    /// A ring of `partitions` partitions, which must be a power of two.
    pub fn new(partitions: u32) -> Self {
        assert!(partitions.is_power_of_two(), "the partition count must be a power of two, not {partitions}");
        Self { partitions }
    }

    /// How many partitions the ring has.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition that holds all records of `shop`.
    pub fn partition_of(&self, shop: &str) -> PartitionId {
        let hash = xxh3_64_with_seed(shop.as_bytes(), SEED);
        ((u128::from(hash) * u128::from(self.partitions)) >> 64) as PartitionId
    }
}

impl Default for Ring {
    fn default() -> Self {
        Self::new(DEFAULT_PARTITIONS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_hash_is_stable() {
        // These values are part of the on-disk format: if this test fails,
        // existing clusters would look for their shops in the wrong place.
        let ring = Ring::default();
        let got: Vec<_> = ["shop-1", "shop-2", "acme", ""].iter().map(|s| ring.partition_of(s)).collect();
        assert_eq!(got, STABLE_PARTITIONS);
    }

    const STABLE_PARTITIONS: [u32; 4] = [1021, 416, 326, 997];

    #[test]
    fn shops_spread_evenly() {
        let ring = Ring::new(64);
        let mut counts = [0u32; 64];
        for i in 0..64_000 {
            counts[ring.partition_of(&format!("shop-{i}")) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 800 && *max < 1200, "uneven spread: min {min}, max {max}");
    }

    proptest! {
        #[test]
        fn partition_is_in_range(shop in ".{0,40}", bits in 0u32..16) {
            let ring = Ring::new(1 << bits);
            prop_assert!(ring.partition_of(&shop) < ring.partitions());
        }
    }
}
