//! Turning request bodies into records, and records back into JSON.
//!
//! Everything here is checked before anything is stored: a batch with one
//! bad record is refused whole, with the bad record's index.

use chrono::DateTime;
use ringup_proto::names;
use ringup_proto::value::{StoredRecord, Version};
use serde_json::{Map, Value};

use crate::api::error::ApiError;

/// The largest encoded record.
pub const MAX_RECORD: usize = 1 << 20;
/// The largest request body.
pub const MAX_BODY: usize = 16 << 20;
/// The longest field name, in bytes.
pub const MAX_FIELD_NAME: usize = 1024;

/// A checked record, ready to be stamped and stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecord {
    /// The record's id.
    pub id: String,
    /// Event time in epoch milliseconds.
    pub ts: i64,
    /// The fields: every key but `id` and `ts`.
    pub fields: Map<String, Value>,
}

impl NewRecord {
    /// The stored form, stamped with `version`; refused if over [`MAX_RECORD`].
    pub fn encode(&self, version: Version, index: Option<usize>) -> Result<Vec<u8>, ApiError> {
        let bytes = StoredRecord::from_json(version, self.ts, &self.fields).encode();
        if bytes.len() > MAX_RECORD {
            let message =
                format!("record {} encodes to {} bytes, over the limit of {MAX_RECORD}", self.id, bytes.len());
            return Err(ApiError::record_too_large(message, index));
        }
        Ok(bytes)
    }
}

/// The body format of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchFormat {
    /// A JSON array of records.
    JsonArray,
    /// One JSON record per line.
    Ndjson,
}

/// Parses and checks a batch body; `now_ms` is the default event time.
pub fn parse_batch(body: &[u8], format: BatchFormat, now_ms: i64) -> Result<Vec<NewRecord>, ApiError> {
    let values: Vec<Value> = match format {
        BatchFormat::JsonArray => match serde_json::from_slice(body) {
            Ok(Value::Array(items)) => items,
            Ok(_) => {
                return Err(ApiError::bad_request("invalid_json", "the body must be a JSON array of records"));
            }
            Err(e) => {
                return Err(ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")));
            }
        },
        BatchFormat::Ndjson => parse_ndjson(body)?,
    };
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| parse_record(value, None, now_ms).map_err(|e| e.at_index(index)))
        .collect()
}

fn parse_ndjson(body: &[u8]) -> Result<Vec<Value>, ApiError> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(line, bytes)| {
            serde_json::from_slice(bytes).map_err(|e| {
                ApiError::bad_request("invalid_json", format!("line {} is not valid JSON: {e}", line + 1))
                    .with("line", Value::from(line + 1))
            })
        })
        .collect()
}

/// Checks one record. With `path_id` (PUT), the id comes from the path and
/// an `id` inside the record must match it.
pub fn parse_record(value: Value, path_id: Option<&str>, now_ms: i64) -> Result<NewRecord, ApiError> {
    let Value::Object(mut fields) = value else {
        return Err(ApiError::bad_request("invalid_record", "a record must be a JSON object"));
    };
    let id = match (fields.remove("id"), path_id) {
        (Some(Value::String(id)), Some(path)) if id != path => {
            return Err(ApiError::bad_request(
                "id_mismatch",
                format!("the record's id {id:?} differs from the path's {path:?}"),
            ));
        }
        (Some(Value::String(id)), _) => id,
        (None, Some(path)) => path.to_string(),
        (None, None) => {
            return Err(ApiError::bad_request("invalid_id", "the record has no \"id\""));
        }
        (Some(_), _) => {
            return Err(ApiError::bad_request("invalid_id", "\"id\" must be a string"));
        }
    };
    names::validate_id(&id).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))?;
    if let Some(name) = fields.keys().find(|k| k.len() > MAX_FIELD_NAME) {
        let shown: String = name.chars().take(32).collect();
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("field name {shown:?}... is {} bytes, over the limit of {MAX_FIELD_NAME}", name.len()),
        ));
    }
    let ts = match fields.remove("ts") {
        None | Some(Value::Null) => now_ms,
        Some(ts) => parse_ts(&ts)?,
    };
    Ok(NewRecord { id, ts, fields })
}

/// An event time: integer epoch milliseconds or an RFC 3339 string.
fn parse_ts(ts: &Value) -> Result<i64, ApiError> {
    let invalid =
        || ApiError::bad_request("invalid_ts", "\"ts\" must be integer epoch milliseconds or an RFC 3339 string");
    match ts {
        // A number without a fractional part is an integer, as JSON Schema
        // has it: 1700000000000.0 is accepted too.
        Value::Number(n) => n.as_i64().or_else(|| whole_ms(n.as_f64()?)).ok_or_else(invalid),
        Value::String(s) => DateTime::parse_from_rfc3339(s).map(|t| t.timestamp_millis()).map_err(|_| invalid()),
        _ => Err(invalid()),
    }
}

/// `ms` as whole milliseconds, if it is one that a float holds exactly
/// (within ±2^53). An integer too large for `i64` also arrives as a float,
/// rounded, and is refused by this bound.
fn whole_ms(ms: f64) -> Option<i64> {
    const EXACT: f64 = (1u64 << 53) as f64;
    (ms.fract() == 0.0 && ms.abs() <= EXACT).then_some(ms as i64)
}

/// A stored record as the API shows it: `id`, `ts` and the fields.
pub fn to_json(id: &str, record: &StoredRecord) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), Value::from(id));
    object.insert("ts".into(), Value::from(record.ts));
    object.extend(record.fields_json());
    Value::Object(object)
}

/// Applies a JSON Merge Patch (RFC 7396) to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000_000;

    fn code(e: &ApiError) -> &str {
        e.code()
    }

    #[test]
    fn a_batch_parses_as_json_or_ndjson() {
        let json = br#"[{"id":"a","amount":1},{"id":"b","ts":5}]"#;
        let ndjson = b"{\"id\":\"a\",\"amount\":1}\n\n{\"id\":\"b\",\"ts\":5}\n";
        for (body, format) in [(&json[..], BatchFormat::JsonArray), (&ndjson[..], BatchFormat::Ndjson)] {
            let batch = parse_batch(body, format, NOW).unwrap();
            assert_eq!(batch.len(), 2);
            assert_eq!(batch[0].ts, NOW, "ts defaults to now");
            assert_eq!(batch[0].fields["amount"], json!(1));
            assert_eq!(batch[1].ts, 5);
        }
    }

    #[test]
    fn a_bad_record_names_its_index() {
        let body = br#"[{"id":"a"},{"id":"_hidden"}]"#;
        let e = parse_batch(body, BatchFormat::JsonArray, NOW).unwrap_err();
        assert_eq!(code(&e), "invalid_id");
        assert_eq!(e.detail("index"), Some(&json!(1)));
    }

    #[test]
    fn rfc3339_times_are_read() {
        let r = parse_record(json!({"id": "a", "ts": "2024-01-01T00:00:01Z"}), None, NOW).unwrap();
        assert_eq!(r.ts, 1_704_067_201_000);
        let e = parse_record(json!({"id": "a", "ts": "yesterday"}), None, NOW).unwrap_err();
        assert_eq!(code(&e), "invalid_ts");
    }

    #[test]
    fn whole_numbers_are_times_and_others_are_refused() {
        let ts = |raw: &str| {
            let record: Value = serde_json::from_str(&format!(r#"{{"id": "a", "ts": {raw}}}"#)).unwrap();
            parse_record(record, None, NOW).map(|r| r.ts).map_err(|e| code(&e).to_string())
        };
        assert_eq!(ts("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(ts("1700000000000.0"), Ok(1_700_000_000_000), "a zero fraction is still an integer");
        assert_eq!(ts("-5e3"), Ok(-5000));
        assert_eq!(ts("-9223372036854775808"), Ok(i64::MIN), "the whole i64 range");
        for refused in ["1.5", "-9223372036854775809", "9223372036854775808", "1e300", "true", "[1]"] {
            assert_eq!(ts(refused), Err("invalid_ts".to_string()), "{refused}");
        }
    }

    #[test]
    fn put_ids_come_from_the_path_and_must_agree() {
        assert_eq!(parse_record(json!({"x": 1}), Some("p"), NOW).unwrap().id, "p");
        let e = parse_record(json!({"id": "q"}), Some("p"), NOW).unwrap_err();
        assert_eq!(code(&e), "id_mismatch");
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1]});
        merge_patch(&mut doc, &json!({"a": {"b": 1}, "n": null}));
        assert_eq!(doc, json!({"a": {"b": 1}}));
    }

    #[test]
    fn overlong_field_names_are_refused() {
        let name = "f".repeat(MAX_FIELD_NAME + 1);
        let e = parse_record(json!({"id": "a", name: 1}), None, NOW).unwrap_err();
        assert_eq!(code(&e), "invalid_field");
        assert!(parse_record(json!({"id": "a", "f".repeat(MAX_FIELD_NAME): 1}), None, NOW).is_ok());
    }

    #[test]
    fn oversized_records_are_refused() {
        let big = "x".repeat(MAX_RECORD);
        let r = parse_record(json!({"id": "a", "blob": big}), None, NOW).unwrap();
        let e = r.encode(Version::default(), Some(3)).unwrap_err();
        assert_eq!(code(&e), "record_too_large");
        assert_eq!(e.detail("index"), Some(&json!(3)));
    }
}
