//! Column segments: one collection's live records in one partition,
//! decoded once into columns and kept in memory, so that reports over data
//! that has stopped changing read arrays instead of RocksDB.
//!
//! A segment is built from one scan of the collection's key range and
//! holds, per live record, its event time, its shop and id, and the fields
//! the report reads. A later report that reads other fields extends it
//! with their columns from another scan, which must meet the same records
//! in the same order ([`Refused::Changed`] otherwise). Text is stored as
//! codes into a per-column dictionary; a field that only ever holds text
//! (or NULL) is nothing but codes.
//!
//! [`aggregate`] evaluates a plan over a segment and feeds the
//! accumulator exactly what the row-by-row scan would: the same groups
//! with the same states, or the same rows. Where it can, it works on
//! codes rather than values:
//!
//! - a `WHERE` conjunct that reads one text column is evaluated once per
//!   dictionary entry, then looked up per row;
//! - the conjuncts on `ts` that [`TimeRange`] captures are applied as a
//!   range check on the time column;
//! - group keys on text columns, `ts` and `date_trunc(…, ts)` are integer
//!   tokens, turned into values once per group;
//! - `count(DISTINCT)` of a text column collects codes, `min`/`max` of
//!   `ts` compare integers.
//!
//! Anything else is evaluated row by row with the plan's own evaluator,
//! on values read from the columns.

use std::collections::HashMap;
use std::sync::Arc;

use crate::rows::{shop_and_id, with_vals};
use ringup_proto::keys::{self, KeyError};
use ringup_proto::query::plan::{AggFunc, Column as Col, Expr, Shape, TimeRange};
use ringup_proto::query::{Accumulator, Plan, Row, Scalar, State, TooManyGroups, Val};
use ringup_proto::value::{self, FieldRef, Header};
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};

/// One collection's live records in one partition, as columns: each
/// record's time, shop and id, and the fields reports have asked for so
/// far. Cheap to clone: the columns are shared.
#[derive(Debug, Default, Clone)]
pub struct Segment {
    /// Keys read, deleted records included.
    keys: u64,
    base: Arc<Base>,
    /// The fields built, by name; `None` for one no record has.
    fields: FxHashMap<Box<str>, Option<Arc<Column>>>,
}

/// What a segment holds of every live record.
#[derive(Debug, Default)]
struct Base {
    /// Event times, in microseconds.
    ts: Vec<i64>,
    shops: Dict,
    shop: Vec<u32>,
    /// The ids, one after another; `id_ends[i]` is where row `i`'s ends.
    ids: String,
    id_ends: Vec<usize>,
}

impl Base {
    fn rows(&self) -> usize {
        self.ts.len()
    }

    fn id(&self, row: usize) -> &str {
        let start = if row == 0 { 0 } else { self.id_ends[row - 1] };
        &self.ids[start..self.id_ends[row]]
    }

    fn bytes(&self) -> usize {
        8 * self.ts.capacity()
            + 4 * self.shop.capacity()
            + self.shops.bytes()
            + self.ids.capacity()
            + 8 * self.id_ends.capacity()
    }
}

/// The distinct texts of a column; a code is an index.
#[derive(Debug, Default)]
struct Dict {
    texts: Vec<Box<str>>,
    codes: FxHashMap<Box<str>, u32>,
}

impl Dict {
    fn code(&mut self, text: &str) -> u32 {
        if let Some(code) = self.codes.get(text) {
            return *code;
        }
        let code = self.texts.len() as u32;
        self.texts.push(text.into());
        self.codes.insert(text.into(), code);
        code
    }

    fn text(&self, code: u32) -> &str {
        &self.texts[code as usize]
    }

    fn bytes(&self) -> usize {
        // Each text is held twice (list and lookup), with a pointer each.
        self.texts.iter().map(|t| 2 * (t.len() + 16) + 8).sum()
    }
}

/// A field's values.
#[derive(Debug)]
enum Column {
    /// Only text and NULL: code 0 is NULL, code `k + 1` the `k`th text.
    Codes { codes: Vec<u32>, dict: Dict },
    /// Values of several kinds.
    Cells { cells: Vec<Cell>, dict: Dict },
}

/// One value of a [`Column::Cells`].
#[derive(Debug, Clone, Copy)]
enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(u32),
}

impl Column {
    /// Sets row `row`'s value, NULL-filling the rows before it.
    fn push(&mut self, row: usize, value: FieldRef<'_>) {
        let text_or_null = matches!(value, FieldRef::Str(_) | FieldRef::Null | FieldRef::Json(_));
        if let (Column::Codes { codes, dict }, false) = (&mut *self, text_or_null) {
            // The first value that is not text: every code becomes a cell.
            let cells = codes.iter().map(|&c| if c == 0 { Cell::Null } else { Cell::Text(c - 1) }).collect();
            let dict = std::mem::take(dict);
            *self = Column::Cells { cells, dict };
        }
        match self {
            Column::Codes { codes, dict } => {
                codes.resize(row, 0);
                codes.push(match value {
                    FieldRef::Str(s) => dict.code(s) + 1,
                    _ => 0,
                });
            }
            Column::Cells { cells, dict } => {
                cells.resize(row, Cell::Null);
                cells.push(match value {
                    FieldRef::Null | FieldRef::Json(_) => Cell::Null,
                    FieldRef::Bool(b) => Cell::Bool(b),
                    FieldRef::Int(i) => Cell::Int(i),
                    FieldRef::Float(x) => Cell::Float(x),
                    FieldRef::Str(s) => Cell::Text(dict.code(s)),
                });
            }
        }
    }

    fn pad(&mut self, rows: usize) {
        match self {
            Column::Codes { codes, .. } => codes.resize(rows, 0),
            Column::Cells { cells, .. } => cells.resize(rows, Cell::Null),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Column::Codes { codes, dict } => 4 * codes.capacity() + dict.bytes(),
            Column::Cells { cells, dict } => size_of::<Cell>() * cells.capacity() + dict.bytes(),
        }
    }

    fn val(&self, row: usize) -> Val<'_> {
        match self {
            Column::Codes { codes, dict } => match codes[row] {
                0 => Val::Null,
                c => Val::Text(dict.text(c - 1)),
            },
            Column::Cells { cells, dict } => match cells[row] {
                Cell::Null => Val::Null,
                Cell::Bool(b) => Val::Bool(b),
                Cell::Int(i) => Val::Int(i),
                Cell::Float(x) => Val::Float(x),
                Cell::Text(c) => Val::Text(dict.text(c)),
            },
        }
    }
}

/// A record [`SegmentBuilder::push`] did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Its header or key does not decode; it is left out.
    Corrupt(String),
    /// Extending a segment, the records are not those it was built from:
    /// they changed in between, and the extension is given up.
    Changed,
}

/// Builds a [`Segment`], or more fields of one, from a collection's keys
/// and values in key order.
#[derive(Debug)]
pub struct SegmentBuilder {
    prefix_len: usize,
    keys: u64,
    /// The rows: new, or those of the segment extended.
    base: Base,
    extended: Option<Segment>,
    /// The live records seen.
    row: usize,
    /// The fields to build, in name order.
    wanted: Vec<(Box<str>, Option<Column>)>,
}

impl SegmentBuilder {
    /// A builder of a segment of `collection` in `partition` with the
    /// fields `wanted`.
    pub fn new(partition: ringup_proto::ring::PartitionId, collection: &str, wanted: &[String]) -> Self {
        let prefix_len = keys::table_range(partition, collection).0.len();
        let mut wanted: Vec<(Box<str>, Option<Column>)> = wanted.iter().map(|f| (f.as_str().into(), None)).collect();
        wanted.sort_by(|a, b| a.0.cmp(&b.0));
        wanted.dedup_by(|a, b| a.0 == b.0);
        Self { prefix_len, keys: 0, base: Base::default(), extended: None, row: 0, wanted }
    }

    /// A builder that adds the fields `wanted` to `segment`, from another
    /// scan of the same records.
    pub fn extend(
        segment: &Segment,
        partition: ringup_proto::ring::PartitionId,
        collection: &str,
        wanted: &[String],
    ) -> Self {
        Self { extended: Some(segment.clone()), ..Self::new(partition, collection, wanted) }
    }

    /// Adds one stored record.
    pub fn push(&mut self, key: &[u8], bytes: &[u8]) -> Result<(), Refused> {
        let corrupt = |e: &dyn std::fmt::Display| Refused::Corrupt(e.to_string());
        self.keys += 1;
        let header = Header::parse(bytes).map_err(|e| corrupt(&e))?;
        if header.tombstone {
            return Ok(());
        }
        let (shop, id) = shop_and_id(key, self.prefix_len).map_err(|e: KeyError| corrupt(&e))?;
        let ts = header.ts.saturating_mul(1000);
        let row = self.row;
        match &self.extended {
            Some(segment) => {
                let base = &segment.base;
                let same = row < base.rows()
                    && base.ts[row] == ts
                    && base.shops.text(base.shop[row]) == shop
                    && base.id(row) == id;
                if !same {
                    return Err(Refused::Changed);
                }
            }
            None => {
                let base = &mut self.base;
                base.ts.push(ts);
                let code = match base.shop.last() {
                    Some(&last) if base.shops.text(last) == shop => last,
                    _ => base.shops.code(&shop),
                };
                base.shop.push(code);
                base.ids.push_str(&id);
                base.id_ends.push(base.ids.len());
            }
        }
        self.row += 1;
        if self.wanted.is_empty() {
            return Ok(());
        }
        // Both lists are in name order: one pass over each. A value that
        // does not decode is NULL (it was checked where it entered).
        let mut wanted = self.wanted.iter_mut().peekable();
        let mut stored = value::fields_ref(bytes).map_err(|e| corrupt(&e))?;
        while let Some(Ok((name, raw))) = stored.step() {
            while wanted.peek().is_some_and(|(w, _)| w.as_bytes() < name) {
                wanted.next();
            }
            let Some((w, column)) = wanted.peek_mut() else { break };
            if w.as_bytes() == name {
                let column = column.get_or_insert_with(|| Column::Codes { codes: Vec::new(), dict: Dict::default() });
                column.push(row, raw.value().unwrap_or(FieldRef::Null));
            }
        }
        Ok(())
    }

    /// The segment, or the one extended with the new fields.
    pub fn finish(self) -> Result<Segment, Refused> {
        let rows = self.row;
        let columns = self.wanted.into_iter().map(|(name, column)| {
            let column = column.map(|mut c| {
                c.pad(rows);
                Arc::new(c)
            });
            (name, column)
        });
        match self.extended {
            Some(mut segment) => {
                if rows != segment.base.rows() {
                    return Err(Refused::Changed);
                }
                segment.fields.extend(columns);
                Ok(segment)
            }
            None => Ok(Segment { keys: self.keys, base: Arc::new(self.base), fields: columns.collect() }),
        }
    }
}

impl Segment {
    /// Live records held.
    pub fn rows(&self) -> usize {
        self.base.rows()
    }

    /// Keys read when it was built, deleted records included: what a scan
    /// of the range would read.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// Of `fields`, those not built yet.
    pub fn missing(&self, fields: &[String]) -> Vec<String> {
        fields.iter().filter(|f| !self.fields.contains_key(f.as_str())).cloned().collect()
    }

    /// About how many bytes of memory it holds.
    pub fn bytes(&self) -> usize {
        let fields: usize =
            self.fields.iter().map(|(name, c)| name.len() + 32 + c.as_ref().map_or(0, |c| c.bytes())).sum();
        self.base.bytes() + fields + size_of::<Self>()
    }

    fn id(&self, row: usize) -> &str {
        self.base.id(row)
    }
}

/// Where a plan's field comes from in a segment.
type Sources<'s> = Vec<Option<&'s Column>>;

/// Reads one row as the plan's evaluator sees it.
struct RowReader<'s> {
    segment: &'s Segment,
    fields: Sources<'s>,
}

impl<'s> RowReader<'s> {
    fn new(segment: &'s Segment, plan: &Plan) -> Self {
        let fields = plan.fields.iter().map(|f| segment.fields.get(f.as_str()).and_then(|c| c.as_deref())).collect();
        Self { segment, fields }
    }

    fn fill(&self, row: usize, out: &mut [Val<'s>]) {
        for (slot, column) in out.iter_mut().zip(&self.fields) {
            *slot = column.map_or(Val::Null, |c| c.val(row));
        }
    }

    fn with_row<T>(&self, row: usize, f: impl FnOnce(&Row<'_>) -> T) -> T {
        with_vals(self.fields.len(), |vals| {
            self.fill(row, vals);
            let (seg, base) = (self.segment, &self.segment.base);
            f(&Row { shop: base.shops.text(base.shop[row]), id: seg.id(row), ts: base.ts[row], fields: vals })
        })
    }
}

/// A column of codes: a text field that holds only text (or is missing),
/// or the shop.
#[derive(Clone, Copy)]
enum Codes<'s> {
    /// The shop: codes into the shop dictionary.
    Shop(&'s [u32], &'s Dict),
    /// A text field: 0 is NULL.
    Field(&'s [u32], &'s Dict),
    /// A field no record of the segment has: always NULL.
    Missing,
}

impl<'s> Codes<'s> {
    /// The codes of what `expr` reads, if it is such a column.
    fn of(expr: &Expr, segment: &'s Segment, sources: &Sources<'s>) -> Option<Self> {
        match expr {
            Expr::Column(Col::Shop) => Some(Codes::Shop(&segment.base.shop, &segment.base.shops)),
            Expr::Column(Col::Field(i)) => match sources.get(*i)? {
                None => Some(Codes::Missing),
                Some(Column::Codes { codes, dict }) => Some(Codes::Field(codes, dict)),
                Some(Column::Cells { .. }) => None,
            },
            _ => None,
        }
    }

    fn code(self, row: usize) -> u32 {
        match self {
            Codes::Shop(codes, _) | Codes::Field(codes, _) => codes[row],
            Codes::Missing => 0,
        }
    }

    /// How many codes there are.
    fn span(self) -> usize {
        match self {
            Codes::Shop(_, dict) => dict.texts.len(),
            Codes::Field(_, dict) => dict.texts.len() + 1,
            Codes::Missing => 1,
        }
    }

    fn val(self, code: u32) -> Val<'s> {
        match (self, code) {
            (Codes::Shop(_, dict), c) => Val::Text(dict.text(c)),
            (Codes::Field(..) | Codes::Missing, 0) => Val::Null,
            (Codes::Field(_, dict), c) => Val::Text(dict.text(c - 1)),
            (Codes::Missing, _) => Val::Null,
        }
    }
}

/// The single column an expression reads, if it reads exactly one.
fn only_column(expr: &Expr) -> Option<Col> {
    let (seen, several) = (std::cell::Cell::new(None), std::cell::Cell::new(false));
    // Answering false visits every column.
    expr.any(&|c| {
        match seen.get() {
            None => seen.set(Some(c)),
            Some(s) if s != c => several.set(true),
            Some(_) => {}
        }
        false
    });
    if several.get() { None } else { seen.get() }
}

/// One conjunct of the filter, ready to test rows.
enum Test<'p, 's> {
    /// Whether each code passes.
    Lookup(Codes<'s>, Vec<bool>),
    /// Evaluated per row.
    Eval(&'p Expr),
}

/// The filter's conjuncts other than those the time range captures, and
/// that range: together they keep exactly the rows the filter keeps.
fn tests<'p, 's>(plan: &'p Plan, segment: &'s Segment, sources: &Sources<'s>) -> (TimeRange, Vec<Test<'p, 's>>) {
    let conjuncts = plan.filter.as_ref().map_or_else(Vec::new, Expr::conjuncts);
    let mut time = plan.time;
    let mut tests = Vec::new();
    for conjunct in conjuncts {
        let captured = TimeRange::of(Some(conjunct));
        // Past the ends, `ts > t` is not exactly a range of times.
        let exact = captured.from != i64::MAX && captured.to != i64::MIN;
        if captured != TimeRange::default() && exact {
            // `ts <op> literal`, which holds exactly within its range.
            time = TimeRange { from: time.from.max(captured.from), to: time.to.min(captured.to) };
            continue;
        }
        let column = only_column(conjunct);
        match column.and_then(|c| Codes::of(&Expr::Column(c), segment, sources)) {
            Some(codes) => {
                let pass = (0..codes.span() as u32)
                    .map(|code| {
                        // A row that holds this code and nothing else: the
                        // conjunct reads no other column.
                        let mut fields = vec![Val::Null; plan.fields.len()];
                        let mut shop = "";
                        match (column, codes.val(code)) {
                            (Some(Col::Shop), Val::Text(t)) => shop = t,
                            (Some(Col::Field(i)), v) => fields[i] = v,
                            _ => {}
                        }
                        conjunct.passes(&Row { shop, id: "", ts: 0, fields: &fields })
                    })
                    .collect();
                tests.push(Test::Lookup(codes, pass));
            }
            None => tests.push(Test::Eval(conjunct)),
        }
    }
    (time, tests)
}

/// The rows of `segment` that pass the plan's filter, in order.
fn selected(plan: &Plan, segment: &Segment, reader: &RowReader<'_>) -> Vec<u32> {
    let (time, tests) = tests(plan, segment, &reader.fields);
    let mut rows: Vec<u32> = (0..segment.rows() as u32).filter(|&r| time.holds(segment.base.ts[r as usize])).collect();
    // Lookups first: they are cheap and narrow what the others see.
    for test in tests
        .iter()
        .filter(|t| matches!(t, Test::Lookup(..)))
        .chain(tests.iter().filter(|t| matches!(t, Test::Eval(_))))
    {
        match test {
            Test::Lookup(codes, pass) => rows.retain(|&r| pass[codes.code(r as usize) as usize]),
            Test::Eval(expr) => rows.retain(|&r| reader.with_row(r as usize, |row| expr.passes(row))),
        }
    }
    rows
}

/// A group key as an integer per row.
#[derive(Clone, Copy)]
enum Key<'s> {
    Codes(Codes<'s>),
    Ts(Option<ringup_proto::query::scalar::TruncUnit>),
}

impl<'s> Key<'s> {
    fn of(expr: &Expr, segment: &'s Segment, sources: &Sources<'s>) -> Option<Self> {
        match expr {
            Expr::Column(Col::Ts) => Some(Key::Ts(None)),
            Expr::Trunc(unit, inner) if matches!(**inner, Expr::Column(Col::Ts)) => Some(Key::Ts(Some(*unit))),
            other => Codes::of(other, segment, sources).map(Key::Codes),
        }
    }

    fn token(self, segment: &Segment, row: usize) -> u64 {
        match self {
            Key::Codes(codes) => u64::from(codes.code(row)),
            Key::Ts(None) => segment.base.ts[row] as u64,
            Key::Ts(Some(unit)) => unit.truncate(segment.base.ts[row]) as u64,
        }
    }

    fn scalar(self, token: u64) -> Scalar {
        match self {
            Key::Codes(codes) => codes.val(token as u32).to_scalar(),
            Key::Ts(_) => Scalar::Ts(token as i64),
        }
    }
}

/// At most this many group keys are tokens.
const MAX_KEYS: usize = 4;

/// What an aggregate reads per row.
enum Input<'s> {
    /// `count(*)`.
    Star,
    /// `ts`.
    Ts,
    /// A column of codes.
    Codes(Codes<'s>),
    /// A field with values of several kinds.
    Cells(&'s Column),
}

impl<'s> Input<'s> {
    fn of(arg: Option<&Expr>, segment: &'s Segment, sources: &Sources<'s>) -> Option<Self> {
        match arg {
            None => Some(Input::Star),
            Some(Expr::Column(Col::Ts)) => Some(Input::Ts),
            Some(Expr::Column(Col::Field(i))) => match sources.get(*i)? {
                Some(c @ Column::Cells { .. }) => Some(Input::Cells(c)),
                _ => Codes::of(arg?, segment, sources).map(Input::Codes),
            },
            Some(e @ Expr::Column(Col::Shop)) => Codes::of(e, segment, sources).map(Input::Codes),
            Some(_) => None,
        }
    }
}

/// An aggregate's state while a segment is read.
enum Local {
    /// Rows (or non-NULL values) counted.
    Count(u64),
    /// Codes seen, for `count(DISTINCT)`.
    Distinct(FxHashSet<u32>),
    /// The least or greatest time seen.
    TsExtreme(Option<i64>),
    /// The plan's own state, fed values.
    State(State),
}

/// Evaluates `plan` over `segment` into `acc`: the same as feeding every
/// live record of the segment to the row-by-row scan.
pub fn aggregate(segment: &Segment, plan: &Plan, acc: &mut Accumulator<'_>, cap: usize) -> Result<(), TooManyGroups> {
    let reader = RowReader::new(segment, plan);
    let rows = selected(plan, segment, &reader);
    match &plan.shape {
        Shape::Groups { keys, aggregates } => {
            let compiled = (|| {
                let keys: Vec<Key<'_>> =
                    keys.iter().map(|k| Key::of(k, segment, &reader.fields)).collect::<Option<_>>()?;
                let inputs: Vec<Input<'_>> = aggregates
                    .iter()
                    .map(|a| Input::of(a.arg.as_ref(), segment, &reader.fields))
                    .collect::<Option<_>>()?;
                (keys.len() <= MAX_KEYS).then_some((keys, inputs))
            })();
            match compiled {
                Some((keys, inputs)) => groups(segment, plan, &rows, &keys, &inputs, acc, cap),
                None => rows.iter().try_for_each(|&r| reader.with_row(r as usize, |row| acc.add(row))),
            }
        }
        Shape::Rows { .. } => rows.iter().try_for_each(|&r| reader.with_row(r as usize, |row| acc.add(row))),
    }
}

fn groups(
    segment: &Segment,
    plan: &Plan,
    rows: &[u32],
    keys: &[Key<'_>],
    inputs: &[Input<'_>],
    acc: &mut Accumulator<'_>,
    cap: usize,
) -> Result<(), TooManyGroups> {
    let Shape::Groups { aggregates, .. } = &plan.shape else { unreachable!("called for groups") };
    let fresh = || -> Vec<Local> {
        aggregates
            .iter()
            .zip(inputs)
            .map(|(a, input)| match (a.func, input) {
                (AggFunc::Count, _) => Local::Count(0),
                (AggFunc::CountDistinct, Input::Codes(_)) => Local::Distinct(FxHashSet::default()),
                (AggFunc::Min | AggFunc::Max, Input::Ts) => Local::TsExtreme(None),
                (func, _) => Local::State(State::new(func)),
            })
            .collect()
    };
    let mut index: HashMap<[u64; MAX_KEYS], usize, FxBuildHasher> = HashMap::default();
    let mut groups: Vec<([u64; MAX_KEYS], Vec<Local>)> = Vec::new();
    let mut last: Option<usize> = None;
    for &r in rows {
        let row = r as usize;
        let mut token = [0u64; MAX_KEYS];
        for (t, key) in token.iter_mut().zip(keys) {
            *t = key.token(segment, row);
        }
        let g = match last.filter(|&g| groups[g].0 == token) {
            Some(g) => g,
            None => match index.get(&token) {
                Some(&g) => g,
                None => {
                    if groups.len() >= cap {
                        return Err(TooManyGroups { cap });
                    }
                    groups.push((token, fresh()));
                    index.insert(token, groups.len() - 1);
                    groups.len() - 1
                }
            },
        };
        last = Some(g);
        for ((local, input), agg) in groups[g].1.iter_mut().zip(inputs).zip(aggregates) {
            match (local, input) {
                (Local::Count(n), Input::Star | Input::Ts) => *n += 1,
                (Local::Count(n), Input::Codes(codes)) => {
                    *n += u64::from(matches!(codes, Codes::Shop(..)) || codes.code(row) != 0)
                }
                (Local::Count(n), Input::Cells(c)) => *n += u64::from(!c.val(row).is_null()),
                (Local::Distinct(seen), Input::Codes(codes)) => {
                    seen.insert(codes.code(row));
                }
                (Local::TsExtreme(best), _) => {
                    let t = segment.base.ts[row];
                    let max = agg.func == AggFunc::Max;
                    *best = Some(best.map_or(t, |b| if max { b.max(t) } else { b.min(t) }));
                }
                (Local::State(state), Input::Ts) => state.add(Some(Val::Ts(segment.base.ts[row]))),
                (Local::State(state), Input::Codes(codes)) => state.add(Some(codes.val(codes.code(row)))),
                (Local::State(state), Input::Cells(c)) => state.add(Some(c.val(row))),
                (Local::State(state), Input::Star) => state.add(None),
                (Local::Distinct(_), _) => unreachable!("distinct codes are collected from codes only"),
            }
        }
    }
    for (token, locals) in groups {
        let key = keys.iter().zip(token).map(|(k, t)| k.scalar(t)).collect();
        acc.merge_into(key, |states| {
            for ((state, local), input) in states.iter_mut().zip(locals).zip(inputs) {
                match local {
                    Local::Count(n) => state.merge(State::Count(n)),
                    Local::State(part) => state.merge(part),
                    Local::TsExtreme(best) => {
                        if let Some(t) = best {
                            state.add(Some(Val::Ts(t)));
                        }
                    }
                    Local::Distinct(seen) => {
                        if let Input::Codes(codes) = input {
                            seen.iter().for_each(|&c| state.add(Some(codes.val(c))));
                        }
                    }
                }
            }
        })?;
    }
    Ok(())
}

/// How long a partition must have gone unchanged before its segments are
/// built: one that is being written would be rebuilt by every report and
/// is scanned row by row instead.
pub const QUIET: std::time::Duration = std::time::Duration::from_secs(1);

/// The node's segments, least recently used dropped first past a budget
/// of bytes. Each is kept with the partition's generation it was built
/// at and is used only while that has not moved.
#[derive(Debug)]
pub struct ColumnCache {
    budget: usize,
    inner: std::sync::Mutex<CacheInner>,
    /// Partitions read from a segment.
    pub from_segments: std::sync::atomic::AtomicU64,
    /// Partitions scanned from RocksDB.
    pub scanned: std::sync::atomic::AtomicU64,
    /// Segments built.
    pub built: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct CacheInner {
    entries: lru::LruCache<(ringup_proto::ring::PartitionId, String), CacheEntry>,
    bytes: usize,
}

#[derive(Debug)]
struct CacheEntry {
    generation: u64,
    segment: std::sync::Arc<Segment>,
}

/// What the cache holds, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheSize {
    /// Segments held.
    pub segments: usize,
    /// Their bytes.
    pub bytes: usize,
}

impl ColumnCache {
    /// A cache of at most `budget` bytes; 0 keeps nothing.
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: std::sync::Mutex::new(CacheInner { entries: lru::LruCache::unbounded(), bytes: 0 }),
            from_segments: Default::default(),
            scanned: Default::default(),
            built: Default::default(),
        }
    }

    /// Whether segments are kept at all.
    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The segment of `collection` in `partition` built at `generation`.
    pub fn get(
        &self,
        partition: ringup_proto::ring::PartitionId,
        collection: &str,
        generation: u64,
    ) -> Option<std::sync::Arc<Segment>> {
        let mut inner = self.lock();
        let key = (partition, collection.to_string());
        let entry = inner.entries.get(&key)?;
        if entry.generation == generation {
            return Some(entry.segment.clone());
        }
        // Outdated for good (generations only grow): its memory goes now,
        // also when the partition has left this node.
        let old = inner.entries.pop(&key).expect("just found");
        inner.bytes -= old.segment.bytes();
        None
    }

    /// Keeps a segment built at `generation`, replacing an older one and
    /// dropping the least recently used past the budget. One larger than
    /// the budget is not kept.
    pub fn put(
        &self,
        partition: ringup_proto::ring::PartitionId,
        collection: &str,
        generation: u64,
        segment: std::sync::Arc<Segment>,
    ) {
        let bytes = segment.bytes();
        let mut inner = self.lock();
        if let Some(old) = inner.entries.pop(&(partition, collection.to_string())) {
            inner.bytes -= old.segment.bytes();
        }
        if bytes > self.budget {
            return;
        }
        while inner.bytes + bytes > self.budget {
            let Some((_, old)) = inner.entries.pop_lru() else { break };
            inner.bytes -= old.segment.bytes();
        }
        inner.bytes += bytes;
        inner.entries.push((partition, collection.to_string()), CacheEntry { generation, segment });
    }

    /// What it holds.
    pub fn size(&self) -> CacheSize {
        let inner = self.lock();
        CacheSize { segments: inner.entries.len(), bytes: inner.bytes }
    }

    /// Its figures, for [`ringup_proto::stats::NodeStats`].
    pub fn stats(&self) -> ringup_proto::stats::ReportStats {
        let read = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let size = self.size();
        ringup_proto::stats::ReportStats {
            from_segments: read(&self.from_segments),
            scanned: read(&self.scanned),
            built: read(&self.built),
            segments: size.segments as u64,
            segment_bytes: size.bytes as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use ringup_proto::keys::RecordKey;
    use ringup_proto::value::{Field, StoredRecord, Version};

    /// A segment of `n` records of one shop, each with a text field.
    fn segment(n: usize) -> Arc<Segment> {
        let mut builder = SegmentBuilder::new(1, "c", &["f".to_string()]);
        for i in 0..n {
            let key =
                RecordKey { partition: 1, collection: "c".into(), shop: "s".into(), id: format!("{i:04}") }.encode();
            let fields = vec![("f".to_string(), Field::Str(format!("v{i}")))];
            let value = StoredRecord { version: Version::default(), ts: 0, tombstone: false, fields }.encode();
            builder.push(&key, &value).unwrap();
        }
        Arc::new(builder.finish().unwrap())
    }

    #[test]
    fn the_cache_serves_a_generation_and_drops_the_least_recently_used() {
        let one = segment(100).bytes();
        let cache = ColumnCache::new(3 * one + one / 2);
        for p in 0..3 {
            cache.put(p, "c", 7, segment(100));
        }
        let shown = |cache: &ColumnCache| {
            let held: Vec<_> = (0..5).map(|p| cache.get(p, "c", 7).is_some()).collect();
            format!("{held:?} {:?}", cache.size().segments)
        };
        assert_eq!(shown(&cache), "[true, true, true, false, false] 3");
        // Partition 0 was used last but one (gets count as uses): after
        // that show, 0 is the least recently used again once 1 and 2 are.
        assert!(cache.get(1, "c", 7).is_some() && cache.get(2, "c", 7).is_some());
        cache.put(3, "c", 7, segment(100));
        assert_eq!(shown(&cache), "[false, true, true, true, false] 3");
        // Another generation is not served, and the outdated segment goes.
        assert!(cache.get(1, "c", 8).is_none());
        assert_eq!(cache.size(), CacheSize { segments: 2, bytes: 2 * one });
        cache.put(1, "c", 8, segment(100));
        assert!(cache.get(1, "c", 8).is_some());
        assert_eq!(cache.size().bytes, 3 * one);
        // Larger than the budget: not kept; a budget of 0 keeps nothing.
        cache.put(4, "c", 1, segment(1000));
        assert!(cache.get(4, "c", 1).is_none());
        assert!(!ColumnCache::new(0).enabled());
    }

    #[test]
    fn a_field_that_turns_from_text_to_numbers_keeps_every_value() {
        let mut builder = SegmentBuilder::new(1, "c", &["f".to_string()]);
        let values =
            [Some(Field::Str("a".into())), None, Some(Field::Int(3)), Some(Field::Str("b".into())), Some(Field::Null)];
        for (i, v) in values.iter().enumerate() {
            let key = RecordKey { partition: 1, collection: "c".into(), shop: "s".into(), id: format!("{i}") }.encode();
            let fields = v.iter().map(|v| ("f".to_string(), v.clone())).collect();
            let value = StoredRecord { version: Version::default(), ts: 0, tombstone: false, fields }.encode();
            builder.push(&key, &value).unwrap();
        }
        let segment = builder.finish().unwrap();
        let column = segment.fields["f"].as_ref().unwrap();
        let read: Vec<String> = (0..segment.rows()).map(|r| format!("{:?}", column.val(r))).collect();
        assert_eq!(read.join(" "), r#"Text("a") Null Int(3) Text("b") Null"#);
        assert_eq!((segment.id(0), segment.id(4)), ("0", "4"));
    }
}
