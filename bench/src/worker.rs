//! One simulated client: its record stream, the records it wrote, and the
//! loop that sends one request at a time and measures it.

use std::sync::Arc;
use std::time::Instant;

use crate::keys::{Key, KeySet};
use crate::pace::Pace;
use crate::progress::Progress;
use crate::report::{Op, Stats};
use crate::workload::Stream;
use crate::{Client, LIST_PAGE, LoadArgs};

/// One simulated client: one request at a time.
pub struct Worker<C> {
    client: C,
    stream: Stream,
    /// Percent of gets and of lists.
    mix: (u8, u8),
    /// How GETs pick records: uniformly, or Zipf with this exponent.
    zipf: Option<f64>,
    /// (shop, sequence number) of the records this client wrote and has
    /// not handed over to the shared [`KeySet`].
    written: Vec<(usize, u64)>,
    progress: Arc<Progress>,
}

impl<C: Client> Worker<C> {
    /// Client number `c` of a run shaped by `args`.
    pub fn new(client: C, args: &LoadArgs, c: usize, progress: Arc<Progress>) -> Self {
        let stream = Stream::new(args.workload(), c);
        Self { client, stream, mix: (args.gets, args.lists), zipf: args.zipf, written: Vec::new(), progress }
    }

    /// Writes `batches` batches, unmeasured; the worker back, ready to run.
    pub async fn preload(mut self, batches: u64) -> anyhow::Result<Self> {
        for _ in 0..batches {
            self.write().await.map_err(|e| anyhow::anyhow!("preloading failed: {e}"))?;
        }
        Ok(self)
    }

    /// The records written so far, handed over for the shared [`KeySet`]:
    /// from now on this client's own list holds only what it writes next.
    pub fn hand_over(&mut self) -> Vec<Key> {
        let stream = &self.stream;
        let keys = self.written.iter().map(|(shop, seq)| Key { shop: *shop, id: stream.record_id(*seq) }).collect();
        self.written.clear();
        keys
    }

    /// Sends requests as `pace` lets it until it says stop or `deadline`
    /// passes; GETs read `keys` and this client's own new records.
    pub async fn run(mut self, pace: Pace, deadline: Option<Instant>, keys: Arc<KeySet>) -> Stats {
        let mut stats = Stats::default();
        let mut sent = 0u64;
        while let Some(begun) = pace.next(sent).await {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let (op, outcome) = self.one(&keys).await;
            self.progress.count(&outcome);
            stats.record(op, begun.elapsed(), outcome);
            sent += 1;
        }
        stats
    }

    /// Picks and sends one request.
    async fn one(&mut self, keys: &KeySet) -> (Op, Result<(u64, u64), String>) {
        let (gets, lists) = self.mix;
        let roll = self.stream.pick(100) as u8;
        if roll < gets {
            if let Some(key) = self.pick_key(keys) {
                return (Op::Get, self.get(&key).await);
            }
        } else if roll < gets + lists {
            return (Op::List, self.list().await);
        }
        // A write, also when a GET finds nothing to read yet.
        (Op::Write, self.write().await)
    }

    /// A record to read: one of `keys`, or one this client wrote since the
    /// start (see [`KeySet::choose`]).
    fn pick_key(&mut self, keys: &KeySet) -> Option<Key> {
        let i = keys.choose(self.written.len(), self.zipf, &mut self.stream)?;
        Some(match i.checked_sub(keys.len()) {
            None => keys.get(i).clone(),
            Some(own) => {
                let (shop, seq) = self.written[own];
                Key { shop, id: self.stream.record_id(seq) }
            }
        })
    }

    async fn write(&mut self) -> Result<(u64, u64), String> {
        let (shop, sales) = self.stream.next_batch();
        let bytes = self.client.write(&Stream::shop_name(shop), &sales).await?;
        self.written.extend(sales.iter().map(|s| (shop, s.seq)));
        Ok((sales.len() as u64, bytes))
    }

    async fn get(&mut self, key: &Key) -> Result<(u64, u64), String> {
        let bytes = self.client.get(&Stream::shop_name(key.shop), &key.id).await?;
        Ok((1, bytes))
    }

    async fn list(&mut self) -> Result<(u64, u64), String> {
        let shop = self.stream.pick_shop();
        self.client.list(&Stream::shop_name(shop), LIST_PAGE).await
    }
}
