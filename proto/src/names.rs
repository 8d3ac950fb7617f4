//! Validation of the names a client puts in a path: shop, collection and
//! record id. The rules are the API contract's "Names" section.

use thiserror::Error;

/// Longest shop name, in bytes.
pub const MAX_SHOP_LEN: usize = 128;
/// Longest collection name, in bytes.
pub const MAX_COLLECTION_LEN: usize = 64;
/// Longest record id, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// Why a name was refused; the message is shown to the client as is.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// A shop name outside `[A-Za-z0-9._-]{1,128}`.
    #[error("shop must be 1-{MAX_SHOP_LEN} bytes of [A-Za-z0-9._-]")]
    Shop,
    /// A collection name outside `[a-z0-9_]{1,64}`.
    #[error("collection must be 1-{MAX_COLLECTION_LEN} bytes of [a-z0-9_]")]
    Collection,
    /// An id that is empty, too long, starts with `_` or holds a `/`.
    #[error("id must be 1-{MAX_ID_LEN} bytes of UTF-8, must not start with '_' and must not contain '/'")]
    Id,
}

/// Checks a shop name.
pub fn validate_shop(shop: &str) -> Result<(), NameError> {
    let ok = (1..=MAX_SHOP_LEN).contains(&shop.len())
        && shop.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then_some(()).ok_or(NameError::Shop)
}

/// Checks a collection name.
pub fn validate_collection(collection: &str) -> Result<(), NameError> {
    let ok = (1..=MAX_COLLECTION_LEN).contains(&collection.len())
        && collection.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    ok.then_some(()).ok_or(NameError::Collection)
}

/// Checks a record id.
pub fn validate_id(id: &str) -> Result<(), NameError> {
    let ok = (1..=MAX_ID_LEN).contains(&id.len()) && !id.starts_with('_') && !id.contains('/');
    ok.then_some(()).ok_or(NameError::Id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shop_names() {
        assert!(validate_shop("shop-1.eu_west").is_ok());
        assert!(validate_shop(&"a".repeat(128)).is_ok());
        for bad in ["", "has space", "slash/", "ünï", &"a".repeat(129)] {
            assert_eq!(validate_shop(bad), Err(NameError::Shop), "{bad:?} should be refused");
        }
    }

    #[test]
    fn collection_names() {
        assert!(validate_collection("sales_2026").is_ok());
        for bad in ["", "Sales", "a-b", &"a".repeat(65)] {
            assert_eq!(validate_collection(bad), Err(NameError::Collection), "{bad:?} should be refused");
        }
    }

    #[test]
    fn record_ids() {
        assert!(validate_id("order 17 ✓").is_ok());
        for bad in ["", "_count", "a/b", &"x".repeat(257)] {
            assert_eq!(validate_id(bad), Err(NameError::Id), "{bad:?} should be refused");
        }
    }
}
