//! The admins' token routes: `POST /v1/tokens` creates a token and shows
//! its secret once, `GET /v1/tokens` lists them without secrets, and
//! `DELETE /v1/tokens/{id}` revokes one. Tokens live in the cluster map as
//! [`MapCommand::CreateToken`] and [`MapCommand::RevokeToken`], so every
//! router knows them as soon as it holds the new map.

use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use ringup_proto::auth::{ROOT_ID, Role, TOKEN_PREFIX, TokenEntry};
use ringup_proto::cluster::MapCommand;
use serde::Deserialize;
use serde_json::{Value, json};

use super::State;
use super::auth::secret_digest;
use super::cluster::propose;
use super::error::ApiError;

/// The body of `POST /v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    role: String,
    #[serde(default)]
    shop: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// A fresh random token: its id, its secret and the whole token string.
pub fn generate(id_len: usize) -> (String, String) {
    let rng = SystemRandom::new();
    let mut id = vec![0u8; id_len / 2];
    let mut secret = [0u8; 32];
    rng.fill(&mut id).and_then(|()| rng.fill(&mut secret)).expect("the system's random source works");
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    (id, URL_SAFE_NO_PAD.encode(secret))
}

/// `rgu_{id}_{secret}`.
pub fn token_string(id: &str, secret: &str) -> String {
    format!("{TOKEN_PREFIX}{id}_{secret}")
}

/// `POST /v1/tokens`: `201` with the token, shown only here.
pub async fn create(state: State, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    const SHAPE: &str = r#"the body must be {"role": "shop"|"analyst"|"admin", "shop": "…", "name": "…"}"#;
    if let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&body)
        && let Some((key, _)) = fields.iter().find(|(_, v)| v.is_null())
    {
        return Err(ApiError::bad_request("invalid_json", format!("{SHAPE}: {key:?} is null; leave it out instead")));
    }
    let asked: NewToken =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("invalid_json", format!("{SHAPE}: {e}")))?;
    let role: Role = asked.role.parse().map_err(|e: String| ApiError::bad_request("invalid_role", e))?;
    let (id, secret) = generate(16);
    let entry = TokenEntry {
        id: id.clone(),
        role,
        shop: asked.shop,
        digest: secret_digest(&secret),
        created_ms: state.clock.wall_ms() as i64,
        name: asked.name,
    };
    entry.validate().map_err(|e| ApiError::bad_request("invalid_token", e.to_string()))?;
    let mut shown = describe(&entry);
    propose(&state, MapCommand::CreateToken(entry)).await?;
    shown["token"] = Value::from(token_string(&id, &secret));
    Ok((StatusCode::CREATED, Json(shown)))
}

/// `GET /v1/tokens`: every token in the map, without secrets.
pub async fn list(state: State) -> Result<Json<Value>, ApiError> {
    let map = state.view.map().ok_or_else(ApiError::no_map)?;
    let tokens: Vec<Value> = map.tokens.values().map(describe).collect();
    Ok(Json(json!({ "tokens": tokens })))
}

/// `DELETE /v1/tokens/{id}`: `204`; `404` for a token the map lacks.
pub async fn revoke(state: State, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if id == ROOT_ID {
        return Err(ApiError::conflict(
            "root_token",
            "the root token is set in the routers' configuration (--admin-token-file); replace that file and restart them",
        ));
    }
    let map = state.view.map().ok_or_else(ApiError::no_map)?;
    if !map.tokens.contains_key(&id) {
        return Err(ApiError::not_found(format!("no token {id:?}")));
    }
    propose(&state, MapCommand::RevokeToken { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A token as listed: everything but its secret and digest.
fn describe(t: &TokenEntry) -> Value {
    json!({
        "id": t.id,
        "role": t.role.as_str(),
        "shop": t.shop,
        "name": t.name,
        "created": chrono::DateTime::from_timestamp_millis(t.created_ms).map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    })
}
