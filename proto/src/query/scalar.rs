//! Values of reports: what a row's column holds while a scan filters it
//! ([`Val`], borrowed from the stored bytes) and what group keys, partial
//! states and results hold ([`Scalar`], owned).
//!
//! Typing follows PostgreSQL for a collection whose fields each hold one
//! JSON type: whole numbers are `bigint`, other numbers `double precision`,
//! strings `text`, booleans `boolean`, and `ts` is a `timestamptz`. Where a
//! field holds different JSON types across records, one rule applies: a
//! value that does not fit what it is compared with, or what an aggregate
//! sums, counts as NULL. JSON arrays and objects count as NULL everywhere.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::value::FieldRef;

/// A column's value in one row, borrowed from the stored record or the plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    /// SQL NULL: a missing field, JSON null, or a value that does not fit.
    Null,
    /// A boolean.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A double.
    Float(f64),
    /// Text.
    Text(&'a str),
    /// A timestamp, in microseconds since the epoch (UTC).
    Ts(i64),
}

impl<'a> From<FieldRef<'a>> for Val<'a> {
    fn from(f: FieldRef<'a>) -> Self {
        match f {
            FieldRef::Null | FieldRef::Json(_) => Val::Null,
            FieldRef::Bool(b) => Val::Bool(b),
            FieldRef::Int(i) => Val::Int(i),
            FieldRef::Float(x) => Val::Float(x),
            FieldRef::Str(s) => Val::Text(s),
        }
    }
}

impl Val<'_> {
    /// The value, owned.
    pub fn to_scalar(self) -> Scalar {
        match self {
            Val::Null => Scalar::Null,
            Val::Bool(b) => Scalar::Bool(b),
            Val::Int(i) => Scalar::Int(i128::from(i)),
            Val::Float(x) => Scalar::float(x),
            Val::Text(s) => Scalar::Text(s.to_string()),
            Val::Ts(t) => Scalar::Ts(t),
        }
    }

    /// Whether the value is NULL.
    pub fn is_null(self) -> bool {
        matches!(self, Val::Null)
    }

    /// How two values compare, or `None` when either is NULL or they are
    /// of kinds that do not compare (the comparison is then NULL).
    pub fn compare(self, other: Val<'_>) -> Option<Ordering> {
        match (self, other) {
            (Val::Bool(a), Val::Bool(b)) => Some(a.cmp(&b)),
            (Val::Int(a), Val::Int(b)) => Some(a.cmp(&b)),
            (Val::Int(a), Val::Float(b)) => (a as f64).partial_cmp(&b),
            (Val::Float(a), Val::Int(b)) => a.partial_cmp(&(b as f64)),
            (Val::Float(a), Val::Float(b)) => a.partial_cmp(&b),
            (Val::Text(a), Val::Text(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (Val::Ts(a), Val::Ts(b)) => Some(a.cmp(&b)),
            _ => None,
        }
    }
}

/// An owned value: a group key, a partial state's extreme, a result cell.
///
/// Numbers are kept canonical ([`Scalar::float`]): a double that holds a
/// whole number is stored as that number, so `1` and `1.0` are one group
/// and one distinct value, as they are one value in PostgreSQL. Integers
/// are 128-bit so that sums of `bigint` never overflow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Scalar {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// A whole number.
    Int(i128),
    /// A double that is not a whole number (or too large for one).
    Float(f64),
    /// Text.
    Text(String),
    /// A timestamp, in microseconds since the epoch (UTC).
    Ts(i64),
}

impl Scalar {
    /// A double, canonical: whole numbers within ±2^53 become integers.
    pub fn float(x: f64) -> Self {
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if x.fract() == 0.0 && x.abs() <= EXACT { Scalar::Int(x as i128) } else { Scalar::Float(x) }
    }

    /// Whether the value is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Scalar::Null)
    }

    /// The rank of the value's kind in the order of mixed kinds: booleans,
    /// numbers, text, timestamps (NULLs are placed by the ORDER BY).
    fn kind_rank(&self) -> u8 {
        match self {
            Scalar::Null => 0,
            Scalar::Bool(_) => 1,
            Scalar::Int(_) | Scalar::Float(_) => 2,
            Scalar::Text(_) => 3,
            Scalar::Ts(_) => 4,
        }
    }

    /// The value as a double, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Int(i) => Some(*i as f64),
            Scalar::Float(x) => Some(*x),
            _ => None,
        }
    }
}

impl PartialEq for Scalar {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scalar {}

impl PartialOrd for Scalar {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A total order: NULL first, then kinds by [`Scalar::kind_rank`], then
/// values; numbers by value, text byte-wise.
impl Ord for Scalar {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Scalar::Bool(a), Scalar::Bool(b)) => a.cmp(b),
            (Scalar::Int(a), Scalar::Int(b)) => a.cmp(b),
            (Scalar::Float(a), Scalar::Float(b)) => a.total_cmp(b),
            (Scalar::Int(a), Scalar::Float(b)) => (*a as f64).total_cmp(b).then(Ordering::Less),
            (Scalar::Float(a), Scalar::Int(b)) => a.total_cmp(&(*b as f64)).then(Ordering::Greater),
            (Scalar::Text(a), Scalar::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Scalar::Ts(a), Scalar::Ts(b)) => a.cmp(b),
            _ => self.kind_rank().cmp(&other.kind_rank()),
        }
    }
}

impl Hash for Scalar {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind_rank().hash(state);
        match self {
            Scalar::Null => {}
            Scalar::Bool(b) => b.hash(state),
            Scalar::Int(i) => i.hash(state),
            Scalar::Float(x) => x.to_bits().hash(state),
            Scalar::Text(s) => s.hash(state),
            Scalar::Ts(t) => t.hash(state),
        }
    }
}

/// A `date_trunc` unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TruncUnit {
    /// To the minute.
    Minute,
    /// To the hour.
    Hour,
    /// To the day.
    Day,
    /// To the Monday of the ISO week.
    Week,
    /// To the first of the month.
    Month,
    /// To the first of the quarter.
    Quarter,
    /// To the first of January.
    Year,
}

impl TruncUnit {
    /// The unit PostgreSQL spells `name`, any case.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "minute" => Self::Minute,
            "hour" => Self::Hour,
            "day" => Self::Day,
            "week" => Self::Week,
            "month" => Self::Month,
            "quarter" => Self::Quarter,
            "year" => Self::Year,
            _ => return None,
        })
    }

    /// `micros` truncated to the unit, in UTC.
    pub fn truncate(self, micros: i64) -> i64 {
        const MINUTE: i64 = 60_000_000;
        const HOUR: i64 = 60 * MINUTE;
        const DAY: i64 = 24 * HOUR;
        match self {
            Self::Minute => micros.div_euclid(MINUTE) * MINUTE,
            Self::Hour => micros.div_euclid(HOUR) * HOUR,
            Self::Day => micros.div_euclid(DAY) * DAY,
            Self::Week | Self::Month | Self::Quarter | Self::Year => {
                let day = micros.div_euclid(DAY) * DAY;
                let Some(date) = DateTime::from_timestamp_micros(day).map(|t| t.date_naive()) else {
                    return day;
                };
                let first = match self {
                    Self::Week => date - chrono::Days::new(u64::from(date.weekday().num_days_from_monday())),
                    Self::Month => date.with_day(1).unwrap_or(date),
                    Self::Quarter => {
                        NaiveDate::from_ymd_opt(date.year(), (date.month0() / 3) * 3 + 1, 1).unwrap_or(date)
                    }
                    _ => NaiveDate::from_ymd_opt(date.year(), 1, 1).unwrap_or(date),
                };
                first.and_hms_opt(0, 0, 0).map_or(day, |t| t.and_utc().timestamp_micros())
            }
        }
    }
}

/// Parses a timestamp literal as PostgreSQL reads one for a `timestamptz`
/// in the UTC time zone: `2026-03-01`, `2026-03-01 10:00[:00[.123]]`
/// (also with `T`), and either with an offset (`Z`, `+02`, `+02:00`).
/// Returns microseconds since the epoch.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_micros());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M%#z", "%Y-%m-%dT%H:%M%#z"] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.timestamp_micros());
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(Utc.from_utc_datetime(&t).timestamp_micros());
        }
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}

/// A timestamp as RFC 3339 in UTC, with fractional seconds only when
/// there are any and without trailing zeros, as PostgreSQL prints them:
/// `2026-03-01T10:00:00Z`, `2026-03-01T10:00:00.42Z`.
pub fn format_timestamp(micros: i64) -> String {
    let Some(t) = DateTime::from_timestamp_micros(micros) else { return micros.to_string() };
    let seconds = t.format("%Y-%m-%dT%H:%M:%S");
    match t.nanosecond() / 1000 {
        0 => format!("{seconds}Z"),
        us => format!("{seconds}.{}Z", format!("{us:06}").trim_end_matches('0')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> i64 {
        parse_timestamp(text).unwrap_or_else(|| panic!("{text} parses"))
    }

    #[test]
    fn timestamp_literals_read_as_postgresql_reads_them_in_utc() {
        let midnight = 1_772_323_200_000_000; // 2026-03-01T00:00:00Z
        for text in
            ["2026-03-01", "2026-03-01 00:00:00", "2026-03-01T00:00:00Z", "2026-03-01 01:00:00+01", "2026-03-01 00:00"]
        {
            assert_eq!(ts(text), midnight, "{text}");
        }
        assert_eq!(ts("2026-03-01 00:00:00.25"), midnight + 250_000);
        assert_eq!(ts("2026-03-01T02:30:00+02:30"), midnight);
        assert_eq!(parse_timestamp("2026-02-30"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(format_timestamp(midnight), "2026-03-01T00:00:00Z");
        assert_eq!(format_timestamp(midnight + 1), "2026-03-01T00:00:00.000001Z");
        assert_eq!(format_timestamp(midnight + 420_000), "2026-03-01T00:00:00.42Z");
    }

    #[test]
    fn date_trunc_units_in_utc() {
        let t = ts("2026-03-18 13:45:30.5"); // a Wednesday
        let cases = [
            (TruncUnit::Minute, "2026-03-18T13:45:00Z"),
            (TruncUnit::Hour, "2026-03-18T13:00:00Z"),
            (TruncUnit::Day, "2026-03-18T00:00:00Z"),
            (TruncUnit::Week, "2026-03-16T00:00:00Z"),
            (TruncUnit::Month, "2026-03-01T00:00:00Z"),
            (TruncUnit::Quarter, "2026-01-01T00:00:00Z"),
            (TruncUnit::Year, "2026-01-01T00:00:00Z"),
        ];
        for (unit, expected) in cases {
            assert_eq!(format_timestamp(unit.truncate(t)), expected, "{unit:?}");
        }
        assert_eq!(format_timestamp(TruncUnit::Day.truncate(ts("1969-12-31 23:00"))), "1969-12-31T00:00:00Z");
    }

    #[test]
    fn whole_doubles_are_integers_and_kinds_order_by_rank() {
        assert_eq!(Scalar::float(3.0), Scalar::Int(3));
        assert!(matches!(Scalar::float(3.5), Scalar::Float(_)));
        let mut values = vec![
            Scalar::Text("b".into()),
            Scalar::Int(2),
            Scalar::Null,
            Scalar::Float(1.5),
            Scalar::Bool(true),
            Scalar::Text("B".into()),
        ];
        values.sort();
        let expected = vec![
            Scalar::Null,
            Scalar::Bool(true),
            Scalar::Float(1.5),
            Scalar::Int(2),
            Scalar::Text("B".into()),
            Scalar::Text("b".into()),
        ];
        assert_eq!(values, expected);
    }

    #[test]
    fn values_of_kinds_that_do_not_compare_give_null() {
        assert_eq!(Val::Int(2).compare(Val::Float(2.5)), Some(Ordering::Less));
        assert_eq!(Val::Text("10").compare(Val::Int(10)), None);
        assert_eq!(Val::Null.compare(Val::Null), None);
        assert_eq!(Val::Text("a").compare(Val::Text("B")), Some(Ordering::Greater));
    }
}
