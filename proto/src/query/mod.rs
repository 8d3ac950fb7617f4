//! Cross-shop reports: a subset of SQL over collections, planned here,
//! evaluated by the nodes on their partitions and merged by the router.
//!
//! 1. [`parse()`] turns the SQL into a [`Plan`]: the filter, group keys
//!    and aggregates (or plain row values), output columns, order, limit.
//! 2. Each node scans the partitions it is asked for, feeds every live
//!    record that passes the filter to an [`Accumulator`] (fields are read
//!    from the stored bytes as [`Val`]s, without building JSON), and
//!    returns its [`Partial`].
//! 3. The router merges the partials of whole partitions into one
//!    accumulator and finishes it: PostgreSQL's result types, the order and
//!    the limit.
//!
//! See [`scalar`] for the typing rules.

pub mod parse;
pub mod partial;
pub mod plan;
pub mod scalar;
pub mod schedule;

use thiserror::Error;

pub use parse::parse;
pub use partial::{Accumulator, Partial, State, TooManyGroups};
pub use plan::{Plan, Row};
pub use scalar::{Scalar, Val};

/// SQL that cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueryError {
    /// The text is not SQL.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// SQL outside the subset; names the part.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// SQL inside the subset that does not make sense: a type error in a
    /// literal, a column neither grouped nor aggregated, a bad position.
    #[error("{0}")]
    Invalid(String),
}
