//! A stored response and its byte encoding for remote stores.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::fingerprint::Fingerprint;
use crate::problem::Problem;

/// The header marking a replayed response.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// A completed request's response, as kept in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The fingerprint of the request that produced it.
    pub fingerprint: Fingerprint,
    /// The response status.
    pub status: StatusCode,
    /// The headers a replay repeats: by default all but hop-by-hop ones, `Date` and
    /// `Set-Cookie`; a handler's `replay_headers(...)` narrows or widens that.
    pub headers: HeaderMap,
    /// What is kept of the body.
    pub body: StoredBody,
    /// When the record stops being replayed.
    pub expires_at: SystemTime,
}

/// What a [`Record`] keeps of the response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredBody {
    /// The whole body, replayed as it is.
    Kept(Bytes),
    /// The body was larger than the store keeps: a replay repeats the status and headers with a
    /// problem body saying so.
    TooLarge,
    /// The body failed while it was produced, after the handler ran (a stream that yielded an
    /// error): a replay repeats the status and headers with a problem body saying so.
    Failed,
}

impl StoredBody {
    /// The kept bytes, if the whole body is kept.
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            Self::Kept(bytes) => Some(bytes),
            Self::TooLarge | Self::Failed => None,
        }
    }
}

/// The subset of `headers` that a replay repeats by default.
#[cfg(test)]
fn replayable_headers(headers: &HeaderMap) -> HeaderMap {
    replayable_headers_only(headers, None)
}

/// The subset of `headers` that a replay repeats. Never a hop-by-hop header (nor one named by
/// `Connection`) or `Content-Length`, which is recomputed from the stored body. By default every
/// other header but `Date` and `Set-Cookie`; with an allow-list (lower-case names), only those
/// listed plus the representation headers that describe the stored body (`Content-Type`,
/// `Content-Encoding`).
pub(crate) fn replayable_headers_only(headers: &HeaderMap, allow: Option<&[&str]>) -> HeaderMap {
    // Headers named by `Connection` are hop-by-hop too.
    let named_by_connection = |name: &HeaderName| {
        headers.get_all(header::CONNECTION).iter().any(|value| {
            value.to_str().unwrap_or_default().split(',').any(|n| n.trim().eq_ignore_ascii_case(name.as_str()))
        })
    };
    let replayed = |name: &HeaderName| {
        if idem_rules::never_replayed(name.as_str()).is_some() || named_by_connection(name) {
            return false;
        }
        match allow {
            None => *name != header::DATE && *name != header::SET_COOKIE,
            Some(allow) => {
                allow.contains(&name.as_str()) || *name == header::CONTENT_TYPE || *name == header::CONTENT_ENCODING
            }
        }
    };
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if replayed(name) {
            kept.append(name, value.clone());
        }
    }
    kept
}

impl Record {
    /// Whether the record is past its time to live at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires_at <= now
    }

    /// The time left before the record expires, zero once expired.
    pub fn ttl_left(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }

    /// About how many bytes the record takes in memory.
    fn size_hint(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum();
        96 + headers + self.body.bytes().map_or(0, Bytes::len)
    }

    /// The response a retry receives: the stored status, headers and body, plus
    /// `Idempotent-Replayed: true`.
    pub fn replay(&self) -> Response {
        self.clone().into_replay()
    }

    /// [`Record::replay`], consuming the record (no copy of its headers).
    pub fn into_replay(self) -> Response {
        let mut response = match self.body {
            StoredBody::Kept(body) => {
                let mut response = Response::new(Body::from(body));
                *response.status_mut() = self.status;
                *response.headers_mut() = self.headers;
                response
            }
            StoredBody::TooLarge => body_not_kept(Problem::body_not_stored(self.status), self.headers),
            StoredBody::Failed => body_not_kept(Problem::body_failed(self.status), self.headers),
        };
        response.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        response
    }

    /// Encodes the record into bytes, for stores that keep bytes.
    ///
    /// Layout (integers big-endian): `"IDM1"`, fingerprint (32), status (u16), expiry in ms since
    /// the Unix epoch (u64), header count (u16), then per header name length (u16), name,
    /// value length (u32), value; then a body flag (u8: 0 too large, 1 kept, 2 failed) and, when
    /// kept, the body length (u32) and body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size_hint());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(self.fingerprint.as_bytes());
        out.extend_from_slice(&self.status.as_u16().to_be_bytes());
        let ms = self.expires_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis().min(MAX_EXPIRY_MS.into());
        let ms = ms as u64;
        out.extend_from_slice(&ms.to_be_bytes());
        out.extend_from_slice(&(self.headers.len() as u16).to_be_bytes());
        for (name, value) in &self.headers {
            out.extend_from_slice(&(name.as_str().len() as u16).to_be_bytes());
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        match &self.body {
            StoredBody::Kept(body) => {
                out.push(1);
                out.extend_from_slice(&(body.len() as u32).to_be_bytes());
                out.extend_from_slice(body);
            }
            StoredBody::TooLarge => out.push(0),
            StoredBody::Failed => out.push(2),
        }
        out
    }

    /// Decodes bytes produced by [`Record::encode`]. Never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_shared(&Bytes::copy_from_slice(bytes))
    }

    /// [`Record::decode`] without copying: the body and header values are slices of `bytes`.
    pub fn decode_shared(bytes: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(DecodeError("not an idem record (bad magic)"));
        }
        let fingerprint = Fingerprint::from_bytes(r.take(32)?.try_into().expect("32 bytes"));
        let status = StatusCode::from_u16(r.u16()?).map_err(|_| DecodeError("invalid status"))?;
        let expires_at = expiry_of(r.u64()?).ok_or(DecodeError("expiry out of range"))?;
        let count = r.u16()?;
        // The count is untrusted: allocate for what is actually read, and room for what a replay
        // adds (`Content-Length`, `Idempotent-Replayed`).
        let mut headers = HeaderMap::with_capacity((count as usize).min(32) + 2);
        for _ in 0..count {
            let len = r.u16()? as usize;
            let name = HeaderName::from_bytes(r.take(len)?).map_err(|_| DecodeError("invalid header name"))?;
            let len = r.u32()? as usize;
            let value = HeaderValue::from_maybe_shared(bytes.slice_ref(r.take(len)?))
                .map_err(|_| DecodeError("invalid header value"))?;
            headers.try_append(name, value).map_err(|_| DecodeError("too many headers"))?;
        }
        let body = match r.take(1)?[0] {
            0 => StoredBody::TooLarge,
            1 => {
                let len = r.u32()? as usize;
                StoredBody::Kept(bytes.slice_ref(r.take(len)?))
            }
            2 => StoredBody::Failed,
            _ => return Err(DecodeError("invalid body flag")),
        };
        if !r.0.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(Self { fingerprint, status, headers, body, expires_at })
    }
}

const MAGIC: &[u8; 4] = b"IDM1";

/// A replay whose body was not kept: the stored status and headers, with a problem body.
fn body_not_kept(problem: Problem, mut headers: HeaderMap) -> Response {
    let mut response = problem.to_response();
    let content_type = response.headers_mut().remove(header::CONTENT_TYPE);
    headers.remove(header::CONTENT_ENCODING);
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, content_type);
    }
    *response.headers_mut() = headers;
    response
}

/// The latest expiry an encoding holds (the last millisecond of the year 9999): a longer `ttl`
/// is kept until then rather than wrapping around to the past.
pub(crate) const MAX_EXPIRY_MS: u64 = 253_402_300_799_999;

/// The fingerprint inside an encoded record, without decoding the rest (the Redis store's
/// scripts read it at this offset; its tests pin the offset here).
#[cfg(all(test, feature = "redis"))]
pub(crate) fn encoded_fingerprint(bytes: &[u8]) -> Option<&[u8; 32]> {
    bytes.strip_prefix(MAGIC)?.get(..32)?.try_into().ok()
}

/// An encoded expiry as a time; `None` past what [`Record::encode`] writes.
fn expiry_of(ms: u64) -> Option<SystemTime> {
    (ms <= MAX_EXPIRY_MS).then(|| UNIX_EPOCH + Duration::from_millis(ms))
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

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
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
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn encoding_round_trips() {
        let kept = |b: &'static [u8]| StoredBody::Kept(Bytes::from_static(b));
        for record in
            [sample(kept(b"{\"id\":1}")), sample(StoredBody::TooLarge), sample(StoredBody::Failed), sample(kept(b""))]
        {
            assert_eq!(Record::decode(&record.encode()).unwrap(), record);
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
        let bytes = sample(StoredBody::Kept(Bytes::from_static(b"body"))).encode();
        for n in 0..bytes.len() {
            assert!(Record::decode(&bytes[..n]).is_err(), "prefix of {n} bytes decoded");
        }
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

    #[test]
    fn replay_drops_hop_by_hop_date_and_cookies() {
        let mut headers = HeaderMap::new();
        headers.insert(header::DATE, HeaderValue::from_static("Sun, 22 Nov 2026 12:00:00 GMT"));
        headers.insert(header::SET_COOKIE, HeaderValue::from_static("s=1"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert(header::LOCATION, HeaderValue::from_static("/a"));
        let kept = replayable_headers(&headers);
        assert_eq!(kept.len(), 1);
        assert!(kept.contains_key(header::LOCATION));
    }
}
