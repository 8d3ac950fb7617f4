//! The analysts' API: `POST /v1/query` runs a SQL report across every
//! shop and answers JSON (`{"columns", "rows"}`) or, when `Accept` asks
//! for it, CSV.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ringup_proto::consistency::Consistency;
use ringup_proto::query::scalar::format_timestamp;
use ringup_proto::query::{QueryError, Scalar, parse};
use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};

use super::error::ApiError;
use super::{State, body};
use crate::reports::{self, ReportError, Table};

/// `POST /v1/query`: `{"sql": "..."}` or the SQL as `text/plain`.
pub async fn run(
    state: State,
    params: Result<Query<BTreeMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    request_body: Body,
) -> Result<Response, ApiError> {
    let params = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let level = match params.get("consistency").map(String::as_str) {
        None => Consistency::One,
        Some(level) => level.parse().map_err(|e: String| ApiError::bad_request("invalid_consistency", e))?,
    };
    let bytes = body::read(request_body).await?;
    let sql = sql_text(&headers, &bytes)?;
    let plan = parse(&sql).map_err(|e| match e {
        QueryError::Unsupported(_) => ApiError::bad_request("unsupported_sql", e.to_string()),
        QueryError::Syntax(_) | QueryError::Invalid(_) => ApiError::bad_request("invalid_sql", e.to_string()),
    })?;
    let table = reports::run(&state.view, plan, level, state.reports).await.map_err(|e| match e {
        ReportError::NoMap => ApiError::no_map(),
        ReportError::UnknownTable(_) => ApiError::bad_request("unknown_table", e.to_string()),
        ReportError::TooManyGroups(cap) => {
            ApiError::unprocessable("too_many_groups", e.to_string()).with("max_groups", cap.into())
        }
        ReportError::Deadline(d) => {
            ApiError::unavailable("query_timeout", e.to_string()).with("timeout_ms", (d.as_millis() as u64).into())
        }
        ReportError::Unavailable(_) => ApiError::unavailable("partition_unavailable", e.to_string()),
    })?;
    tracing::debug!(rows = table.rows.len(), scanned = table.scanned, "report answered");
    if wants_csv(&headers) {
        let csv = to_csv(&table);
        Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response())
    } else {
        let json = serde_json::to_vec(&JsonTable(&table))
            .map_err(|e| ApiError::internal(format!("cannot encode the result: {e}")))?;
        Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], json).into_response())
    }
}

/// The SQL of the body: JSON `{"sql": "..."}` (also when no content type
/// is given and the body is a JSON object), or plain text.
fn sql_text(headers: &HeaderMap, bytes: &[u8]) -> Result<String, ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("invalid").split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let looks_json = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let sql = match media.as_deref() {
        Some("application/json") => json_sql(bytes)?,
        // What curl sends by default with -d: read as JSON or text.
        None | Some("application/x-www-form-urlencoded") if looks_json => json_sql(bytes)?,
        Some("text/plain" | "application/x-www-form-urlencoded") | None => String::from_utf8(bytes.to_vec())
            .map_err(|_| ApiError::bad_request("invalid_body", "the SQL text is not UTF-8"))?,
        Some(other) => {
            return Err(ApiError::unsupported_media_type(format!(
                "content type {other} is not accepted: send application/json ({{\"sql\": \"...\"}}) or text/plain"
            )));
        }
    };
    if sql.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_sql", "the query is empty"));
    }
    Ok(sql)
}

fn json_sql(bytes: &[u8]) -> Result<String, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        sql: String,
    }
    serde_json::from_slice::<Body>(bytes).map(|b| b.sql).map_err(|e| {
        ApiError::bad_request("invalid_body", format!("the body must be {{\"sql\": \"<a SELECT>\"}}: {e}"))
    })
}

/// Whether `Accept` prefers CSV: it names `text/csv` and not JSON first.
fn wants_csv(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else { return false };
    let types: Vec<String> =
        accept.split(',').map(|t| t.split(';').next().unwrap_or("").trim().to_ascii_lowercase()).collect();
    let csv = types.iter().position(|t| t == "text/csv");
    let json = types.iter().position(|t| t == "application/json");
    match (csv, json) {
        (Some(c), Some(j)) => c < j,
        (Some(_), None) => true,
        _ => false,
    }
}

/// The result as JSON: timestamps as RFC 3339 strings, integers of any
/// size as JSON numbers.
struct JsonTable<'a>(&'a Table);

impl Serialize for JsonTable<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut t = s.serialize_struct("Table", 2)?;
        t.serialize_field("columns", &self.0.columns)?;
        t.serialize_field("rows", &Rows(&self.0.rows))?;
        t.end()
    }
}

struct Rows<'a>(&'a [Vec<Scalar>]);

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for row in self.0 {
            seq.serialize_element(&Cells(row))?;
        }
        seq.end()
    }
}

struct Cells<'a>(&'a [Scalar]);

impl Serialize for Cells<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for cell in self.0 {
            seq.serialize_element(&Cell(cell))?;
        }
        seq.end()
    }
}

struct Cell<'a>(&'a Scalar);

impl Serialize for Cell<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Scalar::Null => s.serialize_unit(),
            Scalar::Bool(b) => s.serialize_bool(*b),
            Scalar::Int(i) => match i64::try_from(*i) {
                Ok(small) => s.serialize_i64(small),
                Err(_) => s.serialize_i128(*i),
            },
            Scalar::Float(x) => s.serialize_f64(*x),
            Scalar::Text(t) => s.serialize_str(t),
            Scalar::Ts(t) => s.serialize_str(&format_timestamp(*t)),
        }
    }
}

/// The result as CSV (RFC 4180): a header line, then one line per row;
/// NULL is an empty field.
pub fn to_csv(table: &Table) -> String {
    let mut out = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    let written = out
        .write_record(&table.columns)
        .and_then(|()| table.rows.iter().try_for_each(|row| out.write_record(row.iter().map(cell_text))));
    written.expect("writing CSV into memory cannot fail");
    let bytes = out.into_inner().expect("flushing into memory cannot fail");
    String::from_utf8(bytes).expect("CSV of strings is UTF-8")
}

/// A cell as text: what the JSON holds, without quotes; NULL is empty.
pub fn cell_text(cell: &Scalar) -> String {
    match cell {
        Scalar::Null => String::new(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(x) => x.to_string(),
        Scalar::Text(t) => t.clone(),
        Scalar::Ts(t) => format_timestamp(*t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_as_json_and_csv() {
        let table = Table {
            columns: vec!["region".into(), "total".into(), "day".into()],
            rows: vec![
                vec![Scalar::Text("eu, west".into()), Scalar::Int(i128::from(i64::MAX) * 4), Scalar::Ts(0)],
                vec![Scalar::Null, Scalar::Float(2.5), Scalar::Null],
            ],
            scanned: 2,
        };
        let json = serde_json::to_string(&JsonTable(&table)).unwrap();
        assert_eq!(
            json,
            r#"{"columns":["region","total","day"],"rows":[["eu, west",36893488147419103228,"1970-01-01T00:00:00Z"],[null,2.5,null]]}"#
        );
        assert_eq!(
            to_csv(&table),
            "region,total,day\r\n\"eu, west\",36893488147419103228,1970-01-01T00:00:00Z\r\n,2.5,\r\n"
        );
    }

    #[test]
    fn accept_picks_csv_only_when_it_comes_first() {
        let with = |accept: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, accept.parse().unwrap());
            wants_csv(&h)
        };
        assert!(with("text/csv"));
        assert!(with("text/csv;q=0.9, application/json;q=0.5"));
        assert!(!with("application/json, text/csv"));
        assert!(!with("*/*"));
    }
}
