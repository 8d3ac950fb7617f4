//! Typed keys of the `data` column family and their order-preserving
//! encoding.
//!
//! ```text
//! RecordKey:  partition (u32 BE) | collection | shop | id
//! a string:   its bytes with 0x00 written as 0x00 0xFF, then 0x00 0x00
//! ```
//!
//! Comparing two encoded keys byte by byte gives the same order as comparing
//! the tuples `(partition, collection, shop, id)`. So one partition is one
//! contiguous key range (the unit of streaming, deletion and repair), one
//! collection is a contiguous range inside it (what a report on it scans,
//! never touching other collections), and one shop's collection is a
//! contiguous range inside that, listed in `id` order.
//!
//! This is the layout of data format [`DATA_FORMAT`]; a node stores the
//! format it writes and refuses a directory of another.

use thiserror::Error;

use crate::ring::PartitionId;

/// The version of the on-disk data layout: 2 since a collection's records
/// of all shops lie together (format 1 put the shop first); 3 since the
/// cluster map in the Raft state holds the API tokens and values may be
/// sealed at rest.
pub const DATA_FORMAT: u32 = 3;

/// The key of one record in the `data` column family.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey {
    /// The shop's partition.
    pub partition: PartitionId,
    /// The collection.
    pub collection: String,
    /// The shop.
    pub shop: String,
    /// The record's id.
    pub id: String,
}

/// A key that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// The bytes end before the key does.
    #[error("key is truncated")]
    Truncated,
    /// An escape byte other than 0x00 or 0xFF follows a 0x00.
    #[error("key has an invalid escape")]
    BadEscape,
    /// A string is not UTF-8.
    #[error("key holds a string that is not UTF-8")]
    NotUtf8,
    /// Bytes are left after the last field.
    #[error("key has trailing bytes")]
    Trailing,
}

impl RecordKey {
    /// Encodes the key.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = collection_prefix(self.partition, &self.shop, &self.collection);
        put_str(&mut out, &self.id);
        out
    }

    /// Decodes a key made by [`RecordKey::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyError> {
        let (partition, mut rest) = bytes.split_first_chunk::<4>().ok_or(KeyError::Truncated)?;
        let collection = take_str(&mut rest)?;
        let shop = take_str(&mut rest)?;
        let id = take_str(&mut rest)?;
        if !rest.is_empty() {
            return Err(KeyError::Trailing);
        }
        Ok(Self { partition: u32::from_be_bytes(*partition), shop, collection, id })
    }
}

/// The bounds `[start, end)` of every key of `partition`.
pub fn partition_range(partition: PartitionId) -> (Vec<u8>, Vec<u8>) {
    let start = partition.to_be_bytes().to_vec();
    let end = prefix_end(&start);
    (start, end)
}

/// The prefix shared by every key of one shop's collection.
pub fn collection_prefix(partition: PartitionId, shop: &str, collection: &str) -> Vec<u8> {
    let mut out = table_prefix(partition, collection);
    put_str(&mut out, shop);
    out
}

/// The prefix shared by every key of a collection within a partition, of
/// every shop.
fn table_prefix(partition: PartitionId, collection: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + collection.len() + 2 + 32);
    out.extend_from_slice(&partition.to_be_bytes());
    put_str(&mut out, collection);
    out
}

/// The bounds `[start, end)` of the keys of a collection within a
/// partition, of every shop: what a report scans.
pub fn table_range(partition: PartitionId, collection: &str) -> (Vec<u8>, Vec<u8>) {
    let start = table_prefix(partition, collection);
    let end = prefix_end(&start);
    (start, end)
}

/// The shop and id of a key within a collection's range: the key's bytes
/// after the [`table_range`] prefix of `prefix_len` bytes.
pub fn shop_and_id(key: &[u8], prefix_len: usize) -> Result<(String, String), KeyError> {
    let mut rest = key.get(prefix_len..).ok_or(KeyError::Truncated)?;
    let shop = take_str(&mut rest)?;
    let id = take_str(&mut rest)?;
    if !rest.is_empty() {
        return Err(KeyError::Trailing);
    }
    Ok((shop, id))
}

/// The bounds `[start, end)` of the keys of one shop's collection whose id is
/// greater than `after` (all of them without `after`).
pub fn collection_range(
    partition: PartitionId,
    shop: &str,
    collection: &str,
    after: Option<&str>,
) -> (Vec<u8>, Vec<u8>) {
    let prefix = collection_prefix(partition, shop, collection);
    let end = prefix_end(&prefix);
    let mut start = prefix;
    if let Some(after) = after {
        put_str(&mut start, after);
        // The least key above `after`'s own key.
        start.push(0);
    }
    (start, end)
}

/// The least byte string greater than every string that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    panic!("no key follows a prefix of 0xFF bytes only");
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

fn take_str(rest: &mut &[u8]) -> Result<String, KeyError> {
    let mut bytes = Vec::new();
    let mut i = 0;
    loop {
        match (rest.get(i), rest.get(i + 1)) {
            (Some(0), Some(0)) => break,
            (Some(0), Some(0xFF)) => {
                bytes.push(0);
                i += 2;
            }
            (Some(0), Some(_)) => return Err(KeyError::BadEscape),
            (Some(&b), _) => {
                bytes.push(b);
                i += 1;
            }
            (None, _) => return Err(KeyError::Truncated),
        }
    }
    *rest = &rest[i + 2..];
    String::from_utf8(bytes).map_err(|_| KeyError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(partition: u32, shop: &str, collection: &str, id: &str) -> RecordKey {
        RecordKey { partition, collection: collection.into(), shop: shop.into(), id: id.into() }
    }

    fn any_key() -> impl Strategy<Value = RecordKey> {
        (0u32..4, "[a\u{0}b]{0,4}", "[a\u{0}\u{ff}]{0,3}", "\\PC{0,6}").prop_map(|(p, s, c, i)| key(p, &s, &c, &i))
    }

    #[test]
    fn the_layout_is_as_documented() {
        let encoded = key(1, "s", "c", "a\0b").encode();
        assert_eq!(encoded, b"\0\0\0\x01c\0\0s\0\0a\0\xffb\0\0");
    }

    #[test]
    fn corrupt_keys_are_errors() {
        assert_eq!(RecordKey::decode(b"\0\0"), Err(KeyError::Truncated));
        assert_eq!(RecordKey::decode(b"\0\0\0\x01s\0\x07"), Err(KeyError::BadEscape));
        assert_eq!(RecordKey::decode(b"\0\0\0\x01s\0\0c\0\0i\0\0x"), Err(KeyError::Trailing));
        assert_eq!(RecordKey::decode(b"\0\0\0\x01\xc3\0\0c\0\0i\0\0"), Err(KeyError::NotUtf8));
    }

    #[test]
    fn a_cursor_range_starts_after_its_id() {
        let (start, end) = collection_range(3, "s", "c", Some("b"));
        assert!(key(3, "s", "c", "b").encode() < start);
        assert!(key(3, "s", "c", "b\0").encode() >= start);
        assert!(key(3, "s", "c", "ba").encode() >= start);
        assert!(key(3, "s", "c", "\u{10FFFF}").encode() < end);
        assert!(key(3, "s", "ca", "").encode() >= end);
    }

    proptest! {
        #[test]
        fn encoding_order_equals_tuple_order(a in any_key(), b in any_key()) {
            prop_assert_eq!(a.encode().cmp(&b.encode()), a.cmp(&b));
        }

        #[test]
        fn encoding_round_trips(k in any_key()) {
            prop_assert_eq!(RecordKey::decode(&k.encode()), Ok(k));
        }

        #[test]
        fn ranges_hold_exactly_their_keys(k in any_key(), p in 0u32..4, shop in "[a\u{0}b]{0,4}", coll in "[a\u{0}\u{ff}]{0,3}") {
            let encoded = k.encode();
            let (ps, pe) = partition_range(p);
            prop_assert_eq!(ps <= encoded && encoded < pe, k.partition == p);
            let (cs, ce) = collection_range(p, &shop, &coll, None);
            prop_assert_eq!(cs <= encoded && encoded < ce, k.partition == p && k.shop == shop && k.collection == coll);
            let (ts, te) = table_range(p, &coll);
            let in_table = ts <= encoded && encoded < te;
            prop_assert_eq!(in_table, k.partition == p && k.collection == coll);
            if in_table {
                prop_assert_eq!(shop_and_id(&encoded, ts.len()), Ok((k.shop.clone(), k.id.clone())));
            }
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = RecordKey::decode(&bytes);
        }
    }
}
