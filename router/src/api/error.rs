//! The API's error answer: `{"error": {"code", "message", ...details}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::coordinator::CoordError;

/// How long a client should wait before retrying a 503, in seconds.
const RETRY_AFTER_SECS: u32 = 1;

/// The code of an error answer, left on the response for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Map<String, Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: Map::new() }
    }

    /// 400: the client sent something invalid.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no token, or one that is not valid. Carries `WWW-Authenticate`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: a valid token outside its role or shop.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the request clashes with the cluster's state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 405.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message)
    }

    /// 413 for a whole body.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body exceeds the limit of {limit} bytes"),
        )
    }

    /// 413 for one record of a body.
    pub fn record_too_large(message: String, index: Option<usize>) -> Self {
        let e = Self::new(StatusCode::PAYLOAD_TOO_LARGE, "record_too_large", message);
        match index {
            Some(i) => e.at_index(i),
            None => e,
        }
    }

    /// 415.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
    }

    /// 422: the request is valid but asks for more than the router allows.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 500: the router failed; the message says how.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 503, with `Retry-After`.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// 503: the router has learned no cluster map yet.
    pub fn no_map() -> Self {
        Self::unavailable("no_cluster_map", "the router has no cluster map yet")
    }

    /// Adds a detail field.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.details.insert(key.to_string(), value);
        self
    }

    /// Names the batch record the error is about.
    pub fn at_index(self, index: usize) -> Self {
        let message = format!("record {index}: {}", self.message);
        Self { message, ..self }.with("index", Value::from(index))
    }

    /// The error's code.
    pub fn code(&self) -> &str {
        self.code
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// A detail field, if set.
    pub fn detail(&self, key: &str) -> Option<&Value> {
        self.details.get(key)
    }
}

impl From<CoordError> for ApiError {
    fn from(e: CoordError) -> Self {
        match e {
            CoordError::NoMap => ApiError::no_map(),
            CoordError::Unavailable { level, needed, acked, .. } => {
                ApiError::unavailable("not_enough_replicas", e.to_string())
                    .with("consistency", Value::from(level.as_str()))
                    .with("required", Value::from(needed))
                    .with("acknowledged", Value::from(acked))
            }
            CoordError::Corrupt(_) => ApiError::new(StatusCode::BAD_GATEWAY, "corrupt_replica_value", e.to_string()),
            CoordError::Encode(_) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.details;
        body.insert("code".into(), Value::from(self.code));
        body.insert("message".into(), Value::from(self.message));
        let mut response = (self.status, axum::Json(json!({ "error": body }))).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"ringup\""));
        }
        response
    }
}
