//! How each of axum's extractors writes what it hands the handler into the fingerprint: decoded
//! pairs for `Query` and `Form`, canonical JSON for `Json`, and for everything that hands over
//! raw text (a body, a URI, a raw query or form) the bytes as they are.

use axum::extract::{Extension, Form, Json, MatchedPath, OriginalUri, Path, Query, RawForm, RawQuery, State};
use bytes::Bytes;
use http::{Method, Uri};

use super::{recent, FingerprintSource, FingerprintWriter, RequestInput};

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
        let raw = last.map(|_| FingerprintWriter::raw_json_digest(body));
        if let (Some(last), Some(raw)) = (last, raw) {
            if last.raw == raw {
                return last.digest;
            }
        }
        let (digest, raw_is_canonical) = FingerprintWriter::json_digest(body);
        // The bytes' digest is the canonical one when they are canonical already.
        let raw =
            raw.unwrap_or_else(|| if raw_is_canonical { digest } else { FingerprintWriter::raw_json_digest(body) });
        recent::remember(record, raw, digest);
        digest
    }
}

/// The form a `Form` or `RawForm` reads: the body, or the query for a request without one.
fn form<'a>(input: &RequestInput<'a>) -> &'a [u8] {
    match input.body() {
        Some(body) => body,
        None => input.head().uri.query().unwrap_or_default().as_bytes(),
    }
}

impl<T> FingerprintSource for Form<T> {
    fn write(input: &RequestInput<'_>, out: &mut FingerprintWriter) {
        out.pairs(form(input));
    }
}

/// The bytes as they are: `+` and `%20`, `%41` and `A` are different forms to the handler.
impl FingerprintSource for RawForm {
    fn write(input: &RequestInput<'_>, out: &mut FingerprintWriter) {
        out.bytes(form(input));
    }
}

impl<T> FingerprintSource for Query<T> {
    fn write(input: &RequestInput<'_>, out: &mut FingerprintWriter) {
        out.pairs(input.head().uri.query().unwrap_or_default().as_bytes());
    }
}

/// The query as it is, from its `?`: no query and an empty one (`/orders?`) are told apart, as
/// the handler tells `None` from `Some("")`.
impl FingerprintSource for RawQuery {
    fn write(input: &RequestInput<'_>, out: &mut FingerprintWriter) {
        let target = input.head().uri.path_and_query().map_or("", |target| target.as_str());
        let query = target.find('?').map_or("", |at| &target[at..]);
        out.bytes(query.as_bytes());
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

/// The body's bytes, as for `Bytes`: a body that is not UTF-8 never reaches the handler (the
/// extractor rejects it), so nothing is decoded here.
impl FingerprintSource for String {
    fn write(input: &RequestInput<'_>, out: &mut FingerprintWriter) {
        out.bytes(input.body().unwrap_or_default());
    }
}

/// A URI as the handler sees it, every part as it is: scheme and authority (which an HTTP/2
/// request carries in its URI), then path and query with their escapes and `?`, pairs in the
/// order they came. Neither scheme nor authority is ever empty when present, so an absent one
/// is written as empty.
fn write_uri(uri: &Uri, out: &mut FingerprintWriter) {
    out.bytes(uri.scheme_str().unwrap_or_default().as_bytes());
    out.bytes(uri.authority().map_or("", |authority| authority.as_str()).as_bytes());
    out.bytes(uri.path_and_query().map_or("", |target| target.as_str()).as_bytes());
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

/// The route template, which the fingerprint binds already.
impl FingerprintSource for MatchedPath {
    fn write(_: &RequestInput<'_>, _: &mut FingerprintWriter) {}
}

/// The method, which the fingerprint binds already.
impl FingerprintSource for Method {
    fn write(_: &RequestInput<'_>, _: &mut FingerprintWriter) {}
}
