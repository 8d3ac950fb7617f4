//! The frame codec of the internal RPC.
//!
//! ```text
//! [len u32 BE][crc32 u32 BE][payload: bincode, len bytes]
//! ```
//!
//! The crc32 covers the payload. [`decode`] takes whatever bytes have
//! arrived and returns a message once a whole frame is there. A frame that
//! is too large, fails its checksum or does not deserialize is an error,
//! after which the connection is closed; nothing here panics on bad bytes.

use bincode::Options;
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

/// Encodes one frame.
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

/// How many bytes the frame starting at `buf` needs in all, once its header
/// is in; an error if it declares too large a payload.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(len) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(Some(HEADER_LEN + len))
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
    let crc = u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes"));
    let payload = &buf[HEADER_LEN..total];
    if crc32fast::hash(payload) != crc {
        return Err(FrameError::Checksum);
    }
    Ok(Some((from_bytes(payload)?, total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{CollectionRef, Envelope, Request, Response, RpcError};
    use proptest::prelude::*;

    fn write_request() -> Envelope<Request> {
        let target = CollectionRef { epoch: 3, partition: 7, shop: "s".into(), collection: "sales".into() };
        Envelope { id: 42, body: Request::Write { target, records: vec![("a".into(), vec![1, 2, 3])] } }
    }

    #[test]
    fn round_trips_and_reports_its_length() {
        let frame = encode(&write_request()).unwrap();
        let (back, used) = decode::<Envelope<Request>>(&frame).unwrap().unwrap();
        assert_eq!(back, write_request());
        assert_eq!(used, frame.len());
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
