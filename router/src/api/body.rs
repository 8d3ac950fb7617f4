//! Request bodies: read whole within the limit, or read and dropped.
//!
//! A body the router refuses (over the limit, or not admitted) is still
//! read, and thrown away as it arrives, before the answer goes out: a
//! client that is still sending when the connection closes would get a
//! reset instead of the answer. Dropping costs no memory, but it is bounded
//! in bytes and in time, so that a client cannot hold a connection open by
//! sending forever.

use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::error::ApiError;
use crate::records::MAX_BODY;

/// The most bytes of a refused body read and dropped before answering.
const DRAIN_BYTES: usize = 4 * MAX_BODY;
/// The longest a refused body is read for before answering.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// The whole body, or `413 body_too_large` (after draining the rest) when
/// it exceeds [`MAX_BODY`].
pub async fn read(body: Body) -> Result<Bytes, ApiError> {
    let mut chunks = body.into_data_stream();
    let mut whole = BytesMut::new();
    while let Some(chunk) = chunks.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request("invalid_body", format!("the body could not be read: {e}")))?;
        if whole.len() + chunk.len() > MAX_BODY {
            drop(whole);
            drain(chunks).await;
            return Err(ApiError::body_too_large(MAX_BODY));
        }
        whole.extend_from_slice(&chunk);
    }
    Ok(whole.freeze())
}

/// Reads a refused body and drops it as it arrives, within
/// [`DRAIN_BYTES`] and [`DRAIN_TIME`]. Nothing is kept.
pub async fn discard(body: Body) {
    drain(body.into_data_stream()).await;
}

async fn drain(mut chunks: BodyDataStream) {
    let drained = async {
        let mut seen = 0;
        while seen <= DRAIN_BYTES {
            match chunks.next().await {
                Some(Ok(chunk)) => seen += chunk.len(),
                Some(Err(_)) | None => return,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drained).await;
}
