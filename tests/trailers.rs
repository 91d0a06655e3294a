//! Trailers are part of the response: a body streamed with trailers after it (a checksum, a
//! gRPC-style status) reaches the client with them, and every replay carries them too, on
//! every store, through the transactional mode and over a real socket. Hop-by-hop names and
//! cookies are never replayed, and trailers count toward the store's body limit.

mod cluster_common;
mod common;
mod pg_common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};
use idem_runtime::postgres::Tx;
use idem_runtime::store::{LocalTier, MemoryStore, PgStore, RedisStore, Store};
use idem_runtime::testkit::{fresh_key, Fault, FaultyStore, Operation};
use idem_runtime::{idempotent, Idempotency};
use tower::ServiceExt as _;

const CHECKSUM: &str = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:";
const DATA: [&str; 2] = ["part one, ", "part two"];

/// How many times a handler ran.
type Runs = Arc<AtomicUsize>;

/// A 201 whose body is streamed as two data frames, then trailers: a checksum and a status
/// (replayed), a hop-by-hop name and a cookie (never replayed). `slowly`: the body waits before
/// each frame, as a real stream does, instead of being ready at once.
fn streamed(slowly: bool) -> Response {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static(CHECKSUM));
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    trailers.insert(header::SET_COOKIE, HeaderValue::from_static("session=abc"));
    let frames =
        [Frame::data(Bytes::from_static(DATA[0].as_bytes())), Frame::data(Bytes::from_static(DATA[1].as_bytes()))]
            .into_iter()
            .chain([Frame::trailers(trailers)]);
    let frames = futures_util::stream::iter(frames).then(move |frame| async move {
        if slowly {
            tokio::task::yield_now().await;
        }
        Ok::<_, Infallible>(frame)
    });
    let mut response = Response::new(Body::new(StreamBody::new(frames)));
    *response.status_mut() = StatusCode::CREATED;
    // Announced, as HTTP/1.1 needs for the trailers to be sent.
    response.headers_mut().insert(header::TRAILER, HeaderValue::from_static("x-checksum, grpc-status, keep-alive"));
    response
}

#[idempotent(required)]
async fn at_once(State(runs): State<Runs>) -> Response {
    runs.fetch_add(1, Ordering::SeqCst);
    streamed(false)
}

#[idempotent(required)]
async fn slowly(State(runs): State<Runs>) -> Response {
    runs.fetch_add(1, Ordering::SeqCst);
    streamed(true)
}

fn app(store: impl Store) -> (Router, Runs) {
    let runs = Runs::default();
    let router = Router::new()
        .route("/at-once", post(at_once))
        .route("/slowly", post(slowly))
        .layer(Idempotency::new(store))
        .with_state(runs.clone());
    (router, runs)
}

/// A response as the client reads it: frame by frame, to the trailers.
struct Seen {
    status: StatusCode,
    headers: HeaderMap,
    data: Bytes,
    trailers: Option<HeaderMap>,
}

impl Seen {
    fn replayed(&self) -> bool {
        self.headers.get("idempotent-replayed").is_some_and(|v| v == "true")
    }

    fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers.as_ref()?.get(name).map(|v| v.to_str().unwrap())
    }

    /// The handler's response: status, data, and every trailer it sent.
    fn assert_first(&self) {
        assert_eq!(self.status, StatusCode::CREATED);
        assert!(!self.replayed());
        assert_eq!(self.data, DATA.concat());
        assert_eq!(self.trailer("x-checksum"), Some(CHECKSUM));
        assert_eq!(self.trailer("grpc-status"), Some("0"));
        assert_eq!(self.trailer("keep-alive"), Some("timeout=5"));
    }

    /// Its replay: the same status and data, and the trailers a replay repeats.
    fn assert_replay(&self) {
        assert_eq!(self.status, StatusCode::CREATED);
        assert!(self.replayed());
        assert_eq!(self.data, DATA.concat());
        assert_eq!(self.trailer("x-checksum"), Some(CHECKSUM), "trailers: {:?}", self.trailers);
        assert_eq!(self.trailer("grpc-status"), Some("0"));
        assert_eq!(self.trailer("keep-alive"), None, "a hop-by-hop trailer is never replayed");
        assert_eq!(self.trailer("set-cookie"), None, "a cookie is never replayed");
    }
}

async fn send(router: &Router, path: &str, key: &str) -> Seen {
    let request = Request::post(path).header("idempotency-key", key).body(Body::empty()).unwrap();
    let (parts, body) = router.clone().oneshot(request).await.unwrap().into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    Seen { status: parts.status, headers: parts.headers, data: collected.to_bytes(), trailers }
}

/// On `store`, a body ready at once and one produced slowly: each first response carries its
/// trailers, and each replay the replayable ones; the handler runs once per key.
async fn trailers_are_replayed_from(store: impl Store) {
    let (router, runs) = app(store);
    for path in ["/at-once", "/slowly"] {
        let key = fresh_key().to_hex();
        send(&router, path, &key).await.assert_first();
        send(&router, path, &key).await.assert_replay();
        send(&router, path, &key).await.assert_replay();
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn trailers_are_replayed_from_the_embedded_store() {
    trailers_are_replayed_from(MemoryStore::new()).await;
}

#[tokio::test]
async fn trailers_are_replayed_from_a_local_tier() {
    trailers_are_replayed_from(LocalTier::new(MemoryStore::new())).await;
}

async fn redis(url: String) -> RedisStore {
    RedisStore::builder(url).prefix("idem-test:trailers:").new_key_space().connect().await.expect("Redis is reachable")
}

#[tokio::test]
async fn trailers_are_replayed_from_redis() {
    let Some(url) = common::redis_url("trailers_are_replayed_from_redis") else { return };
    trailers_are_replayed_from(redis(url.clone()).await).await;
    trailers_are_replayed_from(LocalTier::new(redis(url).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_are_replayed_from_a_redis_cluster() {
    let Some(cluster) = cluster_common::RedisCluster::start("trailers on a cluster") else { return };
    let store = RedisStore::cluster_builder(cluster.urls()).prefix("trailers:").new_key_space().connect().await;
    trailers_are_replayed_from(store.expect("the cluster")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_are_replayed_from_postgres() {
    let Some(schema) = pg_common::TestSchema::create("trailers_are_replayed_from_postgres").await else { return };
    trailers_are_replayed_from(schema.store().await).await;
}

#[derive(Clone)]
struct TxApp {
    store: PgStore,
    runs: Runs,
}

impl FromRef<TxApp> for PgStore {
    fn from_ref(app: &TxApp) -> PgStore {
        app.store.clone()
    }
}

#[idempotent(required)]
async fn in_transaction(State(app): State<TxApp>, mut tx: Tx) -> Response {
    app.runs.fetch_add(1, Ordering::SeqCst);
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    streamed(true)
}

// On several threads: the schema's drop blocks its thread, while the transaction a replay
// dropped still waits to be rolled back by the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_are_replayed_by_a_transactional_handler() {
    let test = "trailers_are_replayed_by_a_transactional_handler";
    let Some(schema) = pg_common::TestSchema::create(test).await else { return };
    let app = TxApp { store: schema.store().await, runs: Runs::default() };
    let router = Router::new().route("/tx", post(in_transaction)).with_state(app.clone());
    let key = fresh_key().to_hex();
    send(&router, "/tx", &key).await.assert_first();
    send(&router, "/tx", &key).await.assert_replay();
    assert_eq!(app.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn trailers_count_toward_the_body_limit() {
    // The data alone fits the limit exactly; with its trailers the response does not.
    let limit = DATA.concat().len();
    let (router, runs) = app(MemoryStore::builder().max_body_bytes(limit).build());
    let first = send(&router, "/slowly", "too-large").await;
    first.assert_first();
    let replay = send(&router, "/slowly", "too-large").await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert!(replay.replayed());
    assert_eq!(replay.trailers, None);
    let problem: serde_json::Value = serde_json::from_slice(&replay.data).unwrap();
    assert_eq!(problem["type"], "urn:idem:problem:body-not-stored", "{problem}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// The trailer lines at the end of a chunked body read off the wire, lower-cased.
fn wire_trailers(wire: &common::Wire) -> Vec<String> {
    let (_, trailers) = wire.body.rsplit_once("\r\n0\r\n").unwrap_or_else(|| panic!("not chunked: {wire:?}"));
    trailers.lines().filter(|line| !line.is_empty()).map(str::to_ascii_lowercase).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_reach_an_http1_client_on_the_first_response_and_on_the_replay() {
    // A record write that takes a while: the trailers, which end the response on the wire, must
    // not reach the client before its record is stored, or a retry would find the key in flight.
    let store = FaultyStore::new(MemoryStore::new());
    store.always(Operation::Complete, Fault::Delay(Duration::from_millis(200)));
    let (router, runs) = app(store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    for path in ["/at-once", "/slowly"] {
        let key = fresh_key().to_hex();
        let send = move || {
            let headers = [("Idempotency-Key", key.as_str()), ("TE", "trailers")];
            common::wire(addr, "POST", path, &headers, "")
        };
        let first = tokio::task::spawn_blocking(send.clone()).await.unwrap();
        assert_eq!(first.status, 201);
        assert!(!first.replayed());
        let trailers = wire_trailers(&first);
        assert!(trailers.contains(&format!("x-checksum: {}", CHECKSUM.to_ascii_lowercase())), "{first:?}");
        assert!(trailers.contains(&"grpc-status: 0".to_owned()), "{first:?}");
        let replay = tokio::task::spawn_blocking(send).await.unwrap();
        assert_eq!(replay.status, 201);
        assert!(replay.replayed());
        let trailers = wire_trailers(&replay);
        assert!(trailers.contains(&format!("x-checksum: {}", CHECKSUM.to_ascii_lowercase())), "{replay:?}");
        assert!(trailers.contains(&"grpc-status: 0".to_owned()), "{replay:?}");
        assert!(!trailers.iter().any(|line| line.starts_with("keep-alive")), "{replay:?}");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}
