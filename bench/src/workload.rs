//! The benchmark's record stream: sales from many shops, made from a seed
//! so that a run can be repeated exactly. The same stream can be written to
//! any system under comparison.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde_json::{Map, Value, json};

/// 2026-01-01T00:00:00Z in milliseconds: sales are stamped from here on.
const EPOCH_MS: i64 = 1_767_225_600_000;
const CURRENCIES: [&str; 4] = ["EUR", "USD", "GBP", "SEK"];

/// The shape of the stream.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Shops the records are spread over.
    pub shops: usize,
    /// Records per batch.
    pub batch: usize,
    /// About how many bytes each record takes as JSON.
    pub record_size: usize,
    /// The seed every client's stream derives from.
    pub seed: u64,
}

/// One sale.
#[derive(Debug, Clone, PartialEq)]
pub struct Sale {
    /// The sale's number in its client's stream, from 1.
    pub seq: u64,
    /// Unique within a run: the client and its sequence number.
    pub id: String,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    /// In cents.
    pub amount_cents: i64,
    /// ISO 4217 code.
    pub currency: &'static str,
    /// The product.
    pub sku: String,
    /// Units sold.
    pub qty: u32,
    /// The buyer.
    pub customer: String,
    /// Free text that brings the record to its size.
    pub note: String,
    /// The length of [`Sale::to_json`] as text, in bytes.
    pub json_len: usize,
}

impl Sale {
    /// The record as the HTTP API takes it.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "ts": self.ts,
            "amount": self.amount_cents as f64 / 100.0,
            "currency": self.currency,
            "sku": self.sku,
            "qty": self.qty,
            "customer": self.customer,
            "note": self.note,
        })
    }
}

impl Sale {
    /// The record's fields as a store keeps them apart from its key and
    /// time: the JSON without `id` and `ts`.
    pub fn fields(&self) -> Map<String, Value> {
        let mut fields = match self.to_json() {
            Value::Object(fields) => fields,
            _ => unreachable!("a sale is a JSON object"),
        };
        fields.remove("id");
        fields.remove("ts");
        fields
    }
}

/// One client's share of the stream.
pub struct Stream {
    spec: Workload,
    client: usize,
    rng: StdRng,
    seq: u64,
}

impl Stream {
    /// The stream of client `client`; the same seed and client give the
    /// same records in the same order.
    pub fn new(spec: Workload, client: usize) -> Self {
        let rng = StdRng::seed_from_u64(spec.seed ^ (client as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        Self { spec, client, rng, seq: 0 }
    }

    /// The name of shop `i`.
    pub fn shop_name(i: usize) -> String {
        format!("bench-shop-{i:05}")
    }

    /// The id of this client's record number `seq`.
    pub fn record_id(&self, seq: u64) -> String {
        format!("c{:03}-{seq:09}", self.client)
    }

    /// A shop picked at random.
    pub fn pick_shop(&mut self) -> usize {
        self.rng.random_range(0..self.spec.shops)
    }

    /// A number in `0..n`, from the stream's generator.
    pub fn pick(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }

    /// A number in `0..n` by a Zipf distribution of exponent `s`: 0 the
    /// most likely, then 1, and so on.
    pub fn pick_zipf(&mut self, n: usize, s: f64) -> usize {
        let zipf = Zipf::new(n as f64, s).expect("n >= 1 and s > 0 are checked before a run");
        (zipf.sample(&mut self.rng) as usize).clamp(1, n) - 1
    }

    /// The next batch: a shop and its new sales.
    pub fn next_batch(&mut self) -> (usize, Vec<Sale>) {
        let shop = self.pick_shop();
        let sales = (0..self.spec.batch).map(|_| self.next_sale()).collect();
        (shop, sales)
    }

    fn next_sale(&mut self) -> Sale {
        self.seq += 1;
        let id = self.record_id(self.seq);
        let rng = &mut self.rng;
        let mut sale = Sale {
            seq: self.seq,
            id,
            ts: EPOCH_MS + self.seq as i64 * 1000 + rng.random_range(0..1000),
            amount_cents: rng.random_range(100..50_000),
            currency: CURRENCIES[rng.random_range(0..CURRENCIES.len())],
            sku: format!("SKU-{:05}", rng.random_range(0..20_000)),
            qty: rng.random_range(1..10),
            customer: format!("cust-{:07}", rng.random_range(0..1_000_000)),
            note: String::new(),
            json_len: 0,
        };
        let base = sale.to_json().to_string().len();
        let pad = self.spec.record_size.saturating_sub(base);
        // Lowercase letters need no escaping: each adds one byte of JSON.
        sale.note = (0..pad).map(|_| char::from(b'a' + rng.random_range(0..26u8))).collect();
        sale.json_len = base + pad;
        sale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: Workload = Workload { shops: 10, batch: 5, record_size: 256, seed: 42 };

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let (mut a, mut b) = (Stream::new(SPEC, 3), Stream::new(SPEC, 3));
        for _ in 0..20 {
            assert_eq!(a.next_batch(), b.next_batch());
        }
        let mut other = Stream::new(SPEC, 4);
        assert_ne!(Stream::new(SPEC, 3).next_batch(), other.next_batch(), "clients differ");
    }

    #[test]
    fn zipf_picks_stay_in_range_favour_the_first_and_repeat_with_the_seed() {
        let picks = |seed| {
            let mut stream = Stream::new(Workload { seed, ..SPEC }, 0);
            (0..2000).map(|_| stream.pick_zipf(100, 1.1)).collect::<Vec<_>>()
        };
        let a = picks(7);
        assert!(a.iter().all(|i| *i < 100));
        let first = a.iter().filter(|i| **i == 0).count();
        let last = a.iter().filter(|i| **i == 99).count();
        assert!(first > 10 * last.max(1), "rank 1 drawn {first} times, rank 100 {last} times");
        assert_eq!(a, picks(7), "the same seed picks the same records");
    }

    #[test]
    fn records_have_the_asked_size_and_unique_ids() {
        let mut stream = Stream::new(SPEC, 0);
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let (shop, sales) = stream.next_batch();
            assert!(shop < SPEC.shops);
            assert_eq!(sales.len(), SPEC.batch);
            for sale in sales {
                assert_eq!(sale.to_json().to_string().len(), SPEC.record_size);
                assert_eq!(sale.json_len, SPEC.record_size);
                assert!(ids.insert(sale.id));
            }
        }
    }
}
