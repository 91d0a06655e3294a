//! A completed record as the in-process caches keep it ([`MemoryStore`](super::MemoryStore),
//! [`LocalTier`](super::LocalTier)): one shared allocation in a layout of their own, leaner
//! than [`Record::encode`]'s (which remote stores keep, and which stays as it is): nothing at
//! rest depends on this one, since it never leaves the process.
//!
//! Layout: fingerprint (32), expiry in ms since the Unix epoch (6, big-endian), status (2,
//! big-endian), what is kept of the body (1: 0 too large, 1 kept, 2 failed, 3 kept with
//! trailers), the headers, with kind 3 the trailers, then the kept body to the end. Headers and
//! trailers are each a count (varint), then each field as its name and its value. A name is
//! one byte, its index in [`NAMES`] plus one, or 0 followed by a varint length and the name; a
//! value is one byte, its index in [`VALUES`] plus one, or 0 followed by a varint length and the
//! value. A record without trailers takes not one byte more than before trailers were kept.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::Claim;
use crate::fingerprint::Fingerprint;
use crate::record::{Record, StoredBody, MAX_EXPIRY_MS};

/// Header names a response commonly carries, written as one byte.
static NAMES: [HeaderName; 16] = [
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::LOCATION,
    header::ETAG,
    header::CACHE_CONTROL,
    header::LAST_MODIFIED,
    header::CONTENT_LANGUAGE,
    header::VARY,
    header::LINK,
    header::RETRY_AFTER,
    header::EXPIRES,
    header::CONTENT_DISPOSITION,
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::STRICT_TRANSPORT_SECURITY,
    header::X_CONTENT_TYPE_OPTIONS,
    crate::record::X_REQUEST_ID,
];

/// Header values a response commonly carries (content types mostly), written as one byte.
const VALUES: [&str; 8] = [
    "application/json",
    "application/problem+json",
    "text/plain; charset=utf-8",
    "text/html; charset=utf-8",
    "application/octet-stream",
    "application/x-www-form-urlencoded",
    "nosniff",
    "no-store",
];

const FINGERPRINT: usize = 0;
const EXPIRY: usize = 32;
const STATUS: usize = 38;
const BODY_KIND: usize = 40;
const HEADERS: usize = 41;

/// A completed record, packed. Clones share it.
#[derive(Clone)]
pub(super) struct Packed(Arc<[u8]>);

impl Packed {
    pub(super) fn new(record: &Record) -> Self {
        let trailers = record.body.trailers();
        let body = record.body.bytes().map_or(&[][..], |body| &body[..]);
        let len = HEADERS + fields_len(&record.headers) + trailers.map_or(0, fields_len) + body.len();
        // Allocated once at its final size and written in place.
        let mut packed: Arc<[u8]> = std::iter::repeat_n(0, len).collect();
        let out = &mut Writer { bytes: Arc::get_mut(&mut packed).expect("not shared yet"), at: 0 };
        out.put(record.fingerprint.as_bytes());
        let ms = record.expires_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis().min(MAX_EXPIRY_MS.into());
        out.put(&(ms as u64).to_be_bytes()[2..]);
        out.put(&record.status.as_u16().to_be_bytes());
        out.put(&[match record.body {
            StoredBody::TooLarge => 0,
            StoredBody::Kept(_) => 1,
            StoredBody::Failed => 2,
            StoredBody::KeptWithTrailers { .. } => 3,
        }]);
        out.fields(&record.headers);
        if let Some(trailers) = trailers {
            out.fields(trailers);
        }
        out.put(body);
        debug_assert_eq!(out.at, len);
        Self(packed)
    }

    /// Its size in bytes.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires_at() <= now
    }

    fn expires_at(&self) -> SystemTime {
        let mut ms = [0; 8];
        ms[2..].copy_from_slice(&self.0[EXPIRY..STATUS]);
        UNIX_EPOCH + Duration::from_millis(u64::from_be_bytes(ms))
    }

    pub(super) fn matches(&self, fingerprint: &Fingerprint) -> bool {
        self.0[FINGERPRINT..EXPIRY] == fingerprint.as_bytes()[..]
    }

    pub(super) fn unpack(&self) -> Arc<Record> {
        let bytes = &self.0;
        let shared = Bytes::from_owner(bytes.clone());
        let mut r = Reader { bytes, at: HEADERS };
        // Room for what a replay adds: `Content-Length` and `Idempotent-Replayed`.
        let headers = r.fields(&shared, 2);
        let kind = bytes[BODY_KIND];
        let trailers = if kind == 3 { r.fields(&shared, 0) } else { HeaderMap::new() };
        let rest = || if r.at == bytes.len() { Bytes::new() } else { shared.slice(r.at..) };
        let body = match kind {
            0 => StoredBody::TooLarge,
            1 => StoredBody::Kept(rest()),
            3 => StoredBody::KeptWithTrailers { body: rest(), trailers: Box::new(trailers) },
            _ => StoredBody::Failed,
        };
        let fingerprint = Fingerprint::from_bytes(bytes[FINGERPRINT..EXPIRY].try_into().expect("32 bytes"));
        let status =
            StatusCode::from_u16(u16::from_be_bytes([bytes[STATUS], bytes[STATUS + 1]])).expect("a status idem packed");
        Arc::new(Record { fingerprint, status, headers, body, expires_at: self.expires_at() })
    }

    /// What a replay of this record is: the record, or a mismatch.
    pub(super) fn claim(&self, fingerprint: &Fingerprint) -> Claim {
        if self.matches(fingerprint) {
            Claim::Completed(self.unpack())
        } else {
            Claim::Mismatch
        }
    }
}

/// The packed size of `fields`: their count, then each name and value.
fn fields_len(fields: &HeaderMap) -> usize {
    let each: usize = fields
        .iter()
        .map(|(name, value)| {
            let name_len = match name_index(name) {
                Some(_) => 1,
                None => 1 + varint_len(name.as_str().len()) + name.as_str().len(),
            };
            let value_len = match value_index(value) {
                Some(_) => 1,
                None => 1 + varint_len(value.len()) + value.len(),
            };
            name_len + value_len
        })
        .sum();
    varint_len(fields.len()) + each
}

fn name_index(name: &HeaderName) -> Option<usize> {
    NAMES.iter().position(|known| known == name)
}

fn value_index(value: &HeaderValue) -> Option<usize> {
    VALUES.iter().position(|known| known.as_bytes() == value.as_bytes())
}

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

struct Writer<'a> {
    bytes: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.bytes[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }

    fn varint(&mut self, mut n: usize) {
        while n >= 0x80 {
            self.put(&[(n as u8 & 0x7f) | 0x80]);
            n >>= 7;
        }
        self.put(&[n as u8]);
    }

    fn fields(&mut self, fields: &HeaderMap) {
        self.varint(fields.len());
        for (name, value) in fields {
            match name_index(name) {
                Some(i) => self.put(&[i as u8 + 1]),
                None => {
                    self.put(&[0]);
                    self.varint(name.as_str().len());
                    self.put(name.as_str().as_bytes());
                }
            }
            match value_index(value) {
                Some(i) => self.put(&[i as u8 + 1]),
                None => {
                    self.put(&[0]);
                    self.varint(value.len());
                    self.put(value.as_bytes());
                }
            }
        }
    }
}

/// Reads what [`Packed::new`] wrote: the bytes are idem's own, so a short read is a bug and
/// panics.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let taken = &self.bytes[self.at..self.at + n];
        self.at += n;
        taken
    }

    fn byte(&mut self) -> u8 {
        self.take(1)[0]
    }

    fn varint(&mut self) -> usize {
        let (mut n, mut shift) = (0, 0);
        loop {
            let b = self.byte();
            n |= usize::from(b & 0x7f) << shift;
            if b < 0x80 {
                return n;
            }
            shift += 7;
        }
    }

    /// What [`Writer::fields`] wrote, values shared with `shared`; with room for `room` more.
    fn fields(&mut self, shared: &Bytes, room: usize) -> HeaderMap {
        let count = self.varint();
        let mut fields = HeaderMap::with_capacity(count + room);
        for _ in 0..count {
            let name = match self.byte() {
                0 => {
                    let len = self.varint();
                    HeaderName::from_bytes(self.take(len)).expect("a name idem packed")
                }
                i => NAMES[i as usize - 1].clone(),
            };
            let value = match self.byte() {
                0 => {
                    let len = self.varint();
                    HeaderValue::from_maybe_shared(shared.slice_ref(self.take(len))).expect("a value idem packed")
                }
                i => HeaderValue::from_static(VALUES[i as usize - 1]),
            };
            fields.append(name, value);
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn record(headers: &[(&str, &str)], body: StoredBody) -> Record {
        Record {
            fingerprint: Fingerprint::from_bytes(std::array::from_fn(|i| i as u8)),
            status: StatusCode::CREATED,
            headers: fields(headers),
            body,
            expires_at: UNIX_EPOCH + Duration::from_millis(1_800_000_000_123),
        }
    }

    #[test]
    fn packing_round_trips_every_kind_of_header_and_body() {
        let long_value = "v".repeat(300);
        let headers = [
            ("content-type", "application/json"),
            ("location", "/orders/1"),
            ("x-multi", "a"),
            ("x-multi", "b"),
            ("x-request-id", "0190d6a4-0000-7000-8000-000000000000"),
            ("x-long", long_value.as_str()),
            ("cache-control", "no-store"),
        ];
        let bodies = [
            StoredBody::Kept(Bytes::from_static(b"{\"id\":1}")),
            StoredBody::Kept(Bytes::new()),
            StoredBody::Kept(Bytes::from(vec![7; 1000])),
            StoredBody::TooLarge,
            StoredBody::Failed,
            StoredBody::kept(Bytes::from_static(b"{}"), fields(&headers)),
            StoredBody::kept(Bytes::new(), fields(&[("grpc-status", "0")])),
        ];
        for body in bodies {
            for headers in [&headers[..], &[]] {
                let original = record(headers, body.clone());
                let packed = Packed::new(&original);
                assert_eq!(*packed.unpack(), original);
                assert!(packed.matches(&original.fingerprint));
                assert!(!packed.matches(&Fingerprint::from_bytes([0; 32])));
            }
        }
    }

    #[test]
    fn a_common_content_type_takes_two_bytes() {
        let bare = Packed::new(&record(&[], StoredBody::Kept(Bytes::from_static(b"{}"))));
        let json =
            Packed::new(&record(&[("content-type", "application/json")], StoredBody::Kept(Bytes::from_static(b"{}"))));
        assert_eq!(json.len() - bare.len(), 2);
        assert_eq!(bare.len(), HEADERS + 1 + 2);
        // Trailers take their count and fields, coded as headers are.
        let trailers = fields(&[("x-checksum", "abc")]);
        let trailed = Packed::new(&record(&[], StoredBody::kept(Bytes::from_static(b"{}"), trailers)));
        assert_eq!(trailed.len() - bare.len(), 1 + (2 + "x-checksum".len()) + (2 + "abc".len()));
    }

    #[test]
    fn expiry_is_read_in_place_and_kept_until_the_year_9999_at_most() {
        let mut original = record(&[], StoredBody::Failed);
        let packed = Packed::new(&original);
        let expires_at = original.expires_at;
        assert!(!packed.is_expired_at(expires_at - Duration::from_millis(1)));
        assert!(packed.is_expired_at(expires_at));
        original.expires_at = SystemTime::now() + Duration::from_secs(1 << 40);
        let far = Packed::new(&original).unpack().expires_at;
        assert_eq!(far, UNIX_EPOCH + Duration::from_millis(MAX_EXPIRY_MS));
    }
}
