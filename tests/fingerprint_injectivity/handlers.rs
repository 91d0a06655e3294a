//! The handlers under test, one per kind of input a handler can read, each answering with what
//! it observed and the number of the run that answered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use axum::body::Bytes;
use axum::extract::{Form, FromRequestParts, Query, RawForm, RawQuery};
use axum::http::{request::Parts, StatusCode, Uri};
use axum::routing::post;
use axum::{Json, Router};
use idem_runtime::fingerprint::{FingerprintSource, FingerprintWriter, RequestInput};
use idem_runtime::idempotent;
use idem_runtime::store::MemoryStore;
use idem_runtime::Idempotency;
use serde_json::Value;

/// Executions of every handler, numbered: a response names the run that made it.
static RUNS: AtomicU64 = AtomicU64::new(0);

fn ran(observed: impl std::fmt::Debug) -> (StatusCode, String) {
    (StatusCode::CREATED, format!("run {}: {observed:?}", RUNS.fetch_add(1, Ordering::SeqCst)))
}

/// An extractor of the `X-Signature` header's bytes, fingerprinted as they are.
struct Signature(Vec<u8>);

impl<S: Send + Sync> FromRequestParts<S> for Signature {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, StatusCode> {
        parts.headers.get("x-signature").map(|v| Self(v.as_bytes().to_vec())).ok_or(StatusCode::BAD_REQUEST)
    }
}

impl FingerprintSource for Signature {
    fn write(input: &RequestInput<'_>, out: &mut FingerprintWriter) {
        if let Some(v) = input.head().headers.get("x-signature") {
            out.bytes(v.as_bytes());
        }
    }
}

#[idempotent(required)]
async fn nothing() -> (StatusCode, String) {
    ran(())
}

#[idempotent(required)]
async fn uri(uri: Uri) -> (StatusCode, String) {
    ran(uri)
}

#[idempotent(required)]
async fn query(Query(pairs): Query<Vec<(String, String)>>) -> (StatusCode, String) {
    ran(pairs)
}

#[idempotent(required)]
async fn raw_query(RawQuery(query): RawQuery) -> (StatusCode, String) {
    ran(query)
}

#[idempotent(required)]
async fn raw_form(RawForm(form): RawForm) -> (StatusCode, String) {
    ran(form)
}

#[idempotent(required)]
async fn form(Form(pairs): Form<Vec<(String, String)>>) -> (StatusCode, String) {
    ran(pairs)
}

#[idempotent(required)]
async fn bytes(body: Bytes) -> (StatusCode, String) {
    ran(body)
}

#[idempotent(required)]
async fn string(body: String) -> (StatusCode, String) {
    ran(body)
}

#[idempotent(required)]
async fn json(Json(body): Json<Value>) -> (StatusCode, String) {
    ran(body)
}

#[idempotent(required)]
async fn header(Signature(signature): Signature) -> (StatusCode, String) {
    ran(signature)
}

/// What a handler reads of the request, besides the target every fingerprint binds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Reads {
    Nothing,
    Uri,
    Query,
    RawQuery,
    Form,
    RawForm,
    Bytes,
    String,
    Json,
    Header,
}

pub(crate) const HANDLERS: [Reads; 10] = [
    Reads::Nothing,
    Reads::Uri,
    Reads::Query,
    Reads::RawQuery,
    Reads::Form,
    Reads::RawForm,
    Reads::Bytes,
    Reads::String,
    Reads::Json,
    Reads::Header,
];

impl Reads {
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Self::Nothing => "/nothing/",
            Self::Uri => "/uri/",
            Self::Query => "/query/",
            Self::RawQuery => "/raw-query/",
            Self::Form => "/form/",
            Self::RawForm => "/raw-form/",
            Self::Bytes => "/bytes/",
            Self::String => "/string/",
            Self::Json => "/json/",
            Self::Header => "/header/",
        }
    }
}

pub(crate) static APP: LazyLock<Router> = LazyLock::new(|| {
    let route = |router: Router, reads: Reads, handler| router.route(&format!("{}{{*rest}}", reads.prefix()), handler);
    let router = [
        (Reads::Nothing, post(nothing)),
        (Reads::Uri, post(uri)),
        (Reads::Query, post(query)),
        (Reads::RawQuery, post(raw_query)),
        (Reads::Form, post(form)),
        (Reads::RawForm, post(raw_form)),
        (Reads::Bytes, post(bytes)),
        (Reads::String, post(string)),
        (Reads::Json, post(json)),
        (Reads::Header, post(header)),
    ]
    .into_iter()
    .fold(Router::new(), |router, (reads, handler)| route(router, reads, handler));
    router.layer(Idempotency::new(MemoryStore::new()))
});
