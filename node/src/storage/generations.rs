//! Change counts per partition, which cached columns are checked against.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringup_proto::ring::PartitionId;

use super::Storage;

/// Slots of [`Generations`]: partitions share one when their ids are equal
/// modulo this, which costs only needless rebuilds of cached columns.
const GENERATION_SLOTS: usize = 4096;

/// A count of the changes to each partition's records: what cached
/// columns of a partition are checked against.
///
/// Each change raises its partitions' counts twice, once before it is
/// committed and once after, so an odd count means a change is under way.
/// A generation read while none is, and read again unchanged later, proves
/// that no change to the partition started in between: a scan made in
/// between saw exactly the records there were at the first read.
pub struct Generations {
    slots: Box<[AtomicU64]>,
    /// When each slot last moved, in milliseconds since `start`.
    moved: Box<[AtomicU64]>,
    /// Raised twice by each change of unknown partitions (an ingested file).
    all: AtomicU64,
    /// Such changes under way.
    all_running: AtomicU64,
    /// Quiet times are measured on the monotonic clock of the process, not
    /// on the node's handed clock: the writer thread that raises the slots
    /// is a plain thread outside the runtime, and a quiet time only decides
    /// whether caching a partition's columns is worth it now, which no
    /// protocol rule depends on.
    start: Instant,
}

impl Generations {
    pub(super) fn new() -> Self {
        let zeros = || (0..GENERATION_SLOTS).map(|_| AtomicU64::new(0)).collect();
        Self {
            slots: zeros(),
            moved: zeros(),
            all: AtomicU64::new(0),
            all_running: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    fn slot(partition: PartitionId) -> usize {
        partition as usize % GENERATION_SLOTS
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Raises the slots of the partitions whose keys start with these
    /// bytes, each once however many keys it has: before a commit, and
    /// again after it.
    pub(super) fn raise(&self, keys: &mut dyn Iterator<Item = &[u8]>) {
        let mut slots: Vec<usize> =
            keys.map(|key| key.first_chunk::<4>().map_or(0, |p| Self::slot(u32::from_be_bytes(*p)))).collect();
        slots.sort_unstable();
        slots.dedup();
        let now = self.now_ms();
        for slot in slots {
            self.slots[slot].fetch_add(1, Ordering::SeqCst);
            self.moved[slot].store(now, Ordering::SeqCst);
        }
    }

    /// Marks the start of a change of unknown partitions.
    pub(super) fn begin_all(&self) {
        self.all_running.fetch_add(1, Ordering::SeqCst);
        self.all.fetch_add(1, Ordering::SeqCst);
    }

    /// Marks its end.
    pub(super) fn end_all(&self) {
        self.all.fetch_add(1, Ordering::SeqCst);
        let now = self.now_ms();
        self.moved.iter().for_each(|m| m.store(now, Ordering::SeqCst));
        self.all_running.fetch_sub(1, Ordering::SeqCst);
    }

    /// The partition's generation, `None` while a change to it is under
    /// way; and how long it has been unchanged.
    pub fn of(&self, partition: PartitionId) -> (Option<u64>, Duration) {
        let slot = Self::slot(partition);
        let all = self.all.load(Ordering::SeqCst);
        let own = self.slots[slot].load(Ordering::SeqCst);
        let settled = own.is_multiple_of(2) && self.all_running.load(Ordering::SeqCst) == 0;
        let quiet = self.now_ms().saturating_sub(self.moved[slot].load(Ordering::SeqCst));
        (settled.then_some(own + all), Duration::from_millis(quiet))
    }
}

impl Storage {
    /// Counts of the changes to each partition's records.
    pub fn generations(&self) -> &Generations {
        &self.generations
    }
}
