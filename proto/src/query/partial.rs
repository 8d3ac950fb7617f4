//! Partial results: what a node returns for the partitions it scanned, how
//! the router merges them, and how the merged states become PostgreSQL's
//! results.
//!
//! Every state merges associatively and commutatively, so partitions can
//! be scanned anywhere and merged in any grouping; a partition's part is
//! merged only once it is whole.
//!
//! | aggregate | state | result |
//! |---|---|---|
//! | `count` | rows (non-NULL values) | `bigint`, 0 over no rows |
//! | `sum` | exact integer sum, double sum, counts | `numeric` from integers only, else `double`; NULL over no values |
//! | `avg` | as `sum` | the sum over the count, a double |
//! | `min`, `max` | the extreme of each kind | of numbers if any, else timestamps, text, booleans |
//! | `count(DISTINCT)` | the set of values | its size |

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hasher;

use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Serialize};

use super::plan::{AggFunc, Aggregate, Expr, OrderKey, Plan, Row, Shape};
use super::scalar::{Scalar, Val};

/// A partial aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum State {
    /// Rows or non-NULL values counted.
    Count(u64),
    /// Sums of the integer and of the double values, and how many of each.
    Sum {
        /// The exact sum of the integers.
        ints: i128,
        /// The sum of the doubles.
        floats: f64,
        /// Integers summed.
        int_count: u64,
        /// Doubles summed.
        float_count: u64,
    },
    /// The least (or greatest) value of each kind seen.
    Extreme {
        /// Greatest rather than least.
        max: bool,
        /// Per kind: numbers, timestamps, text, booleans.
        best: [Option<Scalar>; 4],
    },
    /// The distinct non-NULL values.
    Distinct(DistinctSet),
}

/// The distinct values of a group: text apart, in a hash set, so that a
/// row's borrowed text is looked up quickly and without allocating.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DistinctSet {
    texts: HashSet<String, FxBuildHasher>,
    others: BTreeSet<Scalar>,
}

impl DistinctSet {
    fn insert(&mut self, v: Val<'_>) {
        match v {
            Val::Null => {}
            Val::Text(t) => {
                if !self.texts.contains(t) {
                    self.texts.insert(t.to_string());
                }
            }
            other => {
                self.others.insert(other.to_scalar());
            }
        }
    }

    fn union(&mut self, other: DistinctSet) {
        // The smaller set goes into the larger.
        let mut theirs = other.texts;
        if self.texts.len() < theirs.len() {
            std::mem::swap(&mut self.texts, &mut theirs);
        }
        self.texts.extend(theirs);
        self.others.extend(other.others);
    }

    fn len(&self) -> usize {
        self.texts.len() + self.others.len()
    }
}

impl State {
    /// The empty state of an aggregate.
    pub fn new(func: AggFunc) -> Self {
        match func {
            AggFunc::Count => State::Count(0),
            AggFunc::CountDistinct => State::Distinct(DistinctSet::default()),
            AggFunc::Sum | AggFunc::Avg => State::Sum { ints: 0, floats: 0.0, int_count: 0, float_count: 0 },
            AggFunc::Min => State::Extreme { max: false, best: Default::default() },
            AggFunc::Max => State::Extreme { max: true, best: Default::default() },
        }
    }

    /// Takes one row's value; `None` is `count(*)`'s row.
    pub fn add(&mut self, value: Option<Val<'_>>) {
        match (self, value) {
            (State::Count(n), None) => *n += 1,
            (_, None | Some(Val::Null)) => {}
            (State::Count(n), Some(_)) => *n += 1,
            (State::Sum { ints, int_count, .. }, Some(Val::Int(i))) => {
                *ints += i128::from(i);
                *int_count += 1;
            }
            (State::Sum { floats, float_count, .. }, Some(Val::Float(x))) => {
                *floats += x;
                *float_count += 1;
            }
            (State::Sum { .. }, Some(_)) => {}
            (State::Extreme { max, best }, Some(Val::Text(t))) => {
                // Text is copied only when it is the new extreme.
                let better = match &best[TEXT_SLOT] {
                    Some(Scalar::Text(current)) => (t.as_bytes() > current.as_bytes()) == *max && t != current,
                    _ => true,
                };
                if better {
                    best[TEXT_SLOT] = Some(Scalar::Text(t.to_string()));
                }
            }
            (State::Extreme { max, best }, Some(v)) => offer(best, *max, v.to_scalar()),
            (State::Distinct(set), Some(v)) => set.insert(v),
        }
    }

    /// Folds another partial state of the same aggregate into this one.
    pub fn merge(&mut self, other: State) {
        match (self, other) {
            (State::Count(a), State::Count(b)) => *a += b,
            (
                State::Sum { ints, floats, int_count, float_count },
                State::Sum { ints: i2, floats: f2, int_count: n2, float_count: m2 },
            ) => {
                *ints += i2;
                *floats += f2;
                *int_count += n2;
                *float_count += m2;
            }
            (State::Extreme { max, best }, State::Extreme { best: other, .. }) => {
                for v in other.into_iter().flatten() {
                    offer(best, *max, v);
                }
            }
            (State::Distinct(a), State::Distinct(b)) => a.union(b),
            (this, other) => panic!("merging partial states of different aggregates: {this:?} and {other:?}"),
        }
    }

    /// Values held beyond a fixed size: what counts toward a query's cap.
    pub fn held(&self) -> usize {
        match self {
            State::Distinct(set) => set.len(),
            _ => 0,
        }
    }

    /// The aggregate's result.
    pub fn finish(&self, func: AggFunc) -> Scalar {
        match self {
            State::Count(n) => Scalar::Int(i128::from(*n)),
            State::Distinct(set) => Scalar::Int(set.len() as i128),
            State::Sum { ints, floats, int_count, float_count } => {
                let n = int_count + float_count;
                match (func, n, *float_count) {
                    (_, 0, _) => Scalar::Null,
                    (AggFunc::Sum, _, 0) => Scalar::Int(*ints),
                    (AggFunc::Sum, _, _) => Scalar::float(*ints as f64 + floats),
                    _ => Scalar::float((*ints as f64 + floats) / n as f64),
                }
            }
            State::Extreme { best, .. } => best.iter().flatten().next().cloned().unwrap_or(Scalar::Null),
        }
    }
}

/// The slot of text among an extreme's kinds.
const TEXT_SLOT: usize = 2;

/// Offers `v` as the extreme of its kind.
fn offer(best: &mut [Option<Scalar>; 4], max: bool, v: Scalar) {
    let slot = match v {
        Scalar::Null => return,
        Scalar::Int(_) | Scalar::Float(_) => 0,
        Scalar::Ts(_) => 1,
        Scalar::Text(_) => TEXT_SLOT,
        Scalar::Bool(_) => 3,
    };
    let better = match &best[slot] {
        None => true,
        Some(current) => (v.cmp(current) == Ordering::Greater) == max && v != *current,
    };
    if better {
        best[slot] = Some(v);
    }
}

/// What a node returns for the partitions it scanned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Partial {
    /// Per group: its keys and its aggregates' states.
    Groups(Vec<(Vec<Scalar>, Vec<State>)>),
    /// Wide rows: all of them, or when the plan orders and limits, the
    /// first `limit` in its order.
    Rows(Vec<Vec<Scalar>>),
}

/// The cap of a query was passed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the query holds more than {cap} groups and distinct values in memory")]
pub struct TooManyGroups {
    /// The cap.
    pub cap: usize,
}

/// Accumulates a plan's partial result, row by row on a node or part by
/// part on the router, holding at most `cap` groups and distinct values
/// (and, for plain rows without an order, `limit` rows).
///
/// Groups are found by a hash of their keys computed from the row's
/// borrowed values, so a row allocates only when it starts a new group;
/// the last group found is tried first (records come in key order, so
/// rows of one shop come together).
#[derive(Debug)]
pub struct Accumulator<'p> {
    plan: &'p Plan,
    cap: usize,
    held: usize,
    groups: Vec<(Vec<Scalar>, Vec<State>)>,
    /// Key hash → indexes into `groups`.
    index: HashMap<u64, Vec<usize>>,
    last: Option<usize>,
    rows: Vec<Vec<Scalar>>,
}

impl<'p> Accumulator<'p> {
    /// An empty partial result of `plan`.
    pub fn new(plan: &'p Plan, cap: usize) -> Self {
        Self { plan, cap, held: 0, groups: Vec::new(), index: HashMap::new(), last: None, rows: Vec::new() }
    }

    /// The index of the group whose keys `row` has, if there is one yet.
    fn find(&self, keys: &[Expr], row: &Row<'_>, hash: u64) -> Option<usize> {
        let matches = |i: usize| keys.iter().zip(&self.groups[i].0).all(|(k, s)| val_matches(k.eval(row), s));
        if let Some(last) = self.last.filter(|l| matches(*l)) {
            return Some(last);
        }
        self.index.get(&hash)?.iter().copied().find(|i| matches(*i))
    }

    /// Adds a group with these keys and states; returns its index.
    fn insert(&mut self, hash: u64, key: Vec<Scalar>, states: Vec<State>) -> usize {
        self.held += 1 + states.iter().map(State::held).sum::<usize>();
        self.groups.push((key, states));
        let i = self.groups.len() - 1;
        self.index.entry(hash).or_default().push(i);
        i
    }

    /// Takes one row that passed the filter.
    pub fn add(&mut self, row: &Row<'_>) -> Result<(), TooManyGroups> {
        match &self.plan.shape {
            Shape::Groups { keys, aggregates } => {
                let hash = {
                    let mut h = KeyHasher::default();
                    keys.iter().for_each(|k| h.val(k.eval(row)));
                    h.finish()
                };
                let i = match self.find(keys, row, hash) {
                    Some(i) => i,
                    None => {
                        let key = keys.iter().map(|k| k.eval(row).to_scalar()).collect();
                        self.insert(hash, key, aggregates.iter().map(|a| State::new(a.func)).collect())
                    }
                };
                self.last = Some(i);
                let states = &mut self.groups[i].1;
                for (state, agg) in states.iter_mut().zip(aggregates) {
                    let before = state.held();
                    state.add(agg.arg.as_ref().map(|e| e.eval(row)));
                    self.held += state.held() - before;
                }
            }
            Shape::Rows { values } => {
                self.rows.push(values.iter().map(|v| v.eval(row).to_scalar()).collect());
                self.trim_rows();
            }
        }
        self.check()
    }

    /// The index of the group with these keys, if there is one yet, and
    /// the keys' hash.
    fn find_owned(&self, key: &[Scalar]) -> (Option<usize>, u64) {
        let hash = {
            let mut h = KeyHasher::default();
            key.iter().for_each(|s| h.scalar(s));
            h.finish()
        };
        (self.index.get(&hash).and_then(|c| c.iter().copied().find(|i| self.groups[*i].0 == key)), hash)
    }

    /// Folds into the group with keys `key` (made with empty states if
    /// new) what `fill` adds to its states: a part whose states are cheaper
    /// added than built apart and merged (distinct values borrowed from
    /// elsewhere are copied only when new).
    pub fn merge_into(&mut self, key: Vec<Scalar>, fill: impl FnOnce(&mut [State])) -> Result<(), TooManyGroups> {
        let Shape::Groups { aggregates, .. } = &self.plan.shape else {
            panic!("merging a group into a plan of plain rows");
        };
        let i = match self.find_owned(&key) {
            (Some(i), _) => i,
            (None, hash) => self.insert(hash, key, aggregates.iter().map(|a| State::new(a.func)).collect()),
        };
        let held = |states: &[State]| states.iter().map(State::held).sum::<usize>();
        let before = held(&self.groups[i].1);
        fill(&mut self.groups[i].1);
        self.held += held(&self.groups[i].1) - before;
        self.check()
    }

    /// Folds in a partial result of the same plan.
    pub fn merge(&mut self, part: Partial) -> Result<(), TooManyGroups> {
        match part {
            Partial::Groups(groups) => {
                for (key, states) in groups {
                    let (found, hash) = self.find_owned(&key);
                    match found {
                        Some(i) => {
                            for (m, s) in self.groups[i].1.iter_mut().zip(states) {
                                let before = m.held();
                                m.merge(s);
                                self.held += m.held() - before;
                            }
                        }
                        None => {
                            self.insert(hash, key, states);
                        }
                    }
                    self.check()?;
                }
            }
            Partial::Rows(rows) => {
                self.rows.extend(rows);
                self.trim_rows();
            }
        }
        self.check()
    }

    fn check(&self) -> Result<(), TooManyGroups> {
        if self.held > self.cap { Err(TooManyGroups { cap: self.cap }) } else { Ok(()) }
    }

    /// Keeps plain rows bounded: once twice the limit have come, only the
    /// first `limit` in the plan's order stay.
    fn trim_rows(&mut self) {
        let Some(limit) = self.plan.limit.map(|l| l as usize) else { return };
        if self.plan.order.is_empty() {
            self.rows.truncate(limit);
        } else if self.rows.len() >= 2 * limit.max(64) {
            sort_rows(&mut self.rows, &self.plan.order);
            self.rows.truncate(limit);
        }
    }

    /// The partial result, to send on.
    pub fn into_partial(mut self) -> Partial {
        match &self.plan.shape {
            Shape::Groups { .. } => Partial::Groups(self.groups),
            Shape::Rows { .. } => {
                if let Some(limit) = self.plan.limit {
                    sort_rows(&mut self.rows, &self.plan.order);
                    self.rows.truncate(limit as usize);
                }
                Partial::Rows(self.rows)
            }
        }
    }

    /// The final result: output column names and rows, ordered and limited.
    pub fn finish(self) -> (Vec<String>, Vec<Vec<Scalar>>) {
        let plan = self.plan;
        let mut wide: Vec<Vec<Scalar>> = match &plan.shape {
            Shape::Groups { keys, aggregates } => {
                let mut groups = self.groups;
                // Without keys there is exactly one group, also over no rows.
                if keys.is_empty() && groups.is_empty() {
                    groups.push((Vec::new(), aggregates.iter().map(|a| State::new(a.func)).collect()));
                }
                groups
                    .into_iter()
                    .map(|(mut key, states)| {
                        key.extend(states.iter().zip(aggregates).map(|(s, a): (&State, &Aggregate)| s.finish(a.func)));
                        key
                    })
                    .collect()
            }
            Shape::Rows { .. } => self.rows,
        };
        sort_rows(&mut wide, &plan.order);
        if let Some(limit) = plan.limit {
            wide.truncate(limit as usize);
        }
        let names = plan.outputs.iter().map(|o| o.name.clone()).collect();
        let rows = wide.into_iter().map(|w| plan.outputs.iter().map(|o| w[o.at].clone()).collect()).collect();
        (names, rows)
    }
}

/// Whether a row's value equals a group key.
fn val_matches(v: Val<'_>, s: &Scalar) -> bool {
    match (v, s) {
        (Val::Null, Scalar::Null) => true,
        (Val::Bool(a), Scalar::Bool(b)) => a == *b,
        (Val::Int(a), Scalar::Int(b)) => i128::from(a) == *b,
        (Val::Float(x), s) => Scalar::float(x) == *s,
        (Val::Text(a), Scalar::Text(b)) => a == b,
        (Val::Ts(a), Scalar::Ts(b)) => a == *b,
        _ => false,
    }
}

/// Hashes group keys the same from a row's values and from owned keys
/// (numbers in their canonical form, see [`Scalar::float`]).
#[derive(Default)]
struct KeyHasher(std::hash::DefaultHasher);

impl KeyHasher {
    fn val(&mut self, v: Val<'_>) {
        match v {
            Val::Null => self.0.write_u8(0),
            Val::Bool(b) => self.0.write_u8(1 + u8::from(b)),
            Val::Int(i) => self.int(i128::from(i)),
            Val::Float(x) => self.scalar(&Scalar::float(x)),
            Val::Text(t) => self.text(t),
            Val::Ts(t) => {
                self.0.write_u8(6);
                self.0.write_i64(t);
            }
        }
    }

    fn scalar(&mut self, s: &Scalar) {
        match s {
            Scalar::Null => self.0.write_u8(0),
            Scalar::Bool(b) => self.0.write_u8(1 + u8::from(*b)),
            Scalar::Int(i) => self.int(*i),
            Scalar::Float(x) => {
                self.0.write_u8(4);
                self.0.write_u64(x.to_bits());
            }
            Scalar::Text(t) => self.text(t),
            Scalar::Ts(t) => {
                self.0.write_u8(6);
                self.0.write_i64(*t);
            }
        }
    }

    fn int(&mut self, i: i128) {
        self.0.write_u8(3);
        self.0.write_i128(i);
    }

    fn text(&mut self, t: &str) {
        self.0.write_u8(5);
        self.0.write(t.as_bytes());
        self.0.write_u8(0xFF);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// Sorts wide rows by `order`: NULLs last ascending and first descending
/// unless the key says otherwise.
pub fn sort_rows(rows: &mut [Vec<Scalar>], order: &[OrderKey]) {
    if order.is_empty() {
        return;
    }
    rows.sort_by(|a, b| compare_rows(a, b, order));
}

fn compare_rows(a: &[Scalar], b: &[Scalar], order: &[OrderKey]) -> Ordering {
    for key in order {
        let (x, y) = (&a[key.at], &b[key.at]);
        let o = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if key.nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, true) => {
                if key.nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, false) if key.desc => y.cmp(x),
            (false, false) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn add_all(func: AggFunc, values: &[Val<'_>]) -> State {
        let mut s = State::new(func);
        values.iter().for_each(|v| s.add(Some(*v)));
        s
    }

    #[test]
    fn results_follow_postgresql() {
        let ints = [Val::Int(i64::MAX), Val::Int(i64::MAX), Val::Null, Val::Int(2)];
        let sum = add_all(AggFunc::Sum, &ints).finish(AggFunc::Sum);
        assert_eq!(sum, Scalar::Int(2 * i128::from(i64::MAX) + 2), "integer sums do not overflow");
        assert_eq!(add_all(AggFunc::Count, &ints).finish(AggFunc::Count), Scalar::Int(3), "count(x) skips NULLs");
        assert_eq!(add_all(AggFunc::Sum, &[]).finish(AggFunc::Sum), Scalar::Null, "sum over no rows is NULL");
        assert_eq!(add_all(AggFunc::Count, &[]).finish(AggFunc::Count), Scalar::Int(0));
        assert_eq!(add_all(AggFunc::Avg, &[Val::Int(1), Val::Int(2)]).finish(AggFunc::Avg), Scalar::Float(1.5));
        assert_eq!(add_all(AggFunc::Sum, &[Val::Int(1), Val::Float(0.5)]).finish(AggFunc::Sum), Scalar::Float(1.5));
        let mixed = [Val::Text("b"), Val::Int(3), Val::Text("a"), Val::Float(-1.5), Val::Bool(true)];
        assert_eq!(add_all(AggFunc::Min, &mixed).finish(AggFunc::Min), Scalar::Float(-1.5), "numbers first");
        assert_eq!(add_all(AggFunc::Max, &mixed).finish(AggFunc::Max), Scalar::Int(3));
        let texts = [Val::Text("b"), Val::Text("B"), Val::Null];
        assert_eq!(add_all(AggFunc::Min, &texts).finish(AggFunc::Min), Scalar::Text("B".into()), "byte-wise");
        assert_eq!(add_all(AggFunc::Sum, &texts).finish(AggFunc::Sum), Scalar::Null, "text does not sum");
        let distinct = [Val::Int(1), Val::Float(1.0), Val::Text("1"), Val::Null];
        assert_eq!(add_all(AggFunc::CountDistinct, &distinct).finish(AggFunc::CountDistinct), Scalar::Int(2));
    }

    #[test]
    fn groups_and_distinct_values_past_the_cap_are_refused() {
        let plan = crate::query::parse("SELECT k, count(DISTINCT v) FROM t GROUP BY k").unwrap();
        let mut acc = Accumulator::new(&plan, 5);
        let add = |acc: &mut Accumulator<'_>, k: i64, v: i64| {
            let fields = [Val::Int(k), Val::Int(v)];
            acc.add(&Row { shop: "s", id: "i", ts: 0, fields: &fields })
        };
        // Two groups holding one distinct value each: 4 held.
        add(&mut acc, 1, 10).unwrap();
        add(&mut acc, 2, 10).unwrap();
        add(&mut acc, 2, 10).unwrap();
        add(&mut acc, 1, 11).unwrap();
        assert_eq!(add(&mut acc, 3, 10), Err(TooManyGroups { cap: 5 }));
    }

    #[test]
    fn order_puts_nulls_last_ascending_and_first_descending() {
        let mut rows = vec![vec![Scalar::Int(2)], vec![Scalar::Null], vec![Scalar::Int(1)]];
        sort_rows(&mut rows, &[OrderKey { at: 0, desc: false, nulls_first: false }]);
        assert_eq!(rows, vec![vec![Scalar::Int(1)], vec![Scalar::Int(2)], vec![Scalar::Null]]);
        sort_rows(&mut rows, &[OrderKey { at: 0, desc: true, nulls_first: true }]);
        assert_eq!(rows, vec![vec![Scalar::Null], vec![Scalar::Int(2)], vec![Scalar::Int(1)]]);
    }

    fn any_val() -> impl Strategy<Value = Scalar> {
        prop_oneof![
            Just(Scalar::Null),
            (-1000i64..1000).prop_map(|i| Scalar::Int(i128::from(i))),
            (-40i32..40).prop_map(|q| Scalar::float(f64::from(q) * 0.25)),
            "[ab]{0,2}".prop_map(Scalar::Text),
            any::<bool>().prop_map(Scalar::Bool),
        ]
    }

    fn as_val(s: &Scalar) -> Val<'_> {
        match s {
            Scalar::Null => Val::Null,
            Scalar::Bool(b) => Val::Bool(*b),
            Scalar::Int(i) => Val::Int(*i as i64),
            Scalar::Float(x) => Val::Float(*x),
            Scalar::Text(t) => Val::Text(t),
            Scalar::Ts(t) => Val::Ts(*t),
        }
    }

    const FUNCS: [AggFunc; 6] =
        [AggFunc::Count, AggFunc::CountDistinct, AggFunc::Sum, AggFunc::Avg, AggFunc::Min, AggFunc::Max];

    /// Runs rows of (k, v) through `plan` into one accumulator per part
    /// and merges the parts' partials in order.
    fn grouped(plan: &Plan, parts: &[Vec<(Scalar, Scalar)>]) -> Vec<Vec<Scalar>> {
        let mut merged = Accumulator::new(plan, 10_000);
        for part in parts {
            let mut acc = Accumulator::new(plan, 10_000);
            for (k, v) in part {
                let fields = [as_val(k), as_val(v)];
                acc.add(&Row { shop: "s", id: "i", ts: 0, fields: &fields }).unwrap();
            }
            merged.merge(acc.into_partial()).unwrap();
        }
        merged.finish().1
    }

    proptest! {
        /// Rows grouped by a key of mixed kinds (1 and 1.0 are one group),
        /// in any split into parts: the same groups and aggregates.
        #[test]
        fn grouping_in_parts_equals_grouping_at_once(
            rows in prop::collection::vec((any_val(), any_val()), 0..60),
            cut in 0usize..60,
        ) {
            let plan = crate::query::parse("SELECT k, count(*), sum(v), count(DISTINCT v), min(v) FROM t GROUP BY k ORDER BY k").unwrap();
            let cut = cut.min(rows.len());
            let whole = grouped(&plan, std::slice::from_ref(&rows));
            let halves = grouped(&plan, &[rows[cut..].to_vec(), rows[..cut].to_vec()]);
            prop_assert_eq!(&whole, &halves);
            let keys: BTreeSet<Scalar> = rows.iter().map(|(k, _)| k.clone()).collect();
            prop_assert_eq!(whole.len(), keys.len());
        }

        /// Values cut into parts at any points, each part aggregated on
        /// its own, merged in any order: the same result as aggregating
        /// all values at once. (Doubles here are quarters, so their sums
        /// are exact in any order.)
        #[test]
        fn merging_parts_in_any_order_equals_aggregating_at_once(
            values in prop::collection::vec(any_val(), 0..40),
            cuts in prop::collection::vec(0usize..40, 0..5),
            order_seed in any::<u64>(),
        ) {
            for func in FUNCS {
                let whole = {
                    let mut s = State::new(func);
                    values.iter().for_each(|v| s.add(Some(as_val(v))));
                    s.finish(func)
                };
                let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (values.len() + 1)).collect();
                bounds.extend([0, values.len()]);
                bounds.sort();
                let mut parts: Vec<State> = bounds
                    .windows(2)
                    .map(|w| {
                        let mut s = State::new(func);
                        values[w[0]..w[1]].iter().for_each(|v| s.add(Some(as_val(v))));
                        s
                    })
                    .collect();
                // A deterministic shuffle from the seed.
                let n = parts.len();
                for i in 0..n {
                    parts.swap(i, (order_seed as usize).wrapping_mul(i + 7) % n);
                }
                let mut merged = State::new(func);
                for p in parts {
                    merged.merge(p);
                }
                prop_assert_eq!(merged.finish(func), whole, "{:?}", func);
            }
        }
    }
}
