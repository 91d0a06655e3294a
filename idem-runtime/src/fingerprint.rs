//! What makes two requests "the same request".
//!
//! The fingerprint is a SHA-256 keyed by the raw idempotency key (its first input), over the method, the
//! matched route template, the request target as the client sent it (full path and query), and
//! a canonical encoding of what each selected handler parameter extracts. Each extractor type says how its
//! input is encoded by implementing [`FingerprintSource`]; idem implements it for axum's
//! extractors, and you can implement it for your own.

use std::cell::Cell;
use std::sync::Mutex;

use axum::extract::{Extension, Form, Json, MatchedPath, OriginalUri, Path, Query, State};
use bytes::Bytes;
use http::{request::Parts, Method, Uri};
use sha2::{Digest, Sha256};

use crate::store::RecordKey;

/// A request fingerprint: a SHA-256 keyed by the idempotency key, over the method, route, request
/// target and selected parameters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// A fingerprint from its 32 bytes, as a store kept them.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes, for a store to keep.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// Builds a request's [`Fingerprint`]: a SHA-256 whose first input is the raw idempotency key
/// (length-prefixed), then the method, the matched route template, the request target as the
/// client sent it (full path and query, whatever router nesting or layers did to the URI the
/// handler sees) and the digest of each selected parameter.
///
/// The key, which no store ever holds, is the secret that keys the digest: without it a stored
/// fingerprint cannot be recomputed, so it cannot be tested against guesses of the request. A
/// secret prefix serves that purpose (the known weakness of the construction, extending a
/// digest to a longer message, gives an attacker nothing to test a guess with) at one extra
/// block for a typical key, where an HMAC costs four.
pub(crate) struct FingerprintBuilder(Sha256);

impl FingerprintBuilder {
    /// Starts a fingerprint with the request line.
    pub(crate) fn new(key: &str, method: &Method, route: &str, target: &Uri) -> Self {
        let mut mac = Sha256::new();
        mac.update(b"idem-fp-v2\0");
        // A key is at most 255 bytes.
        mac.update([key.len() as u8]);
        mac.update(key.as_bytes());
        mac.update(method.as_str().as_bytes());
        mac.update([0]);
        mac.update((route.len() as u64).to_be_bytes());
        mac.update(route.as_bytes());
        let path = target.path();
        mac.update((path.len() as u64).to_be_bytes());
        mac.update(path.as_bytes());
        // Query pairs in a stable order, as `Query` parameters are fingerprinted.
        let query = target.query().unwrap_or_default();
        if query.is_empty() {
            mac.update([0]);
        } else {
            let mut pairs = FingerprintWriter::new();
            pairs.pairs(query.as_bytes());
            mac.update([1]);
            mac.update(pairs.finish());
        }
        Self(mac)
    }

    /// Adds the digests of the selected parameters, in parameter order.
    pub(crate) fn finish(mut self, params: &[Option<[u8; 32]>]) -> Fingerprint {
        for param in params {
            match param {
                Some(digest) => {
                    self.0.update([1]);
                    self.0.update(digest);
                }
                None => self.0.update([0]),
            }
        }
        Fingerprint(self.0.finalize().into())
    }
}

/// What an extractor read from the request, handed to [`FingerprintSource::write`].
#[derive(Debug, Clone, Copy)]
pub struct RequestInput<'a> {
    parts: &'a Parts,
    body: Option<&'a [u8]>,
    /// The record the request addresses, when it is covered.
    record: Option<RecordKey>,
}

impl<'a> RequestInput<'a> {
    /// Input for an extractor that reads the request head only.
    pub(crate) fn parts(parts: &'a Parts) -> Self {
        Self { parts, body: None, record: None }
    }

    /// Input for an extractor that reads the body of a request addressing `record`.
    pub(crate) fn with_body(parts: &'a Parts, body: &'a [u8], record: RecordKey) -> Self {
        Self { parts, body: Some(body), record: Some(record) }
    }

    /// The request head.
    pub fn head(&self) -> &'a Parts {
        self.parts
    }

    /// The buffered body, for body extractors.
    pub fn body(&self) -> Option<&'a [u8]> {
        self.body
    }
}

/// Accumulates one parameter's canonical encoding into a SHA-256.
///
/// Every write is length-prefixed and tagged, so no two sequences of writes collide.
pub struct FingerprintWriter {
    hasher: Sha256,
}

impl std::fmt::Debug for FingerprintWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FingerprintWriter").finish_non_exhaustive()
    }
}

impl Default for FingerprintWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl FingerprintWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self { hasher: Sha256::new() }
    }

    fn tag(&mut self, tag: u8, len: usize) {
        self.hasher.update([tag]);
        self.hasher.update((len as u64).to_be_bytes());
    }

    /// Raw bytes, as they are.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.tag(b'b', bytes.len());
        self.hasher.update(bytes);
    }

    /// A JSON document, canonically: object keys sorted, no insignificant whitespace, string
    /// escapes normalized, numbers by their exact decimal value (never rounded through a float).
    /// Input that is not JSON is written as raw bytes.
    pub fn json(&mut self, raw: &[u8]) {
        self.json_is_canonical(raw);
    }

    /// [`json`](Self::json), telling whether `raw` was canonical JSON already.
    fn json_is_canonical(&mut self, raw: &[u8]) -> bool {
        CANONICALIZED.set(CANONICALIZED.get() + 1);
        let mut canonical = SPARE_TEXT.take();
        canonical.reserve(raw.len());
        let is_canonical = match crate::canonical::canonical_json(raw, &mut canonical) {
            Ok(()) => {
                self.tag(b'j', canonical.len());
                self.hasher.update(&canonical);
                canonical == raw
            }
            Err(()) => {
                self.bytes(raw);
                false
            }
        };
        // Kept for the next document on this thread, unless a large one made it large.
        if canonical.capacity() <= SPARE_TEXT_LIMIT {
            canonical.clear();
            SPARE_TEXT.set(canonical);
        }
        is_canonical
    }

    /// The digest of a fresh writer given one JSON document, and whether the document was
    /// canonical already.
    fn json_digest(raw: &[u8]) -> ([u8; 32], bool) {
        let mut writer = Self::new();
        let is_canonical = writer.json_is_canonical(raw);
        (writer.finish(), is_canonical)
    }

    /// `application/x-www-form-urlencoded` pairs (a query string or a form body), decoded and
    /// stably sorted by name: the order of different names does not matter, the order of
    /// repeated values of one name does.
    pub fn pairs(&mut self, urlencoded: &[u8]) {
        let mut pairs: Vec<_> = form_urlencoded::parse(urlencoded).collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        self.tag(b'p', pairs.len());
        for (k, v) in pairs {
            self.tag(b'k', k.len());
            self.hasher.update(k.as_bytes());
            self.tag(b'v', v.len());
            self.hasher.update(v.as_bytes());
        }
    }

    /// The digest of everything written.
    pub fn finish(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }
}

/// An extractor whose input can be part of a request fingerprint.
///
/// Implemented for axum's extractors: `Json`, `Form`, `Query`, `Path`, `Bytes`, `String`, `Uri`,
/// `OriginalUri`, `Method`, and (contributing nothing, as state-like values) `State`,
/// `Extension` and `MatchedPath`. Implement it for your own extractors, or leave them out of the
/// fingerprint with `skip(...)`.
///
/// ```
/// use idem_runtime::fingerprint::{FingerprintSource, FingerprintWriter, RequestInput};
///
/// /// An extractor reading the `X-Tenant` header.
/// struct Tenant(String);
///
/// impl FingerprintSource for Tenant {
///     fn write(input: &RequestInput<'_>, out: &mut FingerprintWriter) {
///         if let Some(v) = input.head().headers.get("x-tenant") {
///             out.bytes(v.as_bytes());
///         }
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of an idempotency fingerprint",
    label = "idem does not know how to fingerprint this parameter",
    note = "leave it out with `skip(<its binding>)` in `#[idempotent(...)]`, or implement `idem_runtime::fingerprint::FingerprintSource` for it"
)]
pub trait FingerprintSource {
    /// Writes the canonical encoding of this extractor's input.
    fn write(input: &RequestInput<'_>, out: &mut FingerprintWriter);

    /// The digest of this extractor's input: what [`write`](Self::write) writes into a fresh
    /// writer. idem's `Json` answers a byte-identical retry from the digests of recent bodies
    /// instead of canonicalizing the body again; there is no reason to override it elsewhere.
    #[doc(hidden)]
    fn digest(input: &RequestInput<'_>) -> [u8; 32] {
        let mut writer = FingerprintWriter::new();
        Self::write(input, &mut writer);
        writer.finish()
    }
}

impl<T> FingerprintSource for Json<T> {
    fn write(input: &RequestInput<'_>, out: &mut FingerprintWriter) {
        out.json(input.body().unwrap_or_default());
    }

    /// A body byte for byte the same as the one last fingerprinted for its record (the usual
    /// retry) has the same canonical digest: it is taken from the digests of recent bodies
    /// rather than computed again. Any other body is canonicalized.
    fn digest(input: &RequestInput<'_>) -> [u8; 32] {
        let body = input.body().unwrap_or_default();
        let Some(record) = input.record else { return FingerprintWriter::json_digest(body).0 };
        // A retry finds its record's last body: compare the bytes' digest first.
        let last = recent::last_of(&record);
        let raw = last.map(|_| raw_digest(body));
        if let (Some(last), Some(raw)) = (last, raw) {
            if last.raw == raw {
                return last.digest;
            }
        }
        let (digest, raw_is_canonical) = FingerprintWriter::json_digest(body);
        // The bytes' digest is the canonical one when they are canonical already.
        let raw = raw.unwrap_or_else(|| if raw_is_canonical { digest } else { raw_digest(body) });
        recent::remember(record, raw, digest);
        digest
    }
}

/// The digest of a JSON body's bytes, as [`FingerprintWriter::json`] would write them if they
/// were canonical: equal to the canonical digest exactly when they are.
fn raw_digest(body: &[u8]) -> [u8; 32] {
    let mut writer = FingerprintWriter::new();
    writer.tag(b'j', body.len());
    writer.hasher.update(body);
    writer.finish()
}

impl<T> FingerprintSource for Form<T> {
    fn write(input: &RequestInput<'_>, out: &mut FingerprintWriter) {
        match input.body() {
            Some(body) => out.pairs(body),
            None => out.pairs(input.head().uri.query().unwrap_or_default().as_bytes()),
        }
    }
}

impl<T> FingerprintSource for Query<T> {
    fn write(input: &RequestInput<'_>, out: &mut FingerprintWriter) {
        out.pairs(input.head().uri.query().unwrap_or_default().as_bytes());
    }
}

impl<T> FingerprintSource for Path<T> {
    fn write(input: &RequestInput<'_>, out: &mut FingerprintWriter) {
        out.bytes(input.head().uri.path().as_bytes());
    }
}

impl FingerprintSource for Bytes {
    fn write(input: &RequestInput<'_>, out: &mut FingerprintWriter) {
        out.bytes(input.body().unwrap_or_default());
    }
}

impl FingerprintSource for String {
    fn write(input: &RequestInput<'_>, out: &mut FingerprintWriter) {
        out.bytes(input.body().unwrap_or_default());
    }
}

fn write_uri(uri: &Uri, out: &mut FingerprintWriter) {
    out.bytes(uri.path().as_bytes());
    out.pairs(uri.query().unwrap_or_default().as_bytes());
}

impl FingerprintSource for Uri {
    fn write(input: &RequestInput<'_>, out: &mut FingerprintWriter) {
        write_uri(&input.head().uri, out);
    }
}

impl FingerprintSource for OriginalUri {
    fn write(input: &RequestInput<'_>, out: &mut FingerprintWriter) {
        match input.head().extensions.get::<OriginalUri>() {
            Some(OriginalUri(uri)) => write_uri(uri, out),
            None => write_uri(&input.head().uri, out),
        }
    }
}

/// State-like extractors: the same for every retry, so they add nothing.
macro_rules! contributes_nothing {
    ($($ty:ty),* $(,)?) => {$(
        impl<T> FingerprintSource for $ty {
            fn write(_: &RequestInput<'_>, _: &mut FingerprintWriter) {}
        }
    )*};
}
contributes_nothing!(State<T>, Extension<T>);

impl FingerprintSource for MatchedPath {
    fn write(_: &RequestInput<'_>, _: &mut FingerprintWriter) {}
}

impl FingerprintSource for Method {
    fn write(_: &RequestInput<'_>, _: &mut FingerprintWriter) {}
}

thread_local! {
    /// JSON bodies canonicalized on this thread.
    static CANONICALIZED: Cell<u64> = const { Cell::new(0) };
    /// The buffer the last canonical text on this thread was written in, for the next one.
    static SPARE_TEXT: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The largest buffer kept for the next canonical text.
const SPARE_TEXT_LIMIT: usize = 16 << 10;

/// How many JSON bodies this thread has canonicalized so far: lets tests tell a retry answered
/// from the digests of recent bodies from one whose body was canonicalized again.
#[doc(hidden)]
pub fn canonicalized_on_this_thread() -> u64 {
    CANONICALIZED.get()
}

/// The canonical digest of the JSON body last fingerprinted for each record, with the SHA-256 of
/// its raw bytes: a retry sends the same bytes, and a body byte for byte the same has the same
/// canonical form, so its digest is looked up instead of parsing the body again. Any other body
/// (written differently, or different) is canonicalized: the digest, and so the fingerprint, is
/// the canonical one either way. A request whose record the table does not hold (the first one
/// of a key) hashes its bytes only if they are not canonical already: otherwise their digest is
/// the canonical one.
///
/// A fixed table of slots, one per record key modulo its size, each remembering the last body of
/// one record: memory stays the same however many records a store holds, and a retry finds its
/// body as long as no request for a record sharing its slot came in between. The table is kept
/// small enough to stay in the CPU's caches: a first request, which finds nothing, would
/// otherwise pay a memory access that costs more than canonicalizing a small body.
mod recent {
    use super::*;

    const SLOTS: usize = 512;

    struct Entry {
        record: RecordKey,
        raw: [u8; 32],
        digest: [u8; 32],
    }

    /// A record's last body: the digest of its bytes, and its canonical digest.
    #[derive(Clone, Copy)]
    pub(super) struct Last {
        pub(super) raw: [u8; 32],
        pub(super) digest: [u8; 32],
    }

    static TABLE: [Mutex<Option<Entry>>; SLOTS] = [const { Mutex::new(None) }; SLOTS];

    fn slot(record: &RecordKey) -> std::sync::MutexGuard<'static, Option<Entry>> {
        // Bytes of the digest that neither the embedded store's shards nor its map hash on.
        let (_, tail) = record.as_bytes().split_last_chunk::<8>().expect("32 bytes");
        let slot = &TABLE[u64::from_le_bytes(*tail) as usize % SLOTS];
        // Every update is one assignment: a poisoned slot is still consistent.
        slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What the table remembers of `record`'s last body, if its slot holds that record.
    pub(super) fn last_of(record: &RecordKey) -> Option<Last> {
        slot(record).as_ref().filter(|e| e.record == *record).map(|e| Last { raw: e.raw, digest: e.digest })
    }

    pub(super) fn remember(record: RecordKey, raw: [u8; 32], digest: [u8; 32]) {
        *slot(&record) = Some(Entry { record, raw, digest });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(raw: &str) -> [u8; 32] {
        let mut w = FingerprintWriter::new();
        w.json(raw.as_bytes());
        w.finish()
    }

    fn pairs(raw: &str) -> [u8; 32] {
        let mut w = FingerprintWriter::new();
        w.pairs(raw.as_bytes());
        w.finish()
    }

    #[test]
    fn json_key_order_and_whitespace_do_not_matter() {
        assert_eq!(
            json(r#"{"a":1,"b":{"y":[1,2],"x":"s"}}"#),
            json(" { \"b\" : {\"x\":\"s\",\"y\":[1, 2]}, \"a\":1 }")
        );
        assert_ne!(json(r#"{"a":1}"#), json(r#"{"a":2}"#));
        assert_ne!(json(r#"[1,2]"#), json(r#"[2,1]"#));
        assert_ne!(json("not json"), json(r#""not json""#));
    }

    #[test]
    fn pair_order_matters_only_within_a_name() {
        assert_eq!(pairs("a=1&b=2"), pairs("b=2&a=1"));
        assert_eq!(pairs("a=%20"), pairs("a=+"));
        assert_ne!(pairs("a=1&a=2"), pairs("a=2&a=1"));
    }

    #[test]
    fn recent_digests_answer_only_their_own_record() {
        let record = |first: u8| {
            let mut digest = [9; 32];
            digest[0] = first;
            RecordKey::from_digest(digest)
        };
        let last = |record| recent::last_of(&record).map(|last| (last.raw, last.digest));
        // Two records sharing a slot (the same last 8 bytes).
        let (a, b) = (record(1), record(2));
        recent::remember(a, [1; 32], [10; 32]);
        assert_eq!(last(a), Some(([1; 32], [10; 32])));
        assert_eq!(last(b), None, "another record in the same slot");
        recent::remember(b, [1; 32], [20; 32]);
        assert_eq!(last(b), Some(([1; 32], [20; 32])));
        assert_eq!(last(a), None, "the slot now remembers the other record");
    }

    #[test]
    fn the_digest_of_canonical_bytes_is_their_canonical_digest() {
        for (raw, canonical) in [(r#"{"a":1,"b":[true,null]}"#, true), (r#"{"b":1,"a":2}"#, false), ("[1.0]", false)] {
            let (digest, is_canonical) = FingerprintWriter::json_digest(raw.as_bytes());
            assert_eq!(digest, json(raw));
            assert_eq!(is_canonical, canonical, "{raw}");
            assert_eq!(raw_digest(raw.as_bytes()) == digest, canonical, "{raw}");
        }
        assert!(!FingerprintWriter::json_digest(b"not json").1);
    }

    #[test]
    fn writes_are_unambiguous() {
        let mut a = FingerprintWriter::new();
        a.bytes(b"ab");
        a.bytes(b"c");
        let mut b = FingerprintWriter::new();
        b.bytes(b"a");
        b.bytes(b"bc");
        assert_ne!(a.finish(), b.finish());
    }
}
