//! Reading stored records' keys and fields without copying: what the row
//! scan of a report ([`crate::report`]) and the column segment builder
//! ([`crate::columns`]) share.

use std::borrow::Cow;

use ringup_proto::keys::{self, KeyError};
use ringup_proto::query::Val;

/// Calls `f` with `n` NULL values to fill: on the stack up to 8, else on
/// the heap.
pub fn with_vals<'a, T>(n: usize, f: impl FnOnce(&mut [Val<'a>]) -> T) -> T {
    let mut stack = [Val::Null; 8];
    let mut heap = Vec::new();
    let vals: &mut [Val<'a>] = if n <= stack.len() {
        &mut stack[..n]
    } else {
        heap.resize(n, Val::Null);
        &mut heap
    };
    f(vals)
}

/// The shop and id of a key within a collection's range, borrowed unless
/// they hold escaped zero bytes.
pub fn shop_and_id(key: &[u8], prefix_len: usize) -> Result<(Cow<'_, str>, Cow<'_, str>), KeyError> {
    let rest = key.get(prefix_len..).ok_or(KeyError::Truncated)?;
    let plain = |s: &[u8]| !s.contains(&0);
    // Without escapes a string ends at the first 0x00 0x00.
    if let Some(end) = rest.windows(2).position(|w| w == [0, 0]) {
        let (shop, tail) = (&rest[..end], &rest[end + 2..]);
        if plain(shop) && tail.len() >= 2 && tail.ends_with(&[0, 0]) && plain(&tail[..tail.len() - 2]) {
            let shop = std::str::from_utf8(shop).map_err(|_| KeyError::NotUtf8)?;
            let id = std::str::from_utf8(&tail[..tail.len() - 2]).map_err(|_| KeyError::NotUtf8)?;
            return Ok((Cow::Borrowed(shop), Cow::Borrowed(id)));
        }
    }
    let (shop, id) = keys::shop_and_id(key, prefix_len)?;
    Ok((Cow::Owned(shop), Cow::Owned(id)))
}
