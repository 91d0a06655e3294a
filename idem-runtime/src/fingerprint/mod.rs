//! What makes two requests "the same request".
//!
//! The fingerprint is a SHA-256 keyed by the raw idempotency key (its first input), over the method, the
//! matched route template, the request target as the client sent it (full path and query), and
//! a canonical encoding of what each selected handler parameter extracts. Each extractor type says how its
//! input is encoded by implementing [`FingerprintSource`]; idem implements it for axum's
//! extractors, and you can implement it for your own.
//!
//! Whatever a handler can observe is bound byte for byte. The only requests that share a
//! fingerprint while differing in their bytes are those the documented equivalences make one:
//! JSON written with another key order, whitespace, string escapes or number notation (the same
//! exact decimal value), and query or form pairs that decode to the same bytes in a stable order
//! (`+` and `%20`, `%41` and `A`, `a` and `a=`, `a=1&b=2` and `b=2&a=1`), for extractors that hand
//! the handler those pairs decoded. Percent-escapes decode to the bytes they spell, whatever they
//! spell: two escapes that are not UTF-8 are never merged into one replacement character. An
//! extractor that hands the handler the raw text (`Uri`, `OriginalUri`, `RawQuery`, `RawForm`)
//! binds that text as it is.

mod recent;
pub(crate) mod record_key;
mod sources;
#[cfg(test)]
mod tests;
mod writer;

use http::{Method, Uri};
use sha2::{Digest, Sha256};

pub use self::writer::FingerprintWriter;
use self::writer::{Pairs, CANONICALIZED};

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
/// Every field is framed so that no byte can move from one to the next unnoticed: the key and
/// the route and path are length-prefixed, the method (a token, which never holds a NUL) ends
/// with a NUL, the query is a marker byte then, when it holds pairs, their fixed-size digest,
/// and each parameter is a marker byte then its fixed-size digest.
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
        // Query pairs as `Query` parameters are fingerprinted: decoded byte for byte, in a
        // stable order. A query without pairs (none, `?` or `?&`) is no query.
        let pairs = Pairs::parse(target.query().unwrap_or_default().as_bytes());
        if pairs.is_empty() {
            mac.update([0]);
        } else {
            let mut writer = FingerprintWriter::new();
            writer.write_pairs(&pairs);
            mac.update([1]);
            mac.update(writer.finish());
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
    parts: &'a http::request::Parts,
    body: Option<&'a [u8]>,
    /// The record the request addresses, when it is covered.
    record: Option<record_key::RecordKey>,
}

impl<'a> RequestInput<'a> {
    /// Input for an extractor that reads the request head only.
    pub(crate) fn parts(parts: &'a http::request::Parts) -> Self {
        Self { parts, body: None, record: None }
    }

    /// Input for an extractor that reads the body of a request addressing `record`.
    pub(crate) fn with_body(parts: &'a http::request::Parts, body: &'a [u8], record: record_key::RecordKey) -> Self {
        Self { parts, body: Some(body), record: Some(record) }
    }

    /// The request head.
    pub fn head(&self) -> &'a http::request::Parts {
        self.parts
    }

    /// The buffered body, for body extractors.
    pub fn body(&self) -> Option<&'a [u8]> {
        self.body
    }
}

/// An extractor whose input can be part of a request fingerprint.
///
/// Implemented for axum's extractors: `Json`, `Form`, `Query`, `Path`, `Bytes`, `String`, `Uri`,
/// `OriginalUri`, `RawQuery`, `RawForm`, `Method`, and (contributing nothing, as state-like
/// values) `State`, `Extension` and `MatchedPath`. Implement it for your own extractors, or
/// leave them out of the fingerprint with `skip(...)`.
///
/// Write every byte your extractor lets the handler observe, as it is: a header value's
/// [`as_bytes`](http::HeaderValue::as_bytes), not a lossy conversion to text, so that two values
/// the handler can tell apart never fingerprint alike.
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

/// How many JSON bodies this thread has canonicalized so far: lets tests tell a retry answered
/// from the digests of recent bodies from one whose body was canonicalized again.
#[doc(hidden)]
pub fn canonicalized_on_this_thread() -> u64 {
    CANONICALIZED.get()
}
