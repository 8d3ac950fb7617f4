//! The shops' API: batch ingest, single-record PUT, PATCH, GET, DELETE,
//! listing and counting.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, NO_PAD, URL_SAFE_NO_PAD};
use ringup_proto::consistency::Consistency;
use ringup_proto::names;
use ringup_proto::value::StoredRecord;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{State, body};
use crate::coordinator::Collection;
use crate::records::{self, BatchFormat, NewRecord};

/// The default page size of a list.
const DEFAULT_LIMIT: usize = 100;
/// The largest page size of a list.
const MAX_LIMIT: usize = 1000;

type Params = Result<Query<BTreeMap<String, String>>, QueryRejection>;

/// `POST /v1/shops/{shop}/{collection}`: batch ingest, all or nothing.
pub async fn ingest(
    state: State,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let at = collection(path)?;
    let level = consistency(&params)?;
    let format = match media_type(&headers).as_deref() {
        None | Some("application/json") => BatchFormat::JsonArray,
        Some("application/x-ndjson") => BatchFormat::Ndjson,
        Some(other) => {
            return Err(ApiError::unsupported_media_type(format!(
                "content type {other} is not accepted: send application/json or application/x-ndjson"
            )));
        }
    };
    // Each form of the batch is dropped as soon as the next is made, so a
    // large batch is held in memory about twice at most.
    let batch = records::parse_batch(&body::read(body).await?, format, state.clock.wall_ms() as i64)?;
    let encoded = batch
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let bytes = r.encode(state.coordinator.stamp(), Some(i))?;
            Ok((r.id, bytes))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let written = encoded.len();
    if written > 0 {
        state.coordinator.write(&at, encoded, level).await?;
    }
    state.metrics.count_records(written as u64);
    Ok(Json(json!({ "written": written })))
}

/// `PUT /v1/shops/{shop}/{collection}/{id}`: upserts one record.
pub async fn put(
    state: State,
    path: Result<Path<(String, String, String)>, PathRejection>,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let (at, id, level, value) = single_write(path, &params, &headers, body, &["application/json"]).await?;
    let record = records::parse_record(value, Some(&id), state.clock.wall_ms() as i64)?;
    store(&state, &at, &record, level).await
}

/// `PATCH /v1/shops/{shop}/{collection}/{id}`: JSON Merge Patch of an
/// existing record.
pub async fn patch(
    state: State,
    path: Result<Path<(String, String, String)>, PathRejection>,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let accepted = ["application/merge-patch+json", "application/json"];
    let (at, id, level, patch) = single_write(path, &params, &headers, body, &accepted).await?;
    if !patch.is_object() {
        return Err(ApiError::bad_request("invalid_patch", "a merge patch of a record must be a JSON object"));
    }
    let current = live(state.coordinator.get(&at, &id, level).await?).ok_or_else(|| missing(&id))?;
    let mut document = records::to_json(&id, &current);
    records::merge_patch(&mut document, &patch);
    let record = records::parse_record(document, Some(&id), current.ts)?;
    store(&state, &at, &record, level).await
}

/// `GET /v1/shops/{shop}/{collection}/{id}`.
pub async fn get(
    state: State,
    path: Result<Path<(String, String, String)>, PathRejection>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let level = consistency(&params)?;
    let (at, id) = record_path(path)?;
    let record = live(state.coordinator.get(&at, &id, level).await?).ok_or_else(|| missing(&id))?;
    Ok(Json(records::to_json(&id, &record)))
}

/// `GET /v1/shops/{shop}/{collection}/_count`: live records, tombstones
/// left out.
pub async fn count(
    state: State,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let at = collection(path)?;
    let count = state.coordinator.count(&at, consistency(&params)?).await?;
    Ok(Json(json!({ "count": count })))
}

/// `DELETE /v1/shops/{shop}/{collection}/{id}`: writes a tombstone.
pub async fn delete(
    state: State,
    path: Result<Path<(String, String, String)>, PathRejection>,
    params: Params,
) -> Result<Response, ApiError> {
    let (at, id) = record_path(path)?;
    let level = consistency(&params)?;
    let tombstone = StoredRecord::tombstone(state.coordinator.stamp(), state.clock.wall_ms() as i64).encode();
    state.coordinator.write(&at, vec![(id, tombstone)], level).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/shops/{shop}/{collection}?limit=&cursor=`: lists in id order.
pub async fn list(
    state: State,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let at = collection(path)?;
    let level = consistency(&params)?;
    let query = params.as_ref().map(|q| &q.0);
    let limit = match query.ok().and_then(|q| q.get("limit")) {
        None => DEFAULT_LIMIT,
        Some(s) => s.parse().ok().filter(|l| (1..=MAX_LIMIT).contains(l)).ok_or_else(|| {
            ApiError::bad_request("invalid_limit", format!("limit must be a whole number from 1 to {MAX_LIMIT}"))
        })?,
    };
    let after =
        query.ok().and_then(|q| q.get("cursor")).filter(|c| !c.is_empty()).map(|c| decode_cursor(c)).transpose()?;
    let (page, next) = state.coordinator.list(&at, after, limit, level).await?;
    let records: Vec<Value> = page.iter().map(|(id, r)| records::to_json(id, r)).collect();
    Ok(Json(json!({ "records": records, "next_cursor": next.map(|id| URL_SAFE_NO_PAD.encode(id)) })))
}

/// What PUT and PATCH both take from a request: the record's place, the
/// level, and the JSON body, checked in that order.
async fn single_write(
    path: Result<Path<(String, String, String)>, PathRejection>,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
    accepted: &[&str],
) -> Result<(Collection, String, Consistency, Value), ApiError> {
    let (at, id) = record_path(path)?;
    let level = consistency(params)?;
    require_json(headers, accepted)?;
    let value = parse_json(&body::read(body).await?)?;
    Ok((at, id, level, value))
}

async fn store(
    state: &State,
    at: &Collection,
    record: &NewRecord,
    level: Consistency,
) -> Result<Json<Value>, ApiError> {
    let bytes = record.encode(state.coordinator.stamp(), None)?;
    state.coordinator.write(at, vec![(record.id.clone(), bytes)], level).await?;
    state.metrics.count_records(1);
    Ok(Json(json!({ "written": 1 })))
}

fn live(record: Option<StoredRecord>) -> Option<StoredRecord> {
    record.filter(|r| !r.tombstone)
}

fn missing(id: &str) -> ApiError {
    ApiError::not_found(format!("no record with id {id:?}"))
}

fn collection(path: Result<Path<(String, String)>, PathRejection>) -> Result<Collection, ApiError> {
    let Path((shop, collection)) = path.map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
    names::validate_shop(&shop).map_err(|e| ApiError::bad_request("invalid_shop", e.to_string()))?;
    names::validate_collection(&collection).map_err(|e| ApiError::bad_request("invalid_collection", e.to_string()))?;
    Ok(Collection { shop, collection })
}

fn record_path(path: Result<Path<(String, String, String)>, PathRejection>) -> Result<(Collection, String), ApiError> {
    let Path((shop, coll, id)) = path.map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
    let at = collection(Ok(Path((shop, coll))))?;
    names::validate_id(&id).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))?;
    Ok((at, id))
}

fn consistency(params: &Params) -> Result<Consistency, ApiError> {
    let query = params.as_ref().map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    match query.get("consistency") {
        None => Ok(Consistency::default()),
        Some(level) => level.parse().map_err(|e: String| ApiError::bad_request("invalid_consistency", e)),
    }
}

/// The media type of the body, lower-cased, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().unwrap_or("invalid");
    Some(value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

fn require_json(headers: &HeaderMap, accepted: &[&str]) -> Result<(), ApiError> {
    match media_type(headers) {
        None => Ok(()),
        Some(t) if accepted.contains(&t.as_str()) => Ok(()),
        Some(other) => Err(ApiError::unsupported_media_type(format!(
            "content type {other} is not accepted: send {}",
            accepted.join(" or ")
        ))),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")))
}

/// The position a cursor names: the id to list after. Any unpadded
/// base64url token is a position (bytes that are not UTF-8 are read
/// lossily), so only a malformed token is refused.
fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    const LENIENT: GeneralPurpose =
        GeneralPurpose::new(&alphabet::URL_SAFE, NO_PAD.with_decode_allow_trailing_bits(true));
    let bytes = LENIENT.decode(cursor).map_err(|_| {
        ApiError::bad_request("invalid_cursor", "cursor is not unpadded base64url, as every next_cursor is")
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
