//! SQL text to a [`Plan`], with PostgreSQL's syntax (`sqlparser`) and
//! name rules: unquoted names fold to lower case, `GROUP BY` and `ORDER BY`
//! may name an output column (by alias or position), and a plain column in
//! an aggregate query must be grouped by.
//!
//! Anything outside the subset is refused with an error naming the part.

use sqlparser::ast as sql;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::QueryError;
use super::plan::{AggFunc, Aggregate, CmpOp, Column, Expr, OrderKey, Output, Plan, Shape, TimeRange};
use super::scalar::{Scalar, TruncUnit, parse_timestamp};

/// Parses one `SELECT` into a plan.
pub fn parse(text: &str) -> Result<Plan, QueryError> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, text).map_err(|e| QueryError::Syntax(e.to_string()))?;
    let statement = match statements.as_slice() {
        [one] => one,
        [] => return Err(QueryError::Syntax("the query is empty".into())),
        _ => return Err(unsupported("more than one statement")),
    };
    let sql::Statement::Query(query) = statement else {
        let kind = statement.to_string().split_whitespace().next().unwrap_or_default().to_uppercase();
        return Err(unsupported(&format!("the statement {kind} (only SELECT is)")));
    };
    Planner::default().query(query)
}

fn unsupported(what: &str) -> QueryError {
    QueryError::Unsupported(what.to_string())
}

fn invalid(what: impl Into<String>) -> QueryError {
    QueryError::Invalid(what.into())
}

/// A name as PostgreSQL reads it: folded to lower case unless quoted.
fn name(ident: &sql::Ident) -> String {
    if ident.quote_style.is_some() { ident.value.clone() } else { ident.value.to_lowercase() }
}

/// Where a grouped query's value sits: a key or an aggregate.
#[derive(Clone, Copy)]
enum Slot {
    Key(usize),
    Agg(usize),
}

/// An item of the select list, planned.
enum Item {
    Row(Expr),
    Agg(Aggregate),
}

#[derive(Default)]
struct Planner {
    /// Field names in the order first met.
    fields: Vec<String>,
    /// The table's name and alias, for qualified names.
    table: Vec<String>,
}

impl Planner {
    fn query(mut self, q: &sql::Query) -> Result<Plan, QueryError> {
        if q.with.is_some() {
            return Err(unsupported("WITH (common table expressions)"));
        }
        if q.fetch.is_some() {
            return Err(unsupported("FETCH"));
        }
        if !q.locks.is_empty() || q.for_clause.is_some() {
            return Err(unsupported("FOR UPDATE/SHARE"));
        }
        if q.settings.is_some() || q.format_clause.is_some() || !q.pipe_operators.is_empty() {
            return Err(unsupported("a clause after the query"));
        }
        let select = match &*q.body {
            sql::SetExpr::Select(s) => s,
            sql::SetExpr::SetOperation { op, .. } => return Err(unsupported(&format!("{op} (set operations)"))),
            sql::SetExpr::Query(_) => return Err(unsupported("a parenthesized query (a subquery)")),
            sql::SetExpr::Values(_) => return Err(unsupported("VALUES")),
            _ => return Err(unsupported("a statement other than SELECT")),
        };
        let collection = self.from(select)?;
        let limit = self.limit(q)?;

        let filter = select.selection.as_ref().map(|e| self.row_expr(e)).transpose()?;
        let grouped_by = match &select.group_by {
            sql::GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs.clone(),
            _ => return Err(unsupported("GROUP BY ALL, ROLLUP, CUBE or GROUPING SETS")),
        };
        let mut items = Vec::new();
        let mut names = Vec::new();
        for item in &select.projection {
            let (expr, alias) = match item {
                sql::SelectItem::UnnamedExpr(e) => (e, None),
                sql::SelectItem::ExprWithAlias { expr, alias } => (expr, Some(name(alias))),
                _ => return Err(unsupported("SELECT * (name the columns)")),
            };
            names.push(alias.unwrap_or_else(|| default_name(expr)));
            items.push(expr);
        }
        let aggregating = !grouped_by.is_empty() || items.iter().any(|e| has_aggregate(e));
        let order_by = match &q.order_by {
            None => Vec::new(),
            Some(sql::OrderBy { kind: sql::OrderByKind::Expressions(exprs), interpolate: None }) => exprs.clone(),
            Some(_) => return Err(unsupported("ORDER BY ALL or INTERPOLATE")),
        };

        let (shape, outputs, order) = if aggregating {
            self.grouped(&items, &names, &grouped_by, &order_by)?
        } else {
            if limit.is_none() {
                return Err(unsupported("a SELECT of plain rows without LIMIT (add a LIMIT)"));
            }
            self.plain(&items, &names, &order_by)?
        };

        // Field indexes follow the sorted names.
        let mut sorted: Vec<String> = self.fields.clone();
        sorted.sort();
        let index: Vec<usize> =
            self.fields.iter().map(|f| sorted.binary_search(f).expect("every field is in the sorted list")).collect();
        let mut filter = filter;
        let mut shape = shape;
        let mut exprs: Vec<&mut Expr> = filter.iter_mut().collect();
        match &mut shape {
            Shape::Groups { keys, aggregates } => {
                exprs.extend(keys.iter_mut());
                exprs.extend(aggregates.iter_mut().filter_map(|a| a.arg.as_mut()));
            }
            Shape::Rows { values } => exprs.extend(values.iter_mut()),
        }
        for e in exprs {
            renumber(e, &index);
        }
        let time = TimeRange::of(filter.as_ref());
        Ok(Plan { collection, fields: sorted, filter, time, shape, outputs, order, limit })
    }

    /// The table of `FROM`: one collection, no joins.
    fn from(&mut self, select: &sql::Select) -> Result<String, QueryError> {
        if select.distinct.is_some() {
            return Err(unsupported("SELECT DISTINCT (use GROUP BY)"));
        }
        if select.having.is_some() {
            return Err(unsupported("HAVING"));
        }
        if !select.named_window.is_empty() || select.qualify.is_some() {
            return Err(unsupported("a window"));
        }
        if select.into.is_some() {
            return Err(unsupported("SELECT INTO"));
        }
        if select.top.is_some()
            || !select.lateral_views.is_empty()
            || select.prewhere.is_some()
            || !select.connect_by.is_empty()
            || !select.cluster_by.is_empty()
            || !select.distribute_by.is_empty()
            || !select.sort_by.is_empty()
        {
            return Err(unsupported("a clause of another SQL dialect"));
        }
        let table = match select.from.as_slice() {
            [] => return Err(invalid("the query names no table: add FROM <collection>")),
            [one] => one,
            _ => return Err(unsupported("more than one table in FROM (a join)")),
        };
        if !table.joins.is_empty() {
            return Err(unsupported("JOIN"));
        }
        let sql::TableFactor::Table { name: object, alias, args: None, .. } = &table.relation else {
            return Err(unsupported("a subquery or function in FROM"));
        };
        let [sql::ObjectNamePart::Identifier(ident)] = object.0.as_slice() else {
            return Err(unsupported("a qualified table name (name the collection alone)"));
        };
        let collection = name(ident);
        crate::names::validate_collection(&collection).map_err(|e| invalid(format!("table {collection}: {e}")))?;
        self.table.push(collection.clone());
        if let Some(alias) = alias {
            self.table.push(name(&alias.name));
        }
        Ok(collection)
    }

    fn limit(&self, q: &sql::Query) -> Result<Option<u64>, QueryError> {
        match &q.limit_clause {
            None => Ok(None),
            Some(sql::LimitClause::LimitOffset { limit, offset: None, limit_by }) if limit_by.is_empty() => match limit
            {
                None => Ok(None),
                Some(sql::Expr::Value(v)) => match &v.value {
                    sql::Value::Number(n, _) => {
                        n.parse().map(Some).map_err(|_| invalid(format!("LIMIT {n} is not a whole number ≥ 0")))
                    }
                    sql::Value::Null => Ok(None),
                    other => Err(invalid(format!("LIMIT {other} is not a whole number"))),
                },
                Some(_) => Err(unsupported("a LIMIT that is not a number")),
            },
            Some(_) => Err(unsupported("OFFSET")),
        }
    }

    /// Plans an aggregate query: group keys, aggregates, outputs, order.
    fn grouped(
        &mut self,
        items: &[&sql::Expr],
        names: &[String],
        group_by: &[sql::Expr],
        order_by: &[sql::OrderByExpr],
    ) -> Result<(Shape, Vec<Output>, Vec<OrderKey>), QueryError> {
        let planned: Vec<Item> = items.iter().map(|e| self.item(e)).collect::<Result<_, _>>()?;
        let mut keys: Vec<Expr> = Vec::new();
        for g in group_by {
            let key = match self.output_ref(g, names, "GROUP BY")? {
                Some(i) => match &planned[i] {
                    Item::Row(e) => e.clone(),
                    Item::Agg(_) => return Err(invalid("aggregate functions are not allowed in GROUP BY")),
                },
                None if has_aggregate(g) => return Err(invalid("aggregate functions are not allowed in GROUP BY")),
                None => self.row_expr(g)?,
            };
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        // Where each output and order key comes from; aggregates are placed
        // after the keys once all are known.
        let mut aggregates: Vec<Aggregate> = Vec::new();
        let slot = |item: Item, source: &sql::Expr, aggregates: &mut Vec<Aggregate>| match item {
            Item::Agg(agg) => Ok(Slot::Agg(aggregates.iter().position(|a| *a == agg).unwrap_or_else(|| {
                aggregates.push(agg);
                aggregates.len() - 1
            }))),
            Item::Row(e) => key_index(&keys, &e, source).map(Slot::Key),
        };
        let mut outputs = Vec::new();
        for (item, source) in planned.into_iter().zip(items) {
            outputs.push(slot(item, source, &mut aggregates)?);
        }
        let mut order = Vec::new();
        for o in order_by {
            let at = match self.output_ref(&o.expr, names, "ORDER BY")? {
                Some(i) => outputs[i],
                None => slot(self.item(&o.expr)?, &o.expr, &mut aggregates)?,
            };
            order.push((at, o));
        }
        let wide = |s: Slot| match s {
            Slot::Key(i) => i,
            Slot::Agg(i) => keys.len() + i,
        };
        let outputs =
            outputs.into_iter().zip(names).map(|(s, name)| Output { name: name.clone(), at: wide(s) }).collect();
        let order = order.into_iter().map(|(s, o)| order_key(wide(s), o)).collect::<Result<_, _>>()?;
        Ok((Shape::Groups { keys, aggregates }, outputs, order))
    }

    /// Plans a query of plain rows.
    fn plain(
        &mut self,
        items: &[&sql::Expr],
        names: &[String],
        order_by: &[sql::OrderByExpr],
    ) -> Result<(Shape, Vec<Output>, Vec<OrderKey>), QueryError> {
        let mut values: Vec<Expr> = items.iter().map(|e| self.row_expr(e)).collect::<Result<_, _>>()?;
        let outputs = names.iter().enumerate().map(|(at, name)| Output { name: name.clone(), at }).collect();
        let mut order = Vec::new();
        for o in order_by {
            let at = match self.output_ref(&o.expr, names, "ORDER BY")? {
                Some(i) => i,
                None => {
                    let e = self.row_expr(&o.expr)?;
                    values.iter().position(|v| *v == e).unwrap_or_else(|| {
                        values.push(e);
                        values.len() - 1
                    })
                }
            };
            order.push(order_key(at, o)?);
        }
        Ok((Shape::Rows { values }, outputs, order))
    }

    /// An output column that a `GROUP BY` or `ORDER BY` item names: by
    /// position (`1` is the first), or by a name that only an output has.
    fn output_ref(&self, e: &sql::Expr, names: &[String], clause: &str) -> Result<Option<usize>, QueryError> {
        match e {
            sql::Expr::Value(v) => match &v.value {
                sql::Value::Number(n, _) => {
                    let i: usize =
                        n.parse().map_err(|_| invalid(format!("{clause} position {n} is not a whole number")))?;
                    if i == 0 || i > names.len() {
                        return Err(invalid(format!("{clause} position {i} is not in the select list")));
                    }
                    Ok(Some(i - 1))
                }
                _ => Err(unsupported(&format!("a constant in {clause}"))),
            },
            sql::Expr::Identifier(ident) => {
                let n = name(ident);
                Ok(names.iter().position(|o| *o == n).filter(|_| !matches!(n.as_str(), "shop" | "id" | "ts")))
            }
            _ => Ok(None),
        }
    }

    /// A select item: an aggregate call or a row expression.
    fn item(&mut self, e: &sql::Expr) -> Result<Item, QueryError> {
        match e {
            sql::Expr::Nested(inner) => self.item(inner),
            sql::Expr::Function(f) if aggregate_func(f).is_some() => self.aggregate(f).map(Item::Agg),
            e if has_aggregate(e) => Err(unsupported("an expression around an aggregate")),
            e => self.row_expr(e).map(Item::Row),
        }
    }

    fn aggregate(&mut self, f: &sql::Function) -> Result<Aggregate, QueryError> {
        let func_name = f.name.to_string().to_lowercase();
        if f.over.is_some() {
            return Err(unsupported("a window function (OVER)"));
        }
        if f.filter.is_some() || !f.within_group.is_empty() || f.null_treatment.is_some() {
            return Err(unsupported(&format!("FILTER, WITHIN GROUP or IGNORE NULLS in {func_name}()")));
        }
        let sql::FunctionArguments::List(list) = &f.args else {
            return Err(invalid(format!("{func_name}() takes one argument")));
        };
        if !list.clauses.is_empty() {
            return Err(unsupported(&format!("ORDER BY or other clauses inside {func_name}()")));
        }
        let distinct = matches!(list.duplicate_treatment, Some(sql::DuplicateTreatment::Distinct));
        let func = aggregate_func(f).expect("checked by the caller");
        let arg = match list.args.as_slice() {
            [sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Wildcard)] if func == AggFunc::Count && !distinct => None,
            [sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Expr(e))] => {
                if has_aggregate(e) {
                    return Err(invalid("aggregate function calls cannot be nested"));
                }
                Some(self.row_expr(e)?)
            }
            _ => return Err(invalid(format!("{func_name}() takes one argument"))),
        };
        let func = match (func, distinct) {
            (AggFunc::Count, true) => AggFunc::CountDistinct,
            (f, false) => f,
            (_, true) => return Err(unsupported(&format!("DISTINCT in {func_name}() (only count(DISTINCT x) is)"))),
        };
        Ok(Aggregate { func, arg })
    }

    /// A row expression (no aggregates).
    fn row_expr(&mut self, e: &sql::Expr) -> Result<Expr, QueryError> {
        Ok(match e {
            sql::Expr::Identifier(ident) => Expr::Column(self.column(name(ident))),
            sql::Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [table, column] if self.table.contains(&name(table)) => Expr::Column(self.column(name(column))),
                _ => return Err(invalid(format!("unknown name {e} (only the FROM table's columns exist)"))),
            },
            sql::Expr::Nested(inner) => self.row_expr(inner)?,
            sql::Expr::Value(v) => literal(&v.value)?,
            sql::Expr::TypedString(t) => timestamp_literal(&t.data_type, &t.value.value)?,
            sql::Expr::Cast { expr, data_type, .. } => match &**expr {
                sql::Expr::Value(v) => timestamp_literal(data_type, &v.value)?,
                _ => return Err(unsupported("a cast of anything but a literal")),
            },
            sql::Expr::UnaryOp { op: sql::UnaryOperator::Not, expr } => Expr::Not(Box::new(self.row_expr(expr)?)),
            sql::Expr::UnaryOp { op: sql::UnaryOperator::Minus, expr } => match self.row_expr(expr)? {
                Expr::Literal(Scalar::Int(i)) => Expr::Literal(Scalar::Int(-i)),
                Expr::Literal(Scalar::Float(x)) => Expr::Literal(Scalar::Float(-x)),
                _ => return Err(unsupported("arithmetic (unary minus on anything but a number)")),
            },
            sql::Expr::UnaryOp { op: sql::UnaryOperator::Plus, expr } => self.row_expr(expr)?,
            sql::Expr::BinaryOp { left, op, right } => {
                let cmp = match op {
                    sql::BinaryOperator::And => return Ok(and(self.row_expr(left)?, self.row_expr(right)?)),
                    sql::BinaryOperator::Or => {
                        let mut items = Vec::new();
                        for side in [self.row_expr(left)?, self.row_expr(right)?] {
                            match side {
                                Expr::Or(inner) => items.extend(inner),
                                other => items.push(other),
                            }
                        }
                        return Ok(Expr::Or(items));
                    }
                    sql::BinaryOperator::Eq => CmpOp::Eq,
                    sql::BinaryOperator::NotEq => CmpOp::Ne,
                    sql::BinaryOperator::Lt => CmpOp::Lt,
                    sql::BinaryOperator::LtEq => CmpOp::Le,
                    sql::BinaryOperator::Gt => CmpOp::Gt,
                    sql::BinaryOperator::GtEq => CmpOp::Ge,
                    other => return Err(unsupported(&format!("the operator {other}"))),
                };
                comparison(self.row_expr(left)?, cmp, self.row_expr(right)?)?
            }
            sql::Expr::IsNull(inner) => Expr::IsNull(Box::new(self.row_expr(inner)?), false),
            sql::Expr::IsNotNull(inner) => Expr::IsNull(Box::new(self.row_expr(inner)?), true),
            sql::Expr::In { expr, target: sql::InTarget::List(list), negated, .. } => {
                let subject = self.row_expr(expr)?;
                let mut items = Vec::new();
                for item in list {
                    let item = self.row_expr(item)?;
                    // Checks and types the item as a comparison would.
                    let Expr::Cmp(_, _, typed) = comparison(subject.clone(), CmpOp::Eq, item)? else {
                        unreachable!("a comparison plans as one");
                    };
                    items.push(*typed);
                }
                Expr::In(Box::new(subject), items, *negated)
            }
            sql::Expr::In { .. } | sql::Expr::Subquery(_) | sql::Expr::Exists { .. } => {
                return Err(unsupported("a subquery"));
            }
            sql::Expr::Between { expr, negated, low, high } => {
                let subject = self.row_expr(expr)?;
                let both = and(
                    comparison(subject.clone(), CmpOp::Ge, self.row_expr(low)?)?,
                    comparison(subject, CmpOp::Le, self.row_expr(high)?)?,
                );
                if *negated { Expr::Not(Box::new(both)) } else { both }
            }
            sql::Expr::Function(f) => self.function(f)?,
            sql::Expr::Like { .. } | sql::Expr::ILike { .. } => return Err(unsupported("LIKE")),
            sql::Expr::Case { .. } => return Err(unsupported("CASE")),
            other => return Err(unsupported(&format!("the expression {other}"))),
        })
    }

    /// `date_trunc('unit', ts)`; aggregates are refused here (they are only
    /// allowed in the select list and ORDER BY of an aggregate query).
    fn function(&mut self, f: &sql::Function) -> Result<Expr, QueryError> {
        let func_name = f.name.to_string().to_lowercase();
        if aggregate_func(f).is_some() {
            return Err(invalid(format!("the aggregate {func_name}() is not allowed here")));
        }
        if func_name != "date_trunc" {
            return Err(unsupported(&format!("the function {func_name}() (only the aggregates and date_trunc are)")));
        }
        if f.over.is_some() {
            return Err(unsupported("a window function (OVER)"));
        }
        let sql::FunctionArguments::List(list) = &f.args else {
            return Err(invalid("date_trunc() takes a unit and ts"));
        };
        let [
            sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Expr(unit)),
            sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Expr(arg)),
        ] = list.args.as_slice()
        else {
            return Err(invalid("date_trunc() takes a unit and ts"));
        };
        let unit = match unit {
            sql::Expr::Value(v) => match &v.value {
                sql::Value::SingleQuotedString(s) => TruncUnit::parse(s).ok_or_else(|| {
                    invalid(format!(
                        "date_trunc unit '{s}' is not supported (minute, hour, day, week, month, quarter or year)"
                    ))
                })?,
                _ => return Err(invalid("date_trunc's unit is a quoted string such as 'day'")),
            },
            _ => return Err(invalid("date_trunc's unit is a quoted string such as 'day'")),
        };
        let arg = self.row_expr(arg)?;
        if !is_timestamp(&arg) {
            return Err(invalid("date_trunc() applies to ts, the only timestamp column"));
        }
        Ok(Expr::Trunc(unit, Box::new(arg)))
    }

    fn column(&mut self, name: String) -> Column {
        match name.as_str() {
            "shop" => Column::Shop,
            "id" => Column::Id,
            "ts" => Column::Ts,
            _ => Column::Field(self.fields.iter().position(|f| *f == name).unwrap_or_else(|| {
                self.fields.push(name);
                self.fields.len() - 1
            })),
        }
    }
}

/// Where a grouped query's plain expression sits among the keys.
fn key_index(keys: &[Expr], e: &Expr, source: &sql::Expr) -> Result<usize, QueryError> {
    keys.iter().position(|k| k == e).ok_or_else(|| {
        invalid(format!("{source} must appear in the GROUP BY clause or be used in an aggregate function"))
    })
}

fn order_key(at: usize, o: &sql::OrderByExpr) -> Result<OrderKey, QueryError> {
    if o.with_fill.is_some() {
        return Err(unsupported("WITH FILL"));
    }
    let desc = match &o.options.sort {
        None | Some(sql::OrderBySort::Asc) => false,
        Some(sql::OrderBySort::Desc) => true,
        Some(sql::OrderBySort::Using(_)) => return Err(unsupported("ORDER BY … USING")),
    };
    Ok(OrderKey { at, desc, nulls_first: o.options.nulls_first.unwrap_or(desc) })
}

fn and(a: Expr, b: Expr) -> Expr {
    let mut items = Vec::new();
    for side in [a, b] {
        match side {
            Expr::And(inner) => items.extend(inner),
            other => items.push(other),
        }
    }
    Expr::And(items)
}

fn is_timestamp(e: &Expr) -> bool {
    matches!(e, Expr::Column(Column::Ts) | Expr::Trunc(..) | Expr::Literal(Scalar::Ts(_)))
}

fn is_text_column(e: &Expr) -> bool {
    matches!(e, Expr::Column(Column::Shop | Column::Id))
}

/// A comparison, with its literals typed where a side's type is known:
/// text literals compared with a timestamp are read as timestamps, and a
/// literal of a type that cannot compare with it is an error, as in
/// PostgreSQL.
fn comparison(left: Expr, op: CmpOp, right: Expr) -> Result<Expr, QueryError> {
    let typed = |known: &Expr, other: Expr| -> Result<Expr, QueryError> {
        if is_timestamp(known) {
            return match other {
                Expr::Untyped(text) => parse_timestamp(&text)
                    .map(|t| Expr::Literal(Scalar::Ts(t)))
                    .ok_or_else(|| invalid(format!("invalid input syntax for type timestamp: \"{text}\""))),
                Expr::Literal(Scalar::Null | Scalar::Ts(_)) => Ok(other),
                Expr::Literal(l) => Err(invalid(format!("cannot compare a timestamp with {}", kind(&l)))),
                other => Ok(other),
            };
        }
        if is_text_column(known)
            && let Expr::Literal(l @ (Scalar::Int(_) | Scalar::Float(_) | Scalar::Bool(_) | Scalar::Ts(_))) = &other
        {
            return Err(invalid(format!("cannot compare text with {}", kind(l))));
        }
        if is_text_column(known)
            && let Expr::Untyped(text) = other
        {
            return Ok(Expr::Literal(Scalar::Text(text)));
        }
        Ok(other)
    };
    let right = typed(&left, right)?;
    let left = typed(&right, left)?;
    Ok(Expr::Cmp(Box::new(left), op, Box::new(right)))
}

fn kind(l: &Scalar) -> &'static str {
    match l {
        Scalar::Null => "NULL",
        Scalar::Bool(_) => "a boolean",
        Scalar::Int(_) | Scalar::Float(_) => "a number",
        Scalar::Text(_) => "text",
        Scalar::Ts(_) => "a timestamp",
    }
}

fn literal(v: &sql::Value) -> Result<Expr, QueryError> {
    Ok(match v {
        sql::Value::Number(n, _) => match n.parse::<i64>() {
            Ok(i) => Expr::Literal(Scalar::Int(i128::from(i))),
            Err(_) => {
                Expr::Literal(Scalar::float(n.parse::<f64>().map_err(|_| invalid(format!("invalid number {n}")))?))
            }
        },
        sql::Value::SingleQuotedString(s) => Expr::Untyped(s.clone()),
        sql::Value::Boolean(b) => Expr::Literal(Scalar::Bool(*b)),
        sql::Value::Null => Expr::Literal(Scalar::Null),
        other => return Err(unsupported(&format!("the literal {other}"))),
    })
}

fn timestamp_literal(data_type: &sql::DataType, v: &sql::Value) -> Result<Expr, QueryError> {
    let is_time = matches!(
        data_type,
        sql::DataType::Timestamp(..)
            | sql::DataType::Date
            | sql::DataType::Datetime(_)
            | sql::DataType::TimestampNtz(_)
    ) || matches!(data_type, sql::DataType::Custom(n, _) if n.to_string().eq_ignore_ascii_case("timestamptz"));
    if !is_time {
        return Err(unsupported(&format!("a literal or cast of type {data_type} (only timestamps are)")));
    }
    let sql::Value::SingleQuotedString(text) = v else {
        return Err(invalid(format!("a {data_type} literal is a quoted string")));
    };
    let t =
        parse_timestamp(text).ok_or_else(|| invalid(format!("invalid input syntax for type timestamp: \"{text}\"")))?;
    Ok(Expr::Literal(Scalar::Ts(t)))
}

fn aggregate_func(f: &sql::Function) -> Option<AggFunc> {
    Some(match f.name.to_string().to_lowercase().as_str() {
        "count" => AggFunc::Count,
        "sum" => AggFunc::Sum,
        "avg" => AggFunc::Avg,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        _ => return None,
    })
}

/// Whether an aggregate call appears in `e`, through the expressions the
/// subset has.
fn has_aggregate(e: &sql::Expr) -> bool {
    match e {
        sql::Expr::Function(f) => {
            aggregate_func(f).is_some()
                || matches!(&f.args, sql::FunctionArguments::List(l) if l.args.iter().any(|a| matches!(
                    a,
                    sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Expr(inner)) if has_aggregate(inner)
                )))
        }
        sql::Expr::Nested(inner)
        | sql::Expr::UnaryOp { expr: inner, .. }
        | sql::Expr::IsNull(inner)
        | sql::Expr::IsNotNull(inner)
        | sql::Expr::Cast { expr: inner, .. } => has_aggregate(inner),
        sql::Expr::BinaryOp { left, right, .. } => has_aggregate(left) || has_aggregate(right),
        sql::Expr::Between { expr, low, high, .. } => [expr, low, high].iter().any(|e| has_aggregate(e)),
        sql::Expr::In { expr, target: sql::InTarget::List(list), .. } => {
            has_aggregate(expr) || list.iter().any(has_aggregate)
        }
        _ => false,
    }
}

/// The column name PostgreSQL gives an unaliased select item.
fn default_name(e: &sql::Expr) -> String {
    match e {
        sql::Expr::Identifier(i) => name(i),
        sql::Expr::CompoundIdentifier(parts) => parts.last().map(name).unwrap_or_default(),
        sql::Expr::Function(f) => f.name.0.last().map(|p| p.to_string().to_lowercase()).unwrap_or_default(),
        sql::Expr::Nested(inner) => default_name(inner),
        _ => "?column?".to_string(),
    }
}

/// Renumbers field columns from first-met order to sorted order.
fn renumber(e: &mut Expr, index: &[usize]) {
    match e {
        Expr::Column(Column::Field(i)) => *i = index[*i],
        Expr::Column(_) | Expr::Literal(_) | Expr::Untyped(_) => {}
        Expr::Trunc(_, inner) | Expr::Not(inner) | Expr::IsNull(inner, _) => renumber(inner, index),
        Expr::Cmp(l, _, r) => {
            renumber(l, index);
            renumber(r, index);
        }
        Expr::And(items) | Expr::Or(items) => items.iter_mut().for_each(|i| renumber(i, index)),
        Expr::In(subject, items, _) => {
            renumber(subject, index);
            items.iter_mut().for_each(|i| renumber(i, index));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::partial::Accumulator;
    use crate::query::plan::Row;
    use crate::query::scalar::Val;

    fn error(sql: &str) -> String {
        match parse(sql) {
            Ok(plan) => panic!("{sql} planned: {plan:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn sql_outside_the_subset_is_refused_naming_the_part() {
        let cases = [
            ("SELECT a.x FROM sales a JOIN refunds b ON a.id = b.id", "JOIN"),
            ("SELECT x FROM (SELECT 1) t LIMIT 1", "subquery"),
            ("SELECT x FROM sales WHERE x IN (SELECT y FROM refunds) LIMIT 1", "subquery"),
            ("SELECT sum(x) OVER () FROM sales", "window"),
            ("SELECT upper(x) FROM sales LIMIT 1", "function upper()"),
            ("DELETE FROM sales", "DELETE"),
            ("SELECT x FROM sales", "without LIMIT"),
            ("SELECT * FROM sales LIMIT 1", "SELECT *"),
            ("SELECT x FROM sales WHERE x LIKE 'a%' LIMIT 1", "LIKE"),
            ("SELECT x + 1 FROM sales LIMIT 1", "operator +"),
            ("SELECT count(*) FROM sales GROUP BY x HAVING count(*) > 1", "HAVING"),
            ("SELECT DISTINCT x FROM sales LIMIT 1", "DISTINCT"),
            ("SELECT x FROM sales UNION SELECT y FROM sales", "UNION"),
            ("WITH t AS (SELECT 1) SELECT x FROM t LIMIT 1", "WITH"),
            ("SELECT sum(DISTINCT x) FROM sales", "DISTINCT in sum()"),
        ];
        for (sql, part) in cases {
            let e = error(sql);
            assert!(e.starts_with("not supported") && e.contains(part), "{sql}: {e}");
        }
    }

    #[test]
    fn sql_that_makes_no_sense_is_an_error_saying_what_is_wrong() {
        let cases = [
            ("SELECT region, count(*) FROM sales", "must appear in the GROUP BY clause"),
            ("SELECT count(*) FROM sales WHERE ts > 'soon'", "invalid input syntax for type timestamp"),
            ("SELECT count(*) FROM sales WHERE ts > TIMESTAMP '2026-13-01'", "invalid input syntax"),
            ("SELECT count(*) FROM sales WHERE ts > 5", "cannot compare a timestamp with a number"),
            ("SELECT count(*) FROM sales WHERE shop = 5", "cannot compare text with a number"),
            ("SELECT count(*) FROM sales WHERE count(*) > 1", "not allowed here"),
            ("SELECT count(*) FROM sales GROUP BY 2", "position 2"),
            ("SELECT count(*) FROM sales GROUP BY 1", "not allowed in GROUP BY"),
            ("SELECT date_trunc('fortnight', ts), count(*) FROM sales GROUP BY 1", "fortnight"),
            ("SELECT date_trunc('day', amount), count(*) FROM sales GROUP BY 1", "applies to ts"),
            ("SELECT count(*) FROM \"bad name!\"", "table bad name!"),
            ("SELECT count(*)", "FROM"),
            ("SELEC count(*) FROM sales", "syntax error"),
        ];
        for (sql, what) in cases {
            let e = error(sql);
            assert!(e.contains(what), "{sql}: {e}");
        }
    }

    /// Runs `sql` over rows of (shop, id, ts in µs, amount, region).
    fn run(sql: &str, rows: &[(&str, &str, i64, Val<'_>, Val<'_>)]) -> (Vec<String>, Vec<Vec<Scalar>>) {
        let plan = parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert!(plan.fields.iter().all(|f| f == "amount" || f == "region"), "{:?}", plan.fields);
        let mut acc = Accumulator::new(&plan, 1000);
        for (shop, id, ts, amount, region) in rows {
            let fields: Vec<Val> = plan.fields.iter().map(|f| if f == "amount" { *amount } else { *region }).collect();
            let row = Row { shop, id, ts: *ts, fields: &fields };
            if plan.filter.as_ref().is_none_or(|f| f.passes(&row)) {
                acc.add(&row).unwrap();
            }
        }
        // Through a partial, as a node would send it.
        let mut merged = Accumulator::new(&plan, 1000);
        merged.merge(acc.into_partial()).unwrap();
        merged.finish()
    }

    #[test]
    fn aggregates_groups_order_and_limit_follow_the_sql() {
        const DAY: i64 = 86_400_000_000;
        let march = parse_timestamp("2026-03-01").unwrap();
        let rows = [
            ("s1", "a", march, Val::Int(10), Val::Text("eu")),
            ("s1", "b", march + DAY / 2, Val::Int(5), Val::Null),
            ("s2", "c", march + DAY, Val::Int(7), Val::Text("us")),
            ("s2", "d", march + 2 * DAY, Val::Null, Val::Text("eu")),
            ("s3", "e", march + 3 * DAY, Val::Float(2.5), Val::Text("us")),
        ];
        let int = |i| Scalar::Int(i);
        let text = |t: &str| Scalar::Text(t.into());
        let (names, result) = run("SELECT count(*), count(amount), sum(amount), min(region) FROM sales", &rows);
        assert_eq!(names, ["count", "count", "sum", "min"]);
        assert_eq!(result, vec![vec![int(5), int(4), Scalar::Float(24.5), text("eu")]]);

        let (names, result) = run(
            "SELECT region AS r, sum(amount) AS total FROM sales GROUP BY r ORDER BY total DESC NULLS LAST, r",
            &rows,
        );
        assert_eq!(names, ["r", "total"]);
        let expected =
            vec![vec![text("eu"), int(10)], vec![text("us"), Scalar::Float(9.5)], vec![Scalar::Null, int(5)]];
        assert_eq!(result, expected);

        // The NULL group, sorted first when descending; a group over no
        // rows does not exist, but the global one does.
        let (_, result) = run("SELECT region, count(*) FROM sales GROUP BY region ORDER BY region DESC", &rows);
        assert_eq!(result, vec![vec![Scalar::Null, int(1)], vec![text("us"), int(2)], vec![text("eu"), int(2)]]);
        let (_, result) = run("SELECT region, count(*) FROM sales WHERE amount > 100 GROUP BY region", &rows);
        assert!(result.is_empty());
        let (_, result) = run("SELECT count(*), sum(amount), avg(amount) FROM sales WHERE amount > 100", &rows);
        assert_eq!(result, vec![vec![int(0), Scalar::Null, Scalar::Null]]);

        // Time: literals in three spellings, BETWEEN, date_trunc.
        let (names, result) = run(
            "SELECT date_trunc('day', ts) AS day, count(*) FROM sales \
             WHERE ts >= '2026-03-01' AND ts < TIMESTAMP '2026-03-03 00:00:00' GROUP BY 1 ORDER BY day",
            &rows,
        );
        assert_eq!(names, ["day", "count"]);
        assert_eq!(result, vec![vec![Scalar::Ts(march), int(2)], vec![Scalar::Ts(march + DAY), int(1)]]);
        let (_, result) =
            run("SELECT count(*) FROM sales WHERE ts BETWEEN '2026-03-02T00:00:00Z' AND '2026-03-03'", &rows);
        assert_eq!(result, vec![vec![int(2)]]);

        // Three-valued logic: NOT (amount > 6) skips the NULL amount.
        let (_, result) = run("SELECT count(*) FROM sales WHERE NOT amount > 6", &rows);
        assert_eq!(result, vec![vec![int(2)]]);
        let (_, result) = run("SELECT count(DISTINCT region), count(DISTINCT shop) FROM sales", &rows);
        assert_eq!(result, vec![vec![int(2), int(3)]]);

        // Plain rows, ordered by a column not selected, limited.
        let (names, result) =
            run("SELECT id, amount FROM sales WHERE region IN ('eu', 'us') ORDER BY ts DESC LIMIT 2", &rows);
        assert_eq!(names, ["id", "amount"]);
        assert_eq!(result, vec![vec![text("e"), Scalar::Float(2.5)], vec![text("d"), Scalar::Null]]);

        // ORDER BY an aggregate not in the select list.
        let (_, result) = run("SELECT shop FROM sales GROUP BY shop ORDER BY sum(amount) DESC, shop LIMIT 2", &rows);
        assert_eq!(result, vec![vec![text("s1")], vec![text("s2")]]);
    }
}
