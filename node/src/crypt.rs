//! Encryption at rest: the node's data keys and the AEAD (AES-256-GCM,
//! ring's) that seals record values and hints before they reach RocksDB.
//!
//! A key file lists numbered 256-bit keys, one per line (`ID HEX`). The
//! highest id seals every new value; the others still open the values
//! sealed under them, so a key is rotated by adding a line with a higher id
//! (`ringup key add`) and restarting the nodes. Every node of a cluster has
//! the same file: streamed partitions and anti-entropy carry sealed values
//! from node to node as they are.
//!
//! What stays in clear: record keys (partition, shop, collection, id) and
//! each value's head (version, event time, deleted flag), which merges,
//! digests and tombstone collection read without a key. Field names and
//! values, and whole hints, are sealed. See [`ringup_proto::value`] for
//! the layout.
//!
//! Nonces are 96 bits: a random start drawn when the process starts,
//! counted up by one for every seal, so no nonce repeats within a process,
//! and two processes collide only if their random starts fall within the
//! count of seals of each other (about 2^-32 after 2^32 seals each).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ringup_proto::value::{self, Layout, NONCE_LEN, TAG_LEN, ValueError};
use thiserror::Error;

/// The first byte of a sealed hint (or other opaque blob).
const BLOB: u8 = 0xB1;
/// What the key checks seal: opened on every start to prove the key file
/// holds the keys the data was sealed with.
const CHECK: &[u8] = b"ringup data key check";

/// Why a key file cannot be used, or a value cannot be opened.
#[derive(Debug, Error)]
pub enum CryptError {
    /// The key file cannot be read or parsed.
    #[error("data key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A value sealed under a key the file does not hold.
    #[error("a value is sealed under data key {0}, which the key file does not hold")]
    UnknownKey(u32),
    /// A value that fails authentication: corrupt, or another key with the
    /// same id.
    #[error(
        "a value sealed under data key {0} does not open: the key is not the one it was sealed with, or the value is corrupt"
    )]
    Unopened(u32),
    /// The bytes are not a value.
    #[error("{0}")]
    Value(#[from] ValueError),
}

/// The data keys of a node.
pub struct DataKeys {
    keys: BTreeMap<u32, LessSafeKey>,
    current: u32,
    /// The nonces' fixed first 4 bytes, random per process.
    prefix: [u8; 4],
    /// The nonces' last 8 bytes, counted up from a random start.
    counter: AtomicU64,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeys")
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .field("current", &self.current)
            .finish()
    }
}

impl DataKeys {
    /// Reads a key file: lines `ID HEX`, `#` comments and blank lines
    /// ignored; at least one key.
    pub fn load(path: &Path) -> Result<Self, CryptError> {
        let error = |reason: String| CryptError::KeyFile { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        Self::parse(&text).map_err(error)
    }

    /// Parses the text of a key file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = BTreeMap::new();
        for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, hex) = line.split_once(char::is_whitespace).ok_or(format!("line {n}: not `ID HEX`"))?;
            let id: u32 = id.parse().map_err(|_| format!("line {n}: {id:?} is not a key id"))?;
            let bytes = decode_hex(hex.trim()).ok_or(format!("line {n}: the key is not 64 hex digits (256 bits)"))?;
            let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| format!("line {n}: not an AES-256 key"))?;
            if keys.insert(id, LessSafeKey::new(key)).is_some() {
                return Err(format!("line {n}: key {id} is listed twice"));
            }
        }
        let current = *keys.keys().next_back().ok_or("it holds no key")?;
        let mut start = [0u8; 12];
        SystemRandom::new().fill(&mut start).map_err(|_| "the system's random source failed".to_string())?;
        Ok(Self {
            keys,
            current,
            prefix: start[..4].try_into().expect("4 bytes"),
            counter: AtomicU64::new(u64::from_be_bytes(start[4..].try_into().expect("8 bytes"))),
        })
    }

    /// The id of the key that seals new values.
    pub fn current(&self) -> u32 {
        self.current
    }

    /// The ids of every key held.
    pub fn ids(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    fn nonce(&self) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.prefix);
        nonce[4..].copy_from_slice(&self.counter.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        nonce
    }

    fn key(&self, id: u32) -> Result<&LessSafeKey, CryptError> {
        self.keys.get(&id).ok_or(CryptError::UnknownKey(id))
    }

    /// A record value sealed under the current key; one sealed already is
    /// returned as it is.
    pub fn seal(&self, stored: Vec<u8>) -> Result<Vec<u8>, CryptError> {
        let Some((clear, body)) = value::plain_parts(&stored)? else { return Ok(stored) };
        let nonce = self.nonce();
        let key = self.key(self.current)?;
        let layout = Layout::Sealed { key_id: self.current, nonce };
        value::assemble(clear, layout, |aad, out| {
            let start = out.len();
            out.extend_from_slice(body);
            let tag = key
                .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut out[start..])
                .map_err(|_| CryptError::Unopened(self.current))?;
            out.extend_from_slice(tag.as_ref());
            Ok::<_, CryptError>(())
        })
    }

    /// A record value in clear: opened if sealed, borrowed as it is if not.
    pub fn open<'a>(&self, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, CryptError> {
        let Some(parts) = value::sealed_parts(stored)? else { return Ok(Cow::Borrowed(stored)) };
        let key = self.key(parts.key_id)?;
        let mut text = parts.ciphertext.to_vec();
        let plain = key
            .open_in_place(Nonce::assume_unique_for_key(parts.nonce), Aad::from(parts.aad), &mut text)
            .map_err(|_| CryptError::Unopened(parts.key_id))?;
        let plain: &[u8] = plain;
        Ok(Cow::Owned(value::assemble(parts.aad, Layout::Plain, |_, out| {
            out.extend_from_slice(plain);
            Ok::<_, CryptError>(())
        })?))
    }

    /// An opaque blob (a hint) sealed under the current key:
    /// `0xB1 | key id u32 BE | nonce | ciphertext | tag`.
    pub fn seal_blob(&self, plain: &[u8]) -> Vec<u8> {
        self.seal_blob_under(self.current, plain)
    }

    fn seal_blob_under(&self, id: u32, plain: &[u8]) -> Vec<u8> {
        let nonce = self.nonce();
        let mut out = Vec::with_capacity(1 + 4 + NONCE_LEN + plain.len() + TAG_LEN);
        out.push(BLOB);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&nonce);
        let head = out.len();
        out.extend_from_slice(plain);
        let key = self.keys.get(&id).expect("sealed only under held keys");
        let (aad, body) = out.split_at_mut(head);
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad[..5]), body)
            .expect("AES-GCM seals any length a hint has");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// The key a blob is sealed under; `None` for one in clear.
    pub fn blob_key(blob: &[u8]) -> Option<u32> {
        (blob.first() == Some(&BLOB) && blob.len() >= 1 + 4 + NONCE_LEN + TAG_LEN)
            .then(|| u32::from_be_bytes(blob[1..5].try_into().expect("4 bytes")))
    }

    /// A blob opened; `None` if it is not a sealed blob (kept in clear
    /// before encryption was turned on).
    pub fn open_blob(&self, blob: &[u8]) -> Result<Option<Vec<u8>>, CryptError> {
        if blob.first() != Some(&BLOB) || blob.len() < 1 + 4 + NONCE_LEN + TAG_LEN {
            return Ok(None);
        }
        let id = u32::from_be_bytes(blob[1..5].try_into().expect("4 bytes"));
        let nonce: [u8; NONCE_LEN] = blob[5..5 + NONCE_LEN].try_into().expect("12 bytes");
        let mut text = blob[5 + NONCE_LEN..].to_vec();
        let len = self
            .key(id)?
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&blob[..5]), &mut text)
            .map_err(|_| CryptError::Unopened(id))?
            .len();
        text.truncate(len);
        Ok(Some(text))
    }

    /// Checks a data directory's key checks (key id → sealed check) against
    /// this file, and returns them with a check for every key that has none.
    pub fn verify_checks(&self, mut checks: BTreeMap<u32, Vec<u8>>) -> Result<BTreeMap<u32, Vec<u8>>, CryptError> {
        for (id, check) in &checks {
            match self.open_blob(check)? {
                Some(text) if text == CHECK => {}
                _ => return Err(CryptError::Unopened(*id)),
            }
        }
        for id in self.keys.keys() {
            if !checks.contains_key(id) {
                checks.insert(*id, self.seal_blob_under(*id, CHECK));
            }
        }
        Ok(checks)
    }
}

/// A new random key as a key file line for `id`.
pub fn new_key_line(id: u32) -> Result<String, String> {
    let mut key = [0u8; 32];
    SystemRandom::new().fill(&mut key).map_err(|_| "the system's random source failed".to_string())?;
    Ok(format!("{id} {}", key.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use ringup_proto::value::{Header, StoredRecord, Version};
    use serde_json::json;

    use super::*;

    fn keys(ids: &[u32]) -> DataKeys {
        let text: String = ids.iter().map(|id| new_key_line(*id).unwrap() + "\n").collect();
        DataKeys::parse(&text).unwrap()
    }

    fn plain() -> Vec<u8> {
        let fields = json!({"note": "MARKER-7f3a", "n": 3});
        StoredRecord::from_json(Version { hlc: 5, origin: 1 }, 1_700_000_000_000, fields.as_object().unwrap()).encode()
    }

    #[test]
    fn a_sealed_value_hides_its_fields_and_opens_to_the_same_bytes() {
        let k = keys(&[1, 2]);
        let sealed = k.seal(plain()).unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"MARKER"), "the marker is not in the sealed bytes");
        assert!(!sealed.windows(4).any(|w| w == b"note"), "nor the field name");
        assert_eq!(Header::read(&sealed).unwrap().key_id, Some(2), "sealed under the highest id");
        assert_eq!(k.open(&sealed).unwrap().as_ref(), plain().as_slice());
        assert_eq!(k.seal(sealed.clone()).unwrap(), sealed, "sealing twice changes nothing");
        assert!(matches!(k.open(&plain()).unwrap(), Cow::Borrowed(_)), "a value in clear opens as it is");
        assert_ne!(k.seal(plain()).unwrap(), sealed, "a fresh nonce every time");
    }

    #[test]
    fn a_missing_or_wrong_key_and_a_tampered_head_are_errors() {
        let old = keys(&[1]);
        let sealed = old.seal(plain()).unwrap();
        assert!(matches!(keys(&[1]).open(&sealed), Err(CryptError::Unopened(1))), "another key with id 1");
        assert!(matches!(keys(&[2]).open(&sealed), Err(CryptError::UnknownKey(1))));
        // The head is authenticated: a changed version does not open, even
        // with a correct crc32.
        let mut tampered = sealed.clone();
        tampered[8] ^= 1;
        let n = tampered.len();
        let crc = crc32fast::hash(&tampered[..n - 4]);
        tampered[n - 4..].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(old.open(&tampered), Err(CryptError::Unopened(1))));
    }

    #[test]
    fn rotation_seals_new_values_under_the_new_key_and_opens_old_ones() {
        let one = format!("1 {}\n", "ab".repeat(32));
        let before = DataKeys::parse(&one).unwrap();
        let sealed_old = before.seal(plain()).unwrap();
        let after = DataKeys::parse(&format!("{one}{}\n", new_key_line(2).unwrap())).unwrap();
        assert_eq!(after.current(), 2);
        let sealed_new = after.seal(plain()).unwrap();
        assert_eq!(Header::read(&sealed_new).unwrap().key_id, Some(2));
        assert_eq!(after.open(&sealed_old).unwrap().as_ref(), plain().as_slice());
        assert_eq!(after.open(&sealed_new).unwrap().as_ref(), plain().as_slice());
    }

    #[test]
    fn blobs_and_key_checks() {
        let k = keys(&[3]);
        let blob = k.seal_blob(b"a hint");
        assert_eq!(k.open_blob(&blob).unwrap().as_deref(), Some(&b"a hint"[..]));
        assert_eq!(k.open_blob(b"plain bincode").unwrap(), None);
        let checks = k.verify_checks(BTreeMap::new()).unwrap();
        assert_eq!(checks.keys().copied().collect::<Vec<_>>(), vec![3]);
        assert_eq!(k.verify_checks(checks.clone()).unwrap(), checks, "a verified set is kept");
        assert!(matches!(keys(&[3]).verify_checks(checks.clone()), Err(CryptError::Unopened(3))), "another key 3");
        assert!(matches!(keys(&[4]).verify_checks(checks), Err(CryptError::UnknownKey(3))), "key 3 missing");
    }

    #[test]
    fn key_files_are_checked() {
        for bad in
            ["", "# only a comment\n", "1 abcd\n", "x 00\n", &format!("1 {}\n1 {}\n", "00".repeat(32), "11".repeat(32))]
        {
            assert!(DataKeys::parse(bad).is_err(), "{bad:?}");
        }
        let k = DataKeys::parse(&format!("# keys\n\n7 {}\n2 {}\n", "00".repeat(32), "11".repeat(32))).unwrap();
        assert_eq!((k.ids(), k.current()), (vec![2, 7], 7));
    }
}
