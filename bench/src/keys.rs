//! The records GETs read.
//!
//! Once every client has preloaded, the records they wrote are gathered
//! into one read-only [`KeySet`] that every client's GETs pick from, so a
//! client reads what others wrote, not only its own records. The set is
//! sorted, then shuffled by the seed: the same seed gives the same order
//! whichever client finished preloading first, and the hot ranks of
//! `--zipf` fall on records of many shops rather than on one client's
//! first batch (a batch is one shop's).
//!
//! During the run a client may also read the records it has written since
//! the start: its GETs pick an index over the set followed by its own new
//! records ([`KeySet::choose`]), uniformly or, with `--zipf`, by rank in
//! that order.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::workload::Stream;

/// A record to read: its shop's number and its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// The shop, as [`Stream::shop_name`] names it.
    pub shop: usize,
    /// The record's id within the shop.
    pub id: String,
}

/// Every client's preloaded records, in the seed's order.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// The set of `keys`, gathered from every client in any order: sorted,
    /// then shuffled by `seed`.
    pub fn gather(keys: impl IntoIterator<Item = Key>, seed: u64) -> Self {
        let mut keys: Vec<Key> = keys.into_iter().collect();
        keys.sort();
        keys.dedup();
        keys.shuffle(&mut StdRng::seed_from_u64(seed));
        Self { keys }
    }

    /// How many records the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no client preloaded anything.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The record at `rank`, from 0.
    pub fn get(&self, rank: usize) -> &Key {
        &self.keys[rank]
    }

    /// An index into the set followed by `own` more records (a client's own
    /// since the start), from `stream`: uniform, or Zipf of exponent `zipf`
    /// (index 0 the most often). `None` when there is nothing to read.
    pub fn choose(&self, own: usize, zipf: Option<f64>, stream: &mut Stream) -> Option<usize> {
        let n = self.len() + own;
        if n == 0 {
            return None;
        }
        Some(match zipf {
            Some(s) => stream.pick_zipf(n, s),
            None => stream.pick(n),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Workload;

    const SPEC: Workload = Workload { shops: 10, batch: 5, record_size: 64, seed: 3 };

    fn key(shop: usize, id: &str) -> Key {
        Key { shop, id: id.to_string() }
    }

    fn ids(set: &KeySet) -> Vec<String> {
        (0..set.len()).map(|i| set.get(i).id.clone()).collect()
    }

    #[test]
    fn the_gathered_set_holds_every_clients_records_once() {
        let first = [key(1, "c000-1"), key(2, "c000-2")];
        let second = [key(3, "c001-1"), key(1, "c000-1")];
        let set = KeySet::gather(first.into_iter().chain(second), 9);
        let mut got = ids(&set);
        got.sort();
        assert_eq!(got, ["c000-1", "c000-2", "c001-1"]);
    }

    #[test]
    fn the_order_comes_from_the_seed_not_from_which_client_came_first() {
        let keys: Vec<Key> = (0..50).map(|i| key(i % 7, &format!("c{:03}-{i}", i % 4))).collect();
        let reversed: Vec<Key> = keys.iter().rev().cloned().collect();
        let (a, b) = (KeySet::gather(keys.clone(), 1), KeySet::gather(reversed, 1));
        assert_eq!(ids(&a), ids(&b), "the same seed, the same order");
        assert_ne!(ids(&a), ids(&KeySet::gather(keys, 2)), "another seed, another order");
    }

    #[test]
    fn choices_stay_in_range_and_repeat_with_the_seed() {
        let set = KeySet::gather((0..40).map(|i| key(0, &format!("k{i}"))), 1);
        for zipf in [None, Some(0.8), Some(1.5)] {
            let choices = || {
                let mut stream = Stream::new(SPEC, 2);
                (0..500).map(|_| set.choose(10, zipf, &mut stream).unwrap()).collect::<Vec<_>>()
            };
            let first = choices();
            assert!(first.iter().all(|i| *i < 50), "within the set and the client's 10 own: {zipf:?}");
            assert!(first.iter().any(|i| *i >= 40), "own records are picked too: {zipf:?}");
            assert_eq!(first, choices(), "the same seed makes the same choices: {zipf:?}");
        }
    }

    #[test]
    fn nothing_is_chosen_from_nothing() {
        let mut stream = Stream::new(SPEC, 0);
        assert_eq!(KeySet::default().choose(0, None, &mut stream), None);
        assert_eq!(KeySet::default().choose(0, Some(1.0), &mut stream), None);
        assert_eq!(KeySet::default().choose(1, Some(1.0), &mut stream), Some(0));
    }
}
