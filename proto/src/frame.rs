//! The frame codec of the internal RPC.
//!
//! ```text
//! [len u32 BE][crc32 u32 BE][payload: bincode, len bytes]
//! ```
//!
//! The payload is an [`crate::rpc::Envelope`]: the request id, then the
//! request or response. The crc32 covers the payload.
//!
//! A message sent to several peers (a write batch to every replica) is
//! serialized once into a [`Body`]; each frame then only puts its own
//! header and request id in front of the shared bytes, and the crc32 of the
//! whole payload is combined from the id's and the body's without reading
//! the body again.
//!
//! [`decode`] takes whatever bytes have arrived and returns a message once
//! a whole frame is there; [`payload_len`] checks a header's declared length
//! before anything is allocated for it. A frame that is too large, fails
//! its checksum or does not deserialize is an error, after which the
//! connection is closed; nothing here panics on bad bytes.

use bincode::Options;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// The largest payload a frame may carry: a 16 MiB HTTP batch with room for
/// its encoding.
pub const MAX_FRAME: usize = 64 << 20;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 8;

/// A frame or payload that cannot be read or written.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The declared payload is larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// The payload does not match its crc32.
    #[error("frame checksum mismatch")]
    Checksum,
    /// The payload does not deserialize (or serialize) as the expected type.
    #[error("frame payload is malformed: {0}")]
    Malformed(#[from] bincode::Error),
}

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_limit(MAX_FRAME as u64)
}

/// Serializes a value the way frames carry it.
pub fn to_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    Ok(options().serialize(value)?)
}

/// Deserializes a value made by [`to_bytes`].
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    Ok(options().deserialize(bytes)?)
}

/// A request or response serialized once, to be framed under any request
/// id. Cheap to clone: the bytes are shared.
#[derive(Debug, Clone)]
pub struct Body {
    bytes: Bytes,
    crc: u32,
}

impl Body {
    /// Serializes `message` once.
    pub fn encode<T: Serialize>(message: &T) -> Result<Self, FrameError> {
        let bytes = to_bytes(message)?;
        // Leaves room for the largest request id in front.
        if bytes.len() > MAX_FRAME - MAX_ID_LEN {
            return Err(FrameError::TooLarge(bytes.len()));
        }
        Ok(Self { crc: crc32fast::hash(&bytes), bytes: Bytes::from(bytes) })
    }

    /// The serialized message, shared.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The frame header and request id that go in front of these bytes
    /// under request `id`: `[len][crc32][id]`, the crc32 covering the id
    /// and the body.
    pub fn head(&self, id: u64) -> Vec<u8> {
        let id_bytes = to_bytes(&id).expect("a u64 always serializes");
        let mut crc = crc32fast::Hasher::new();
        crc.update(&id_bytes);
        crc.combine(&crc32fast::Hasher::new_with_initial_len(self.crc, self.bytes.len() as u64));
        let len = id_bytes.len() + self.bytes.len();
        let mut head = Vec::with_capacity(HEADER_LEN + id_bytes.len());
        head.extend_from_slice(&(len as u32).to_be_bytes());
        head.extend_from_slice(&crc.finalize().to_be_bytes());
        head.extend_from_slice(&id_bytes);
        head
    }
}

/// The most bytes a request id takes in bincode's variable-length encoding.
const MAX_ID_LEN: usize = 9;

/// Encodes one frame of a whole message in one buffer.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let payload = to_bytes(message)?;
    if payload.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(payload.len()));
    }
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// The payload length a frame header declares; an error, before anything
/// is read or allocated for the payload, if it is over [`MAX_FRAME`].
pub fn payload_len(header: &[u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Checks a payload against the crc32 in its frame header.
pub fn check(header: &[u8; HEADER_LEN], payload: &[u8]) -> Result<(), FrameError> {
    let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
    if crc32fast::hash(payload) != crc {
        return Err(FrameError::Checksum);
    }
    Ok(())
}

/// How many bytes the frame starting at `buf` needs in all, once its header
/// is in; an error if it declares too large a payload.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    Ok(Some(HEADER_LEN + payload_len(header)?))
}

/// Decodes the frame at the start of `buf`: the message and how many bytes
/// it used, or `None` if more bytes are needed.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, FrameError> {
    let Some(total) = frame_len(buf)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    let header = buf.first_chunk::<HEADER_LEN>().expect("a whole frame is there");
    let payload = &buf[HEADER_LEN..total];
    check(header, payload)?;
    Ok(Some((from_bytes(payload)?, total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{CollectionRef, Envelope, Request, Response, RpcError};
    use proptest::prelude::*;

    fn write_request() -> Envelope<Request> {
        let target = CollectionRef { epoch: 3, partition: 7, shop: "s".into(), collection: "sales".into() };
        Envelope { id: 42, body: Request::Write { target, records: vec![("a".into(), vec![1, 2, 3].into())] } }
    }

    #[test]
    fn round_trips_and_reports_its_length() {
        let frame = encode(&write_request()).unwrap();
        let (back, used) = decode::<Envelope<Request>>(&frame).unwrap().unwrap();
        assert_eq!(back, write_request());
        assert_eq!(used, frame.len());
    }

    #[test]
    fn a_shared_body_framed_under_an_id_is_the_frame_of_the_whole_envelope() {
        let request = write_request();
        let body = Body::encode(&request.body).unwrap();
        for id in [0, 42, 250, 251, 70_000, u64::MAX] {
            let mut framed = body.head(id);
            framed.extend_from_slice(body.bytes());
            let whole = encode(&Envelope { id, body: request.body.clone() }).unwrap();
            assert_eq!(framed, whole, "id {id}");
        }
    }

    #[test]
    fn waits_for_the_whole_frame() {
        let frame = encode(&write_request()).unwrap();
        for cut in [0, 3, HEADER_LEN, frame.len() - 1] {
            assert!(decode::<Envelope<Request>>(&frame[..cut]).unwrap().is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn refuses_a_corrupt_frame() {
        let mut frame = encode(&write_request()).unwrap();
        let last = frame.len() - 1;
        frame[last] ^= 0xFF;
        assert!(matches!(decode::<Envelope<Request>>(&frame), Err(FrameError::Checksum)));
    }

    #[test]
    fn refuses_an_oversized_frame_before_reading_it() {
        let mut header = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        header.extend_from_slice(&[0; 4]);
        assert!(matches!(decode::<Envelope<Request>>(&header), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn refuses_a_payload_of_the_wrong_type() {
        let frame = encode(&Envelope { id: 1, body: Response::Error(RpcError::NoMap) }).unwrap();
        assert!(decode::<Envelope<Request>>(&frame).is_err());
    }

    proptest! {
        #[test]
        fn garbage_is_an_error_or_a_wait_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<Envelope<Request>>(&bytes);
        }

        #[test]
        fn a_valid_header_over_garbage_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
            frame.extend_from_slice(&payload);
            let _ = decode::<Envelope<Request>>(&frame);
            let _ = decode::<Envelope<Response>>(&frame);
        }
    }
}
