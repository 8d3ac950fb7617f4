//! The stored value of a record, its binary encoding and the
//! last-writer-wins merge.
//!
//! ```text
//! format u8 (=1) | version.hlc u64 BE | version.origin u64 BE | ts i64 BE
//! | flags u8 (bit 0: tombstone) | field count u32 BE | fields… | crc32 u32 BE
//! a field: name length u16 BE | name | tag u8 | payload
//!   tag 0 null, 1 false, 2 true, 3 int (i64 BE), 4 float (f64 BE),
//!   5 string (u32 BE length, UTF-8), 6 other JSON (u32 BE length, JSON text)
//! ```
//!
//! The crc32 covers every byte before it. Report scans read numbers and
//! strings straight from the fields, without parsing JSON.
//!
//! A node with encryption at rest stores values *sealed*: the head that
//! merges and digests read stays in clear, the rest is encrypted with an
//! authenticated cipher under a numbered data key.
//!
//! ```text
//! format u8 (=2) | version.hlc u64 BE | version.origin u64 BE | ts i64 BE
//! | flags u8 | key id u32 BE | nonce [12] | ciphertext of (field count
//! | fields…) with its 16-byte tag | crc32 u32 BE
//! ```
//!
//! The first 30 bytes are the cipher's associated data, so a head moved
//! onto another value's ciphertext fails to open. This module only lays the
//! bytes out ([`plain_parts`], [`sealed_parts`], [`assemble`]); the node
//! holds the keys and the cipher.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value as Json};
use thiserror::Error;

/// The encoding's format byte.
const FORMAT: u8 = 1;
/// The format byte of a sealed value.
const SEALED: u8 = 2;
/// Bytes of a head that stay in clear in a sealed value.
const CLEAR_LEN: usize = 1 + 8 + 8 + 8 + 1;
/// Bytes of a sealed value's nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of a sealed value's authentication tag.
pub const TAG_LEN: usize = 16;
/// Bytes before the first field.
const HEADER_LEN: usize = 1 + 8 + 8 + 8 + 1 + 4;
/// Flag bit of a tombstone.
const TOMBSTONE: u8 = 1;

/// A write's version: stamped once by the coordinating router, so a retried
/// write carries the same one. Ordered by clock, then by origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Version {
    /// The hybrid logical clock timestamp.
    pub hlc: u64,
    /// The id of the process that stamped it; breaks ties.
    pub origin: u64,
}

impl Version {
    /// The wall-clock milliseconds its clock read when it was stamped.
    pub fn millis(self) -> u64 {
        crate::hlc::Hlc::millis(self.hlc)
    }
}

/// A field's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Field {
    /// JSON null.
    Null,
    /// true or false.
    Bool(bool),
    /// A whole number that fits in an i64.
    Int(i64),
    /// Any other number that fits in an f64.
    Float(f64),
    /// A string.
    Str(String),
    /// An array, an object or a number that fits nothing above, as JSON text.
    Json(String),
}

/// A record as stored: version, event time, tombstone and fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// The write's version.
    pub version: Version,
    /// Event time, in epoch milliseconds.
    pub ts: i64,
    /// Whether this is a deletion.
    pub tombstone: bool,
    /// The fields, by name, in name order.
    pub fields: Vec<(String, Field)>,
}

/// A value that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValueError {
    /// The bytes end too soon.
    #[error("value is truncated")]
    Truncated,
    /// The crc32 does not match.
    #[error("value checksum mismatch")]
    Checksum,
    /// An unknown format byte or field tag.
    #[error("value has unknown format or tag {0}")]
    Unknown(u8),
    /// A string is not UTF-8.
    #[error("value holds a string that is not UTF-8")]
    NotUtf8,
    /// Bytes are left after the last field.
    #[error("value has trailing bytes")]
    Trailing,
    /// The value is sealed; its fields can be read only once opened.
    #[error("value is sealed under data key {0}")]
    Sealed(u32),
}

impl StoredRecord {
    /// A deletion marker.
    pub fn tombstone(version: Version, ts: i64) -> Self {
        Self { version, ts, tombstone: true, fields: Vec::new() }
    }

    /// Encodes the record, checksum included.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 16 * self.fields.len() + 4);
        out.push(FORMAT);
        out.extend_from_slice(&self.version.hlc.to_be_bytes());
        out.extend_from_slice(&self.version.origin.to_be_bytes());
        out.extend_from_slice(&self.ts.to_be_bytes());
        out.push(if self.tombstone { TOMBSTONE } else { 0 });
        out.extend_from_slice(&(self.fields.len() as u32).to_be_bytes());
        for (name, field) in &self.fields {
            put_field(&mut out, name, field);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes and checks a value made by [`StoredRecord::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, ValueError> {
        Self::decode_with(Header::read(bytes)?, bytes)
    }

    /// Decodes a value whose checksum was verified where it entered
    /// ([`Header::read`]), without hashing it again.
    pub fn decode_verified(bytes: &[u8]) -> Result<Self, ValueError> {
        Self::decode_with(Header::parse(bytes)?, bytes)
    }

    fn decode_with(header: Header, bytes: &[u8]) -> Result<Self, ValueError> {
        if let Some(key) = header.key_id {
            return Err(ValueError::Sealed(key));
        }
        let mut borrowed = FieldsRef { rest: &bytes[HEADER_LEN..bytes.len() - 4], left: header.field_count };
        let mut fields = Vec::with_capacity(header.field_count.min(1024) as usize);
        for field in &mut borrowed {
            let (name, value) = field?;
            fields.push((name.to_string(), value.to_owned()));
        }
        if !borrowed.rest.is_empty() {
            return Err(ValueError::Trailing);
        }
        Ok(Self { version: header.version, ts: header.ts, tombstone: header.tombstone, fields })
    }

    /// Builds a live record from a JSON object's fields (without `id` and `ts`).
    pub fn from_json(version: Version, ts: i64, object: &Map<String, Json>) -> Self {
        let mut fields: Vec<(String, Field)> = object.iter().map(|(k, v)| (k.clone(), Field::from_json(v))).collect();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        Self { version, ts, tombstone: false, fields }
    }

    /// The fields as a JSON object.
    pub fn fields_json(&self) -> Map<String, Json> {
        self.fields.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()
    }
}

/// The fixed-size head of an encoded value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The write's version.
    pub version: Version,
    /// Event time, in epoch milliseconds.
    pub ts: i64,
    /// Whether this is a deletion.
    pub tombstone: bool,
    /// The data key a sealed value is encrypted under; `None` in clear.
    pub key_id: Option<u32>,
    field_count: u32,
}

impl Header {
    /// Reads the header of an encoded value after checking its checksum:
    /// what a router or node does once, when a value enters it.
    pub fn read(bytes: &[u8]) -> Result<Self, ValueError> {
        if bytes.len() < HEADER_LEN + 4 {
            return Err(ValueError::Truncated);
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body) != u32::from_be_bytes(crc.try_into().expect("4 bytes")) {
            return Err(ValueError::Checksum);
        }
        Self::parse(bytes)
    }

    /// Reads the header of a value whose checksum was already verified.
    pub fn parse(bytes: &[u8]) -> Result<Self, ValueError> {
        if bytes.len() < HEADER_LEN + 4 {
            return Err(ValueError::Truncated);
        }
        let mut r = Reader(&bytes[..HEADER_LEN]);
        let format = u8::from_be_bytes(r.array()?);
        if format != FORMAT && format != SEALED {
            return Err(ValueError::Unknown(format));
        }
        if format == SEALED && bytes.len() < HEADER_LEN + NONCE_LEN + TAG_LEN + 4 {
            return Err(ValueError::Truncated);
        }
        let version = Version { hlc: u64::from_be_bytes(r.array()?), origin: u64::from_be_bytes(r.array()?) };
        let ts = i64::from_be_bytes(r.array()?);
        let tombstone = u8::from_be_bytes(r.array()?) & TOMBSTONE != 0;
        let count_or_key = u32::from_be_bytes(r.array()?);
        let (key_id, field_count) = if format == SEALED { (Some(count_or_key), 0) } else { (None, count_or_key) };
        Ok(Self { version, ts, tombstone, key_id, field_count })
    }
}

/// A field's value borrowed from an encoded record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldRef<'a> {
    /// JSON null.
    Null,
    /// true or false.
    Bool(bool),
    /// A whole number that fits in an i64.
    Int(i64),
    /// Any other number that fits in an f64.
    Float(f64),
    /// A string.
    Str(&'a str),
    /// An array, an object or a number that fits nothing above, as JSON text.
    Json(&'a str),
}

/// The fields of an encoded value whose checksum was verified, borrowed
/// from its bytes, in name order: what a report scan reads instead of
/// decoding whole records.
pub fn fields_ref(bytes: &[u8]) -> Result<FieldsRef<'_>, ValueError> {
    let header = Header::parse(bytes)?;
    if let Some(key) = header.key_id {
        return Err(ValueError::Sealed(key));
    }
    Ok(FieldsRef { rest: &bytes[HEADER_LEN..bytes.len() - 4], left: header.field_count })
}

/// An iterator over the fields of an encoded value; see [`fields_ref`].
pub struct FieldsRef<'a> {
    rest: &'a [u8],
    left: u32,
}

impl FieldRef<'_> {
    /// The field, owned.
    pub fn to_owned(self) -> Field {
        match self {
            FieldRef::Null => Field::Null,
            FieldRef::Bool(b) => Field::Bool(b),
            FieldRef::Int(i) => Field::Int(i),
            FieldRef::Float(x) => Field::Float(x),
            FieldRef::Str(s) => Field::Str(s.to_string()),
            FieldRef::Json(s) => Field::Json(s.to_string()),
        }
    }
}

impl<'a> FieldsRef<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ValueError> {
        if self.rest.len() < n {
            return Err(ValueError::Truncated);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ValueError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    /// The next field's name and undecoded value: a scan compares names
    /// as bytes and decodes (and checks) only the values it wants.
    pub fn next_raw(&mut self) -> Result<(&'a [u8], RawField<'a>), ValueError> {
        let name_len = u16::from_be_bytes(self.array()?) as usize;
        let name = self.take(name_len)?;
        let tag = u8::from_be_bytes(self.array()?);
        let payload = match tag {
            0..=2 => &[][..],
            3 | 4 => self.take(8)?,
            5 | 6 => {
                let len = u32::from_be_bytes(self.array()?) as usize;
                self.take(len)?
            }
            other => return Err(ValueError::Unknown(other)),
        };
        Ok((name, RawField { tag, payload }))
    }

    /// Takes the next field off the count; see [`FieldsRef::next_raw`].
    pub fn step(&mut self) -> Option<Result<(&'a [u8], RawField<'a>), ValueError>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let field = self.next_raw();
        if field.is_err() {
            self.left = 0;
        }
        Some(field)
    }
}

/// A field's value as stored, not yet decoded.
#[derive(Debug, Clone, Copy)]
pub struct RawField<'a> {
    tag: u8,
    payload: &'a [u8],
}

impl<'a> RawField<'a> {
    /// The value, decoded; a string is checked to be UTF-8.
    pub fn value(self) -> Result<FieldRef<'a>, ValueError> {
        let number = || -> [u8; 8] { self.payload.try_into().expect("8 bytes were taken") };
        Ok(match self.tag {
            0 => FieldRef::Null,
            1 => FieldRef::Bool(false),
            2 => FieldRef::Bool(true),
            3 => FieldRef::Int(i64::from_be_bytes(number())),
            4 => FieldRef::Float(f64::from_be_bytes(number())),
            5 | 6 => {
                let s = std::str::from_utf8(self.payload).map_err(|_| ValueError::NotUtf8)?;
                if self.tag == 5 { FieldRef::Str(s) } else { FieldRef::Json(s) }
            }
            other => return Err(ValueError::Unknown(other)),
        })
    }
}

impl<'a> Iterator for FieldsRef<'a> {
    type Item = Result<(&'a str, FieldRef<'a>), ValueError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (name, raw) = match self.step()? {
            Ok(field) => field,
            Err(e) => return Some(Err(e)),
        };
        let field =
            std::str::from_utf8(name).map_err(|_| ValueError::NotUtf8).and_then(|name| Ok((name, raw.value()?)));
        if field.is_err() {
            self.left = 0;
        }
        Some(field)
    }
}

/// A value in clear split for sealing: its clear head (format byte
/// included) and the bytes to encrypt (field count and fields, without the
/// crc32).
pub type PlainParts<'a> = (&'a [u8], &'a [u8]);

/// A value's [`PlainParts`]; `None` for a value that is sealed already.
pub fn plain_parts(bytes: &[u8]) -> Result<Option<PlainParts<'_>>, ValueError> {
    if Header::parse(bytes)?.key_id.is_some() {
        return Ok(None);
    }
    Ok(Some((&bytes[..CLEAR_LEN], &bytes[CLEAR_LEN..bytes.len() - 4])))
}

/// A sealed value, split for opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedParts<'a> {
    /// The associated data: the clear head and the key id.
    pub aad: &'a [u8],
    /// The data key's id.
    pub key_id: u32,
    /// The nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The ciphertext with its tag.
    pub ciphertext: &'a [u8],
}

/// A sealed value's parts; `None` for a value in clear.
pub fn sealed_parts(bytes: &[u8]) -> Result<Option<SealedParts<'_>>, ValueError> {
    let Some(key_id) = Header::parse(bytes)?.key_id else { return Ok(None) };
    let nonce = bytes[HEADER_LEN..HEADER_LEN + NONCE_LEN].try_into().expect("checked length");
    Ok(Some(SealedParts {
        aad: &bytes[..HEADER_LEN],
        key_id,
        nonce,
        ciphertext: &bytes[HEADER_LEN + NONCE_LEN..bytes.len() - 4],
    }))
}

/// How [`assemble`] lays a value out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// In clear: the body is the field count and the fields.
    Plain,
    /// Sealed under a key with a nonce: the body is the ciphertext and tag.
    Sealed {
        /// The data key's id.
        key_id: u32,
        /// The nonce.
        nonce: [u8; NONCE_LEN],
    },
}

/// A value from a clear head (any format byte; it is set here), a body
/// that `body` appends to the value being built (given the associated
/// data, for sealing), and the crc32.
pub fn assemble<E>(
    clear: &[u8],
    layout: Layout,
    body: impl FnOnce(&[u8], &mut Vec<u8>) -> Result<(), E>,
) -> Result<Vec<u8>, E> {
    let mut out = Vec::with_capacity(clear.len() + 64);
    out.extend_from_slice(&clear[..CLEAR_LEN]);
    let aad_len = match layout {
        Layout::Plain => {
            out[0] = FORMAT;
            0
        }
        Layout::Sealed { key_id, nonce } => {
            out[0] = SEALED;
            out.extend_from_slice(&key_id.to_be_bytes());
            out.extend_from_slice(&nonce);
            HEADER_LEN
        }
    };
    let mut aad = [0u8; HEADER_LEN];
    aad[..aad_len].copy_from_slice(&out[..aad_len]);
    body(&aad[..aad_len], &mut out)?;
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Last writer wins: the newer of two encoded values of one key.
///
/// Both values passed their checksum when they entered the router or the
/// node ([`Header::read`]), so only versions are compared here, without
/// hashing the values again on every comparison. A value too short or of
/// an unknown format to hold a version loses to any that has one. Equal
/// versions (which only a bug could give different bytes) fall back to
/// comparing the bytes, so the merge stays commutative and associative.
pub fn merge<'a>(a: &'a [u8], b: &'a [u8]) -> &'a [u8] {
    let rank = |v: &'a [u8]| (Header::parse(v).ok().map(|h| h.version), v);
    if rank(a) >= rank(b) { a } else { b }
}

impl Field {
    /// The field for a JSON value.
    pub fn from_json(value: &Json) -> Self {
        match value {
            Json::Null => Field::Null,
            Json::Bool(b) => Field::Bool(*b),
            Json::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Field::Int(i),
                (None, Some(f)) if n.is_f64() => Field::Float(f),
                _ => Field::Json(n.to_string()),
            },
            Json::String(s) => Field::Str(s.clone()),
            other => Field::Json(other.to_string()),
        }
    }

    /// The field as a JSON value.
    pub fn to_json(&self) -> Json {
        match self {
            Field::Null => Json::Null,
            Field::Bool(b) => Json::Bool(*b),
            Field::Int(i) => Json::from(*i),
            Field::Float(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
            Field::Str(s) => Json::String(s.clone()),
            Field::Json(text) => serde_json::from_str(text).unwrap_or(Json::Null),
        }
    }
}

fn put_field(out: &mut Vec<u8>, name: &str, field: &Field) {
    let name_len = u16::try_from(name.len()).expect("field names are checked to fit in 16 bits before encoding");
    out.extend_from_slice(&name_len.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    match field {
        Field::Null => out.push(0),
        Field::Bool(b) => out.push(1 + u8::from(*b)),
        Field::Int(i) => {
            out.push(3);
            out.extend_from_slice(&i.to_be_bytes());
        }
        Field::Float(f) => {
            out.push(4);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Field::Str(s) | Field::Json(s) => {
            out.push(if matches!(field, Field::Str(_)) { 5 } else { 6 });
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// Reads fixed-size pieces off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ValueError> {
        if self.0.len() < n {
            return Err(ValueError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ValueError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn record(hlc: u64, origin: u64, fields: Json) -> StoredRecord {
        StoredRecord::from_json(Version { hlc, origin }, 1_700_000_000_000, fields.as_object().unwrap())
    }

    /// The layout round trip, with a stand-in cipher (XOR with the first
    /// aad byte, tag of zeros): sealed values keep their head readable,
    /// refuse field reads, and come back byte for byte.
    #[test]
    fn a_value_splits_into_a_sealed_layout_and_back() {
        let plain = record(9, 2, json!({"secret": "marker", "n": 1})).encode();
        let (clear, body) = plain_parts(&plain).unwrap().unwrap();
        let nonce = [7u8; NONCE_LEN];
        let sealed = assemble(clear, Layout::Sealed { key_id: 5, nonce }, |aad, out| {
            assert_eq!(aad.len(), HEADER_LEN);
            out.extend(body.iter().map(|b| b ^ aad[0]));
            out.extend_from_slice(&[0; TAG_LEN]);
            Ok::<_, ()>(())
        })
        .unwrap();
        let header = Header::read(&sealed).unwrap();
        assert_eq!((header.version, header.key_id, header.tombstone), (Version { hlc: 9, origin: 2 }, Some(5), false));
        assert_eq!(merge(&sealed, &plain), merge(&plain, &sealed), "merge reads sealed heads");
        assert_eq!(fields_ref(&sealed).err(), Some(ValueError::Sealed(5)));
        assert_eq!(StoredRecord::decode(&sealed).err(), Some(ValueError::Sealed(5)));
        assert!(plain_parts(&sealed).unwrap().is_none(), "a sealed value is not sealed twice");
        let parts = sealed_parts(&sealed).unwrap().unwrap();
        assert_eq!((parts.key_id, parts.nonce, parts.aad), (5, nonce, &sealed[..HEADER_LEN]));
        let opened = assemble(parts.aad, Layout::Plain, |_, out| {
            let text = &parts.ciphertext[..parts.ciphertext.len() - TAG_LEN];
            out.extend(text.iter().map(|b| b ^ SEALED));
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(opened, plain);
        assert!(sealed_parts(&plain).unwrap().is_none());
        assert_eq!(Header::parse(&sealed[..HEADER_LEN + 10]).err(), Some(ValueError::Truncated));
    }

    #[test]
    fn json_fields_round_trip() {
        let fields = json!({"amount": 12, "price": 9.5, "sku": "A-1", "paid": true, "note": null,
                            "tags": ["x", 1], "big": 18446744073709551615u64, "neg": -3});
        let r = record(7, 1, fields.clone());
        let back = StoredRecord::decode(&r.encode()).unwrap();
        assert_eq!(back, r);
        assert_eq!(Json::Object(back.fields_json()), fields);
        assert_eq!(back.fields.iter().find(|(k, _)| k == "amount").unwrap().1, Field::Int(12));
    }

    #[test]
    fn borrowed_fields_are_the_decoded_fields() {
        let r = record(1, 1, json!({"a": 1, "b": 2.5, "c": "x\u{0}y", "d": null, "e": true, "f": [1], "g": 1e300}));
        let bytes = r.encode();
        let borrowed: Vec<_> = fields_ref(&bytes).unwrap().map(|f| f.unwrap()).collect();
        let expected: Vec<_> = r
            .fields
            .iter()
            .map(|(name, f)| {
                let f = match f {
                    Field::Null => FieldRef::Null,
                    Field::Bool(b) => FieldRef::Bool(*b),
                    Field::Int(i) => FieldRef::Int(*i),
                    Field::Float(x) => FieldRef::Float(*x),
                    Field::Str(s) => FieldRef::Str(s),
                    Field::Json(s) => FieldRef::Json(s),
                };
                (name.as_str(), f)
            })
            .collect();
        assert_eq!(borrowed, expected);
        assert_eq!(borrowed.len(), 7);
        assert!(fields_ref(&bytes[..bytes.len() - 9]).and_then(|fs| fs.collect::<Result<Vec<_>, _>>()).is_err());
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let mut bytes = record(1, 1, json!({"a": 1})).encode();
        bytes[12] ^= 0x10;
        assert_eq!(StoredRecord::decode(&bytes), Err(ValueError::Checksum));
    }

    #[test]
    fn newer_version_wins_and_origin_breaks_ties() {
        let old = record(5, 9, json!({"v": "old"})).encode();
        let new = record(6, 1, json!({"v": "new"})).encode();
        assert_eq!(merge(&old, &new), &new[..]);
        assert_eq!(merge(&new, &old), &new[..]);
        let tie = record(6, 2, json!({"v": "tie"})).encode();
        assert_eq!(merge(&new, &tie), &tie[..]);
    }

    #[test]
    fn a_value_without_a_readable_version_loses() {
        let good = record(1, 1, json!({})).encode();
        let truncated = &record(9, 1, json!({})).encode()[..HEADER_LEN];
        assert_eq!(merge(truncated, &good), &good[..]);
        let mut unknown = record(9, 1, json!({})).encode();
        unknown[0] = 0xEE;
        assert_eq!(merge(&good, &unknown), &good[..]);
    }

    #[test]
    fn a_flipped_bit_is_caught_where_the_value_enters_not_by_the_merge() {
        let mut bytes = record(1, 1, json!({"a": 1})).encode();
        bytes[12] ^= 0x10;
        assert_eq!(Header::read(&bytes), Err(ValueError::Checksum));
        assert!(Header::parse(&bytes).is_ok(), "parse trusts a value already checked");
    }

    #[test]
    fn a_tombstone_is_a_version_like_any_other() {
        let live = record(1, 1, json!({"a": 1})).encode();
        let dead = StoredRecord::tombstone(Version { hlc: 2, origin: 1 }, 0).encode();
        assert_eq!(merge(&live, &dead), &dead[..]);
        assert!(Header::read(&dead).unwrap().tombstone);
    }

    fn any_value() -> impl Strategy<Value = Vec<u8>> {
        (0u64..4, 0u64..3, any::<bool>(), 0i64..3).prop_map(|(hlc, origin, tombstone, n)| {
            let version = Version { hlc, origin };
            let mut r = StoredRecord { version, ts: n, tombstone, fields: vec![("n".into(), Field::Int(n))] };
            if tombstone {
                r.fields.clear();
            }
            r.encode()
        })
    }

    proptest! {
        #[test]
        fn merge_is_idempotent(a in any_value()) {
            prop_assert_eq!(merge(&a, &a), &a[..]);
        }

        #[test]
        fn merge_is_commutative(a in any_value(), b in any_value()) {
            prop_assert_eq!(merge(&a, &b), merge(&b, &a));
        }

        #[test]
        fn merge_is_associative(a in any_value(), b in any_value(), c in any_value()) {
            prop_assert_eq!(merge(merge(&a, &b), &c), merge(&a, merge(&b, &c)));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = StoredRecord::decode(&bytes);
        }
    }
}
