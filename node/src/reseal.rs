//! The reseal pass: after a data key is added, re-encrypts every stored
//! value under the newest key, in the background and at a bounded rate.
//!
//! Each pass reads the records in key order and hands the values sealed
//! under an older key (or stored in clear before encryption was turned on)
//! to the writer thread, sealed anew; the writer replaces a value only if
//! it is still the one read, so a write meanwhile is never undone. A pass
//! that finds nothing left under older keys, with no hint sealed under
//! them either, retires their key checks: from then on this node starts
//! without them, and they can leave its key file once every node's log has
//! said so.

use std::collections::BTreeMap;
use std::time::Duration;

use ringup_rpc::Clock;
use tokio_util::sync::CancellationToken;

use crate::pace::Pacer;
use crate::storage::{Storage, StorageError};

/// How long from one pass's start to the next, at least.
const INTERVAL: Duration = Duration::from_secs(30);
/// Values handed to the writer thread at once.
const BATCH: usize = 512;
/// Bytes read per step of a pass.
const STEP_BYTES: usize = 4 << 20;

/// Runs passes until `stop` is cancelled. `bytes_per_sec` bounds what a
/// pass reads; 0 runs none.
pub async fn run(storage: Storage, clock: Clock, bytes_per_sec: u64, stop: CancellationToken) {
    let Some(keys) = storage.data_keys().cloned() else { return };
    if bytes_per_sec == 0 {
        return;
    }
    loop {
        let next = clock.now() + INTERVAL;
        match pass(&storage, Pacer::new(clock, bytes_per_sec), &stop).await {
            Ok(Some(resealed)) => retire(&storage, keys.current(), resealed),
            Ok(None) => return,
            Err(e) => tracing::warn!(error = %e, "the reseal pass failed; trying again later"),
        }
        tokio::select! {
            _ = clock.sleep_until(next) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One pass over every record: how many values it sealed anew; `None` if
/// stopped.
async fn pass(storage: &Storage, mut pacer: Pacer, stop: &CancellationToken) -> Result<Option<u64>, StorageError> {
    let (mut after, mut resealed) = (None, 0u64);
    loop {
        let found = storage.stale_values(after.take(), BATCH, STEP_BYTES).await?;
        let n = found.values.len() as u64;
        if n > 0 {
            storage.reseal(found.values).await?;
            resealed += n;
        }
        if found.done {
            return Ok(Some(resealed));
        }
        after = found.last;
        tokio::select! {
            _ = pacer.pace(found.bytes as u64) => {}
            _ = stop.cancelled() => return Ok(None),
        }
    }
}

/// After a pass: if it resealed nothing, nothing older remains, so the
/// older keys' checks go once no hint needs them either.
fn retire(storage: &Storage, current: u32, resealed: u64) {
    if resealed > 0 {
        tracing::info!(resealed, key = current, "sealed values anew under the newest data key");
        return;
    }
    match storage.hint_keys() {
        Ok(by_key) if hints_all_current(&by_key, current) => {}
        Ok(_) => return,
        Err(e) => return tracing::warn!(error = %e, "cannot count the hints' keys"),
    }
    match storage.retire_key_checks(&[current]) {
        Ok(retired) if !retired.is_empty() => tracing::info!(
            ?retired,
            key = current,
            "no value or hint here is sealed under the older data keys any more; this node starts without them"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot retire the older data keys' checks"),
    }
}

/// Whether every hint is sealed under the `current` key (`by_key` counts
/// the hints under each key; `None`: in clear).
fn hints_all_current(by_key: &BTreeMap<Option<u32>, u64>, current: u32) -> bool {
    by_key.iter().all(|(key, n)| *key == Some(current) || *n == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_keys_retire_only_when_no_hint_is_under_them_or_in_clear() {
        assert!(hints_all_current(&BTreeMap::new(), 2), "no hints");
        assert!(hints_all_current(&BTreeMap::from([(Some(2), 40)]), 2));
        assert!(!hints_all_current(&BTreeMap::from([(Some(2), 40), (Some(1), 1)]), 2), "one under key 1");
        assert!(!hints_all_current(&BTreeMap::from([(None, 3)]), 2), "kept in clear before encryption");
    }
}
