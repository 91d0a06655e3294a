//! The byte encoding of a [`Record`] that remote stores keep (Redis, PostgreSQL): written by
//! [`Record::encode`], read back by [`Record::decode`], which also reads every record an
//! earlier version wrote.

use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::{expiry_of, Record, StoredBody, MAX_EXPIRY_MS};
use crate::fingerprint::Fingerprint;

const MAGIC: &[u8; 4] = b"IDM1";

/// The body flags: what follows the headers.
const TOO_LARGE: u8 = 0;
const KEPT: u8 = 1;
const FAILED: u8 = 2;
/// Added with trailers: a record without them is written as before (`KEPT`), so a reader of
/// an earlier version reads it.
const KEPT_WITH_TRAILERS: u8 = 3;

impl Record {
    /// Encodes the record into bytes, for stores that keep bytes.
    ///
    /// Layout (integers big-endian): `"IDM1"`, fingerprint (32), status (u16), expiry in ms since
    /// the Unix epoch (u64), the headers, then a body flag (u8: 0 too large, 1 kept, 2 failed,
    /// 3 kept with trailers) and, when kept, the body length (u32) and body, then with flag 3
    /// the trailers. Headers and trailers are each a count (u16), then per field its name
    /// length (u16), name, value length (u32) and value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size_hint());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(self.fingerprint.as_bytes());
        out.extend_from_slice(&self.status.as_u16().to_be_bytes());
        let ms = self.expires_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis().min(MAX_EXPIRY_MS.into());
        let ms = ms as u64;
        out.extend_from_slice(&ms.to_be_bytes());
        put_fields(&mut out, &self.headers);
        match &self.body {
            StoredBody::Kept(body) => {
                out.push(KEPT);
                put_body(&mut out, body);
            }
            StoredBody::KeptWithTrailers { body, trailers } => {
                out.push(KEPT_WITH_TRAILERS);
                put_body(&mut out, body);
                put_fields(&mut out, trailers);
            }
            StoredBody::TooLarge => out.push(TOO_LARGE),
            StoredBody::Failed => out.push(FAILED),
        }
        out
    }

    /// Decodes bytes produced by [`Record::encode`]. Never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_shared(&Bytes::copy_from_slice(bytes))
    }

    /// [`Record::decode`] without copying: the body and field values are slices of `bytes`.
    pub fn decode_shared(bytes: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader { bytes, rest: bytes };
        if r.take(4)? != MAGIC {
            return Err(DecodeError("not an idem record (bad magic)"));
        }
        let fingerprint = Fingerprint::from_bytes(r.take(32)?.try_into().expect("32 bytes"));
        let status = StatusCode::from_u16(r.u16()?).map_err(|_| DecodeError("invalid status"))?;
        let expires_at = expiry_of(r.u64()?).ok_or(DecodeError("expiry out of range"))?;
        // Room for what a replay adds (`Content-Length`, `Idempotent-Replayed`).
        let headers = r.fields(2)?;
        let body = match r.take(1)?[0] {
            TOO_LARGE => StoredBody::TooLarge,
            KEPT => StoredBody::Kept(r.body()?),
            FAILED => StoredBody::Failed,
            KEPT_WITH_TRAILERS => {
                let body = r.body()?;
                StoredBody::KeptWithTrailers { body, trailers: Box::new(r.fields(0)?) }
            }
            _ => return Err(DecodeError("invalid body flag")),
        };
        if !r.rest.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(Self { fingerprint, status, headers, body, expires_at })
    }

    /// About how many bytes the record's encoding takes.
    fn size_hint(&self) -> usize {
        let fields = |map: &HeaderMap| -> usize { map.iter().map(|(k, v)| k.as_str().len() + v.len() + 6).sum() };
        let trailers = self.body.trailers().map_or(0, |trailers| 2 + fields(trailers));
        58 + fields(&self.headers) + self.body.bytes().map_or(0, Bytes::len) + trailers
    }
}

fn put_body(out: &mut Vec<u8>, body: &Bytes) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
}

fn put_fields(out: &mut Vec<u8>, fields: &HeaderMap) {
    out.extend_from_slice(&(fields.len() as u16).to_be_bytes());
    for (name, value) in fields {
        out.extend_from_slice(&(name.as_str().len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
}

/// The fingerprint inside an encoded record, without decoding the rest (the Redis store's
/// scripts read it at this offset; its tests pin the offset here).
#[cfg(all(test, feature = "redis"))]
pub(crate) fn encoded_fingerprint(bytes: &[u8]) -> Option<&[u8; 32]> {
    bytes.strip_prefix(MAGIC)?.get(..32)?.try_into().ok()
}

/// Bytes that are not an encoded [`Record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(&'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot decode a stored record: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Reads `rest`, a tail of `bytes`, which values and bodies share rather than copy.
struct Reader<'a> {
    bytes: &'a Bytes,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn body(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        Ok(self.bytes.slice_ref(self.take(len)?))
    }
    /// A count, then that many fields; `room` more are expected to be added.
    fn fields(&mut self, room: usize) -> Result<HeaderMap, DecodeError> {
        let count = self.u16()?;
        // The count is untrusted: allocate for what is actually read.
        let mut fields = HeaderMap::with_capacity((count as usize).min(32) + room);
        for _ in 0..count {
            let len = self.u16()? as usize;
            let name = HeaderName::from_bytes(self.take(len)?).map_err(|_| DecodeError("invalid field name"))?;
            let len = self.u32()? as usize;
            let value = HeaderValue::from_maybe_shared(self.bytes.slice_ref(self.take(len)?))
                .map_err(|_| DecodeError("invalid field value"))?;
            fields.try_append(name, value).map_err(|_| DecodeError("too many fields"))?;
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use http::header;

    use super::*;

    fn sample(body: StoredBody) -> Record {
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, HeaderValue::from_static("/orders/1"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        Record {
            fingerprint: Fingerprint::from_bytes([7; 32]),
            status: StatusCode::CREATED,
            headers,
            body,
            expires_at: UNIX_EPOCH + Duration::from_millis(1_800_000_000_123),
        }
    }

    fn with_trailers(body: &'static [u8]) -> StoredBody {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("sha-256=:abc=:"));
        trailers.append("grpc-message", HeaderValue::from_static("a"));
        trailers.append("grpc-message", HeaderValue::from_static("b"));
        StoredBody::kept(Bytes::from_static(body), trailers)
    }

    #[test]
    fn encoding_round_trips() {
        let kept = |b: &'static [u8]| StoredBody::Kept(Bytes::from_static(b));
        for record in [
            sample(kept(b"{\"id\":1}")),
            sample(StoredBody::TooLarge),
            sample(StoredBody::Failed),
            sample(kept(b"")),
            sample(with_trailers(b"{\"id\":1}")),
            sample(with_trailers(b"")),
        ] {
            assert_eq!(Record::decode(&record.encode()).unwrap(), record);
        }
    }

    /// Records written before trailers were kept, byte for byte as that version wrote them.
    fn written_before_trailers(body: &[&[u8]]) -> Vec<u8> {
        let head: [&[u8]; 9] = [
            b"IDM1",
            &[7; 32],
            &201u16.to_be_bytes(),
            &1_800_000_000_123u64.to_be_bytes(),
            &1u16.to_be_bytes(),
            &8u16.to_be_bytes(),
            b"location",
            &9u32.to_be_bytes(),
            b"/orders/1",
        ];
        [&head[..], body].concat().concat()
    }

    #[test]
    fn a_record_written_before_trailers_still_decodes_and_replays() {
        let mut location = HeaderMap::new();
        location.insert(header::LOCATION, HeaderValue::from_static("/orders/1"));
        let expected = |body| Record { headers: location.clone(), ..sample(body) };
        let kept = written_before_trailers(&[&[1], &8u32.to_be_bytes(), b"{\"id\":1}"]);
        let record = Record::decode(&kept).unwrap();
        assert_eq!(record, expected(StoredBody::Kept(Bytes::from_static(b"{\"id\":1}"))));
        // And a record without trailers is still written exactly so.
        assert_eq!(record.encode(), kept);
        let replay = record.replay();
        assert_eq!(replay.status(), StatusCode::CREATED);
        assert_eq!(replay.headers()[header::LOCATION], "/orders/1");
        assert!(!replay.headers().contains_key(header::TRAILER));
        for (flag, body) in [(0, StoredBody::TooLarge), (2, StoredBody::Failed)] {
            let old = written_before_trailers(&[&[flag]]);
            assert_eq!(Record::decode(&old).unwrap(), expected(body.clone()));
            assert_eq!(expected(body).encode(), old);
        }
    }

    #[test]
    fn an_expiry_past_the_year_9999_is_kept_until_then_not_wrapped() {
        let mut record = sample(StoredBody::Kept(Bytes::from_static(b"{}")));
        record.expires_at = SystemTime::now() + Duration::from_secs(1 << 40);
        let decoded = Record::decode(&record.encode()).unwrap();
        assert_eq!(decoded.expires_at, UNIX_EPOCH + Duration::from_millis(MAX_EXPIRY_MS));
        assert!(!decoded.is_expired_at(SystemTime::now()));
        // Past that, an encoding is not one idem wrote.
        let mut bytes = record.encode();
        bytes[38..46].copy_from_slice(&(MAX_EXPIRY_MS + 1).to_be_bytes());
        assert!(Record::decode(&bytes).is_err());
    }

    #[test]
    fn decoding_rejects_every_truncation() {
        for body in [StoredBody::Kept(Bytes::from_static(b"body")), with_trailers(b"body")] {
            let bytes = sample(body).encode();
            for n in 0..bytes.len() {
                assert!(Record::decode(&bytes[..n]).is_err(), "prefix of {n} bytes decoded");
            }
        }
    }

    #[test]
    fn decoding_an_unknown_body_flag_is_an_error() {
        let mut bytes = sample(StoredBody::TooLarge).encode();
        *bytes.last_mut().unwrap() = 4;
        assert_eq!(Record::decode(&bytes), Err(DecodeError("invalid body flag")));
    }

    #[test]
    fn decoding_a_huge_header_count_is_an_error_not_a_panic() {
        // Found by the record_decode fuzz target: a header count above HeaderMap's capacity.
        let input = [
            0x49, 0x44, 0x4d, 0x31, 0x00, 0xff, 0xff, 0xff, 0xfe, 0x00, 0x00, 0x00, 0x00, 0x00, 0x49, 0x00, 0x44, 0x4d,
            0x32, 0x2b, 0x2b, 0x2b, 0x2b, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0xff, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x04, 0x06, 0x00,
        ];
        assert!(Record::decode(&input).is_err());
    }
}
