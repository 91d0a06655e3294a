//! A router of annotated handlers that count their executions, and helpers to drive it.
#![allow(dead_code, unreachable_pub)]

pub mod crash;
pub mod demo;
pub mod json_values;
mod requests;
mod servers;

#[allow(unused_imports)] // Each test binary uses its part.
pub use self::requests::*;
#[allow(unused_imports)]
pub use self::servers::*;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use idem_runtime::fingerprint::Fingerprint;
use idem_runtime::idempotent;
use idem_runtime::record::Record;
use idem_runtime::store::{Claim, ClaimToken, MemoryStore, RecordKey, Store, StoreError};
use idem_runtime::Idempotency;

/// How many times each handler body ran.
#[derive(Default)]
pub struct Hits(Mutex<HashMap<&'static str, usize>>, std::sync::atomic::AtomicBool);

impl Hits {
    pub fn hit(&self, name: &'static str) -> usize {
        let mut map = self.0.lock().unwrap();
        let n = map.entry(name).or_default();
        *n += 1;
        *n
    }

    /// Lets every `/gated` handler finish.
    pub fn open_gate(&self) {
        self.1.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn get(&self, name: &'static str) -> usize {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

pub type Shared = Arc<Hits>;

fn created(n: usize, body: serde_json::Value) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::LOCATION, HeaderValue::from_str(&format!("/things/{n}")).unwrap());
    headers.insert(header::SET_COOKIE, HeaderValue::from_static("session=abc"));
    headers.insert(header::DATE, HeaderValue::from_static("Sun, 22 Nov 2026 12:00:00 GMT"));
    headers.insert("x-run", HeaderValue::from(n));
    (StatusCode::CREATED, headers, Json(serde_json::json!({ "run": n, "body": body }))).into_response()
}

#[idempotent(required)]
async fn required(State(hits): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    created(hits.hit("required"), body)
}

#[idempotent(optional)]
async fn optional(State(hits): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    created(hits.hit("optional"), body)
}

#[idempotent(required, ttl = "24h", scope = "pat")]
async fn pat(State(hits): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    created(hits.hit("pat"), body)
}

#[idempotent(required, scope = "global")]
async fn global(State(hits): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    created(hits.hit("global"), body)
}

#[idempotent(required, scope = header("X-Tenant"))]
async fn tenant_header(State(hits): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    created(hits.hit("tenant_header"), body)
}

/// The scope is the `X-Org` header, and its absence is the application's own 403.
fn org_of(parts: &Parts) -> Result<Vec<u8>, (StatusCode, &'static str)> {
    parts.headers.get("x-org").map(|v| v.as_bytes().to_vec()).ok_or((StatusCode::FORBIDDEN, "no org"))
}

#[idempotent(required, scope = with(org_of), skip(tenant))]
async fn with_scope(State(hits): State<Shared>, Path(tenant): Path<String>) -> Response {
    created(hits.hit("with_scope"), serde_json::json!(tenant))
}

#[idempotent(required, header = "Request-Id")]
async fn extra_header(State(hits): State<Shared>) -> Response {
    created(hits.hit("extra_header"), serde_json::Value::Null)
}

#[derive(serde::Deserialize)]
pub struct Page {
    pub n: Option<u32>,
}

#[idempotent(required)]
async fn query_path(State(hits): State<Shared>, Path(id): Path<u32>, Query(q): Query<Page>) -> Response {
    created(hits.hit("query_path"), serde_json::json!([id, q.n]))
}

#[idempotent(required, fingerprint(id))]
async fn only_path(State(hits): State<Shared>, Path(id): Path<u32>, Json(body): Json<serde_json::Value>) -> Response {
    created(hits.hit("only_path"), serde_json::json!([id, body]))
}

#[idempotent(required, lease = "10s")]
async fn slow(State(hits): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    hits.hit("slow_started");
    tokio::time::sleep(Duration::from_millis(400)).await;
    created(hits.hit("slow"), body)
}

#[idempotent(required)]
async fn gated(State(hits): State<Shared>) -> Response {
    hits.hit("gated_started");
    while !hits.1.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    created(hits.hit("gated"), serde_json::Value::Null)
}

#[idempotent(required, on_conflict = "wait", lease = "5s")]
async fn wait(State(hits): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    hits.hit("wait_started");
    tokio::time::sleep(Duration::from_millis(300)).await;
    created(hits.hit("wait"), body)
}

#[idempotent(required, lease = "300ms", ttl = "1m")]
async fn outlives_lease(State(hits): State<Shared>) -> Response {
    hits.hit("outlives_lease_started");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    created(hits.hit("outlives_lease"), serde_json::Value::Null)
}

#[idempotent(required)]
async fn panics_once(State(hits): State<Shared>) -> Response {
    if hits.hit("panics_once") == 1 {
        panic!("first run panics");
    }
    created(hits.get("panics_once"), serde_json::Value::Null)
}

#[idempotent(required)]
async fn fails_once(State(hits): State<Shared>) -> Response {
    if hits.hit("fails_once") == 1 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
    }
    created(hits.get("fails_once"), serde_json::Value::Null)
}

#[idempotent(required)]
async fn status(State(hits): State<Shared>, Path(code): Path<u16>) -> Response {
    hits.hit("status");
    StatusCode::from_u16(code).unwrap().into_response()
}

/// Stores a 409 (a final business conflict here) and releases 404 and 410 to 418.
#[idempotent(required, keep_status(409), release_status(404, 410..=418))]
async fn status_policy(State(hits): State<Shared>, Path(code): Path<u16>) -> Response {
    hits.hit("status_policy");
    StatusCode::from_u16(code).unwrap().into_response()
}

#[idempotent(required, replay_headers("Location", "set-cookie"))]
async fn allow_listed(State(hits): State<Shared>) -> Response {
    created(hits.hit("allow_listed"), serde_json::Value::Null)
}

#[idempotent(required, ttl = "1s")]
async fn short_ttl(State(hits): State<Shared>) -> Response {
    created(hits.hit("short_ttl"), serde_json::Value::Null)
}

#[idempotent(required)]
async fn big(State(hits): State<Shared>, Path(len): Path<usize>) -> Response {
    hits.hit("big");
    let mut response = (StatusCode::CREATED, vec![b'x'; len]).into_response();
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/big/1"));
    response
}

#[idempotent(required)]
async fn annotated_get(State(hits): State<Shared>) -> Response {
    created(hits.hit("annotated_get"), serde_json::Value::Null)
}

#[idempotent(required)]
async fn bytes(State(hits): State<Shared>, body: axum::body::Bytes) -> Response {
    created(hits.hit("bytes"), serde_json::json!(body.len()))
}

#[idempotent(required)]
pub async fn echo(Json(v): Json<serde_json::Value>) -> Json<serde_json::Value> {
    Json(v)
}

/// A `MemoryStore` that records what it is handed (every byte of the keys, fingerprints and
/// records, and the fingerprints one by one) and whose record writes fail while `writes_fail`
/// is set.
#[derive(Clone, Default)]
pub struct Spy {
    pub inner: MemoryStore,
    pub bytes: Arc<Mutex<Vec<u8>>>,
    pub fingerprints: Arc<Mutex<Vec<Fingerprint>>>,
    pub writes_fail: Arc<std::sync::atomic::AtomicBool>,
}

impl Store for Spy {
    async fn claim(&self, key: &RecordKey, fingerprint: &Fingerprint, lease: Duration) -> Result<Claim, StoreError> {
        {
            let mut bytes = self.bytes.lock().unwrap();
            bytes.extend_from_slice(key.as_bytes());
            bytes.extend_from_slice(key.to_hex().as_bytes());
            bytes.extend_from_slice(fingerprint.as_bytes());
        }
        self.fingerprints.lock().unwrap().push(*fingerprint);
        self.inner.claim(key, fingerprint, lease).await
    }
    async fn complete(&self, key: &RecordKey, token: ClaimToken, record: Record) -> Result<(), StoreError> {
        if self.writes_fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable("writes are failing".into()));
        }
        self.bytes.lock().unwrap().extend_from_slice(&record.encode());
        self.fingerprints.lock().unwrap().push(record.fingerprint);
        self.inner.complete(key, token, record).await
    }
    async fn release(&self, key: &RecordKey, token: ClaimToken) -> Result<(), StoreError> {
        self.inner.release(key, token).await
    }
    async fn renew(&self, key: &RecordKey, token: ClaimToken, lease: Duration) -> Result<(), StoreError> {
        self.inner.renew(key, token, lease).await
    }
}

/// A store that is never reachable.
pub struct Down;

impl Store for Down {
    async fn claim(&self, _: &RecordKey, _: &Fingerprint, _: Duration) -> Result<Claim, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn complete(&self, _: &RecordKey, _: ClaimToken, _: Record) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn release(&self, _: &RecordKey, _: ClaimToken) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn renew(&self, _: &RecordKey, _: ClaimToken, _: Duration) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
}

/// The test router, with `store` for every annotated route.
pub fn app_with(store: impl Store) -> (Router, Shared) {
    app_with_layer(Idempotency::new(store))
}

/// The test router behind `layer`.
pub fn app_with_layer(layer: Idempotency) -> (Router, Shared) {
    let hits = Shared::default();
    let router = Router::new()
        .route("/required", post(required))
        .route("/optional", post(optional))
        .route("/pat", post(pat))
        .route("/other-pat", post(pat))
        .route("/global", post(global))
        .route("/tenant", post(tenant_header))
        .route("/with/{tenant}", post(with_scope))
        .route("/extra-header", post(extra_header))
        .route("/items/{id}", post(query_path))
        .route("/only-path/{id}", post(only_path))
        .route("/slow", post(slow))
        .route("/wait", post(wait))
        .route("/gated", post(gated))
        .route("/outlives-lease", post(outlives_lease))
        .route("/panics-once", post(panics_once))
        .route("/fails-once", post(fails_once))
        .route("/status/{code}", post(status))
        .route("/short-ttl", post(short_ttl))
        .route("/status-policy/{code}", post(status_policy))
        .route("/allow-listed", post(allow_listed))
        .route("/big/{len}", post(big))
        .route("/annotated-get", get(annotated_get).put(annotated_get))
        .route("/bytes", post(bytes))
        .layer(layer)
        .with_state(hits.clone());
    (router, hits)
}

pub fn app() -> (Router, Shared) {
    app_with(MemoryStore::new())
}
