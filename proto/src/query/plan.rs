//! The plan of a report: what a node evaluates on each stored record
//! (filter, group keys, aggregates or row outputs) and what the router
//! does with the merged result (output columns, order, limit).
//!
//! Rows are evaluated with SQL's three-valued logic: a comparison with a
//! NULL is NULL, `AND`/`OR`/`NOT` follow the truth tables, and `WHERE`
//! keeps a row only when it is true.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::scalar::{Scalar, TruncUnit, Val};

/// A parsed report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The collection (the table).
    pub collection: String,
    /// The field names the plan reads, sorted; [`Column::Field`] indexes it.
    pub fields: Vec<String>,
    /// Rows for which this is not true are skipped.
    pub filter: Option<Expr>,
    /// The event-time bounds the filter implies, for skipping records
    /// before their fields are read.
    pub time: TimeRange,
    /// What each node computes per row.
    pub shape: Shape,
    /// The result's columns: names and where each comes from in a wide row
    /// (see [`Shape`]).
    pub outputs: Vec<Output>,
    /// The order of the result, over wide rows.
    pub order: Vec<OrderKey>,
    /// At most this many rows.
    pub limit: Option<u64>,
}

/// What is computed per row, and what a wide row of the result holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Shape {
    /// Aggregates per group; a wide row is the group's keys, then its
    /// aggregates. Without keys there is one group, also over no rows.
    Groups {
        /// The group keys.
        keys: Vec<Expr>,
        /// The aggregates.
        aggregates: Vec<Aggregate>,
    },
    /// Plain rows; a wide row is these expressions' values (the outputs,
    /// then anything ordered by that is not an output).
    Rows {
        /// The values of each row.
        values: Vec<Expr>,
    },
}

/// A result column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// Its name: the alias, or what PostgreSQL would call it.
    pub name: String,
    /// Its index in the wide row.
    pub at: usize,
}

/// One key of the result's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderKey {
    /// The index in the wide row.
    pub at: usize,
    /// Descending.
    pub desc: bool,
    /// NULLs before other values (by default when descending).
    pub nulls_first: bool,
}

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggFunc {
    /// `count(*)` (without an argument) or `count(x)`.
    Count,
    /// `count(DISTINCT x)`.
    CountDistinct,
    /// `sum(x)`.
    Sum,
    /// `avg(x)`.
    Avg,
    /// `min(x)`.
    Min,
    /// `max(x)`.
    Max,
}

/// An aggregate over the rows of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// The function.
    pub func: AggFunc,
    /// Its argument; `None` for `count(*)`.
    pub arg: Option<Expr>,
}

/// A column of a collection's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Column {
    /// The shop.
    Shop,
    /// The record's id.
    Id,
    /// The event time.
    Ts,
    /// A field, by its index in [`Plan::fields`].
    Field(usize),
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>` or `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    fn holds(self, o: Ordering) -> bool {
        match self {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Ne => o != Ordering::Equal,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
        }
    }

    /// The operator with its sides swapped: `a < b` is `b > a`.
    pub fn flipped(self) -> Self {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            other => other,
        }
    }
}

/// A row expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    /// A column's value.
    Column(Column),
    /// A constant.
    Literal(Scalar),
    /// A text literal compared with a field: read as the field value's
    /// kind in each row (PostgreSQL reads it as the column's type).
    Untyped(String),
    /// `date_trunc(unit, ts)`.
    Trunc(TruncUnit, Box<Expr>),
    /// A comparison.
    Cmp(Box<Expr>, CmpOp, Box<Expr>),
    /// Every operand is true.
    And(Vec<Expr>),
    /// Any operand is true.
    Or(Vec<Expr>),
    /// Negation.
    Not(Box<Expr>),
    /// `IS NULL` (or `IS NOT NULL` when the flag is set).
    IsNull(Box<Expr>, bool),
    /// `x IN (…)`, or `NOT IN` when the flag is set.
    In(Box<Expr>, Vec<Expr>, bool),
}

/// Inclusive event-time bounds, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    /// The earliest time a row can have.
    pub from: i64,
    /// The latest.
    pub to: i64,
}

impl Default for TimeRange {
    fn default() -> Self {
        Self { from: i64::MIN, to: i64::MAX }
    }
}

impl TimeRange {
    /// Whether `micros` lies within.
    pub fn holds(self, micros: i64) -> bool {
        self.from <= micros && micros <= self.to
    }

    /// The bounds a filter implies through its top-level conjuncts of the
    /// form `ts <op> literal`.
    pub fn of(filter: Option<&Expr>) -> Self {
        let mut range = Self::default();
        for c in filter.map_or_else(Vec::new, Expr::conjuncts) {
            let Expr::Cmp(left, op, right) = c else { continue };
            let (op, t) = match (&**left, &**right) {
                (Expr::Column(Column::Ts), Expr::Literal(Scalar::Ts(t))) => (*op, *t),
                (Expr::Literal(Scalar::Ts(t)), Expr::Column(Column::Ts)) => (op.flipped(), *t),
                _ => continue,
            };
            match op {
                CmpOp::Eq => {
                    range.from = range.from.max(t);
                    range.to = range.to.min(t);
                }
                CmpOp::Gt => range.from = range.from.max(t.saturating_add(1)),
                CmpOp::Ge => range.from = range.from.max(t),
                CmpOp::Lt => range.to = range.to.min(t.saturating_sub(1)),
                CmpOp::Le => range.to = range.to.min(t),
                CmpOp::Ne => {}
            }
        }
        range
    }
}

/// One stored record as the evaluator sees it.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// The shop.
    pub shop: &'a str,
    /// The record's id.
    pub id: &'a str,
    /// The event time, in microseconds.
    pub ts: i64,
    /// The values of [`Plan::fields`], in order.
    pub fields: &'a [Val<'a>],
}

impl Plan {
    /// Whether any expression reads `shop` or `id`: a scan that needs
    /// neither does not decode them from the keys.
    pub fn reads_shop_or_id(&self) -> bool {
        let reads = |e: &Expr| e.any(&|c| matches!(c, Column::Shop | Column::Id));
        let shape = match &self.shape {
            Shape::Groups { keys, aggregates } => {
                keys.iter().any(reads) || aggregates.iter().filter_map(|a| a.arg.as_ref()).any(reads)
            }
            Shape::Rows { values } => values.iter().any(reads),
        };
        shape || self.filter.as_ref().is_some_and(reads)
    }
}

impl Expr {
    /// The operands of its top-level `AND`s, nested ones flattened; the
    /// expression itself if it is no `AND`.
    pub fn conjuncts(&self) -> Vec<&Expr> {
        match self {
            Expr::And(items) => items.iter().flat_map(Expr::conjuncts).collect(),
            other => vec![other],
        }
    }

    /// Whether any column the expression reads satisfies `f`.
    pub fn any(&self, f: &dyn Fn(Column) -> bool) -> bool {
        match self {
            Expr::Column(c) => f(*c),
            Expr::Literal(_) | Expr::Untyped(_) => false,
            Expr::Trunc(_, e) | Expr::Not(e) | Expr::IsNull(e, _) => e.any(f),
            Expr::Cmp(l, _, r) => l.any(f) || r.any(f),
            Expr::And(items) | Expr::Or(items) => items.iter().any(|i| i.any(f)),
            Expr::In(e, items, _) => e.any(f) || items.iter().any(|i| i.any(f)),
        }
    }

    /// The value of the expression for `row`.
    pub fn eval<'a>(&'a self, row: &Row<'a>) -> Val<'a> {
        match self {
            Expr::Column(c) => match c {
                Column::Shop => Val::Text(row.shop),
                Column::Id => Val::Text(row.id),
                Column::Ts => Val::Ts(row.ts),
                Column::Field(i) => row.fields.get(*i).copied().unwrap_or(Val::Null),
            },
            Expr::Literal(s) => literal(s),
            Expr::Untyped(text) => Val::Text(text),
            Expr::Trunc(unit, e) => match e.eval(row) {
                Val::Ts(t) => Val::Ts(unit.truncate(t)),
                _ => Val::Null,
            },
            Expr::Cmp(l, op, r) => truth(compare(l, r, row).map(|o| op.holds(o))),
            Expr::And(items) => {
                let mut result = Some(true);
                for item in items {
                    match item.eval(row) {
                        Val::Bool(false) => return Val::Bool(false),
                        Val::Bool(true) => {}
                        _ => result = None,
                    }
                }
                truth(result)
            }
            Expr::Or(items) => {
                let mut result = Some(false);
                for item in items {
                    match item.eval(row) {
                        Val::Bool(true) => return Val::Bool(true),
                        Val::Bool(false) => {}
                        _ => result = None,
                    }
                }
                truth(result)
            }
            Expr::Not(e) => match e.eval(row) {
                Val::Bool(b) => Val::Bool(!b),
                _ => Val::Null,
            },
            Expr::IsNull(e, negated) => Val::Bool(e.eval(row).is_null() != *negated),
            Expr::In(e, list, negated) => {
                // x IN (a, b) is x = a OR x = b.
                let mut result = Some(false);
                for item in list {
                    match compare(e, item, row) {
                        Some(Ordering::Equal) => {
                            result = Some(true);
                            break;
                        }
                        Some(_) => {}
                        None => result = None,
                    }
                }
                truth(result.map(|r| r != *negated))
            }
        }
    }

    /// Whether the row passes this filter: only when it is true.
    pub fn passes(&self, row: &Row<'_>) -> bool {
        matches!(self.eval(row), Val::Bool(true))
    }
}

fn truth(b: Option<bool>) -> Val<'static> {
    b.map_or(Val::Null, Val::Bool)
}

fn literal(s: &Scalar) -> Val<'_> {
    match s {
        Scalar::Null => Val::Null,
        Scalar::Bool(b) => Val::Bool(*b),
        Scalar::Int(i) => i64::try_from(*i).map_or(Val::Float(*i as f64), Val::Int),
        Scalar::Float(x) => Val::Float(*x),
        Scalar::Text(t) => Val::Text(t),
        Scalar::Ts(t) => Val::Ts(*t),
    }
}

/// Compares two expressions for one row; an untyped text literal takes
/// the kind of the other side's value, and one that does not read as that
/// kind makes the comparison NULL.
fn compare(l: &Expr, r: &Expr, row: &Row<'_>) -> Option<Ordering> {
    match (l, r) {
        (Expr::Untyped(text), other) => compare_untyped(other.eval(row), text).map(Ordering::reverse),
        (other, Expr::Untyped(text)) => compare_untyped(other.eval(row), text),
        _ => l.eval(row).compare(r.eval(row)),
    }
}

fn compare_untyped(v: Val<'_>, text: &str) -> Option<Ordering> {
    let t = text.trim();
    let read = match v {
        Val::Null => return None,
        Val::Text(_) => Val::Text(text),
        Val::Int(_) => Val::Int(t.parse().ok()?),
        Val::Float(_) => Val::Float(t.parse().ok()?),
        Val::Bool(_) => Val::Bool(match t.to_ascii_lowercase().as_str() {
            "t" | "true" | "yes" | "on" | "1" => true,
            "f" | "false" | "no" | "off" | "0" => false,
            _ => return None,
        }),
        Val::Ts(_) => Val::Ts(super::scalar::parse_timestamp(t)?),
    };
    v.compare(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(i: usize) -> Box<Expr> {
        Box::new(Expr::Column(Column::Field(i)))
    }

    fn lit(i: i128) -> Box<Expr> {
        Box::new(Expr::Literal(Scalar::Int(i)))
    }

    #[test]
    fn three_valued_logic() {
        let fields = [Val::Null, Val::Int(5)];
        let row = Row { shop: "s", id: "i", ts: 0, fields: &fields };
        let null_cmp = Expr::Cmp(field(0), CmpOp::Eq, lit(1));
        let true_cmp = Expr::Cmp(field(1), CmpOp::Gt, lit(1));
        let false_cmp = Expr::Cmp(field(1), CmpOp::Lt, lit(1));
        let cases = [
            (Expr::And(vec![null_cmp.clone(), true_cmp.clone()]), Val::Null),
            (Expr::And(vec![null_cmp.clone(), false_cmp.clone()]), Val::Bool(false)),
            (Expr::Or(vec![null_cmp.clone(), true_cmp.clone()]), Val::Bool(true)),
            (Expr::Or(vec![null_cmp.clone(), false_cmp.clone()]), Val::Null),
            (Expr::Not(Box::new(null_cmp.clone())), Val::Null),
            (Expr::IsNull(field(0), false), Val::Bool(true)),
            (Expr::IsNull(field(3), true), Val::Bool(false)),
            (Expr::In(field(1), vec![*lit(1), Expr::Literal(Scalar::Null)], false), Val::Null),
            (Expr::In(field(1), vec![*lit(5), Expr::Literal(Scalar::Null)], false), Val::Bool(true)),
            (Expr::In(field(1), vec![*lit(1), Expr::Literal(Scalar::Null)], true), Val::Null),
            (Expr::In(field(1), vec![*lit(1), *lit(2)], true), Val::Bool(true)),
        ];
        for (expr, expected) in cases {
            assert_eq!(expr.eval(&row), expected, "{expr:?}");
        }
    }

    #[test]
    fn untyped_literals_take_the_kind_of_the_value() {
        let fields = [Val::Int(5), Val::Text("5"), Val::Bool(true)];
        let row = Row { shop: "s", id: "i", ts: 0, fields: &fields };
        let eq = |i, text: &str| {
            let e = Expr::Cmp(field(i), CmpOp::Eq, Box::new(Expr::Untyped(text.into())));
            e.eval(&row) == Val::Bool(true)
        };
        assert!(eq(0, "5"));
        assert!(!eq(0, "x"));
        assert!(eq(1, "5"));
        assert!(eq(2, "yes"));
        let lt = Expr::Cmp(Box::new(Expr::Untyped("4".into())), CmpOp::Lt, field(0));
        assert_eq!(lt.eval(&row), Val::Bool(true));
    }

    #[test]
    fn time_bounds_come_from_top_level_conjuncts_only() {
        let ts = || Box::new(Expr::Column(Column::Ts));
        let at = |t| Box::new(Expr::Literal(Scalar::Ts(t)));
        let filter = Expr::And(vec![
            Expr::Cmp(ts(), CmpOp::Ge, at(100)),
            Expr::Cmp(at(200), CmpOp::Gt, ts()),
            Expr::Or(vec![Expr::Cmp(ts(), CmpOp::Lt, at(0))]),
        ]);
        assert_eq!(TimeRange::of(Some(&filter)), TimeRange { from: 100, to: 199 });
        assert_eq!(TimeRange::of(None), TimeRange::default());
    }
}
