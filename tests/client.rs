//! The client side (SPEC §9) end to end: a real idem server on a real socket, the async
//! middleware and the blocking client, and a proxy that loses responses.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use idem_runtime::client::{self, blocking, IdempotencyKeyExt as _};
use idem_runtime::idempotent;
use idem_runtime::key::IdempotencyKey;

#[derive(Default)]
struct Server {
    /// (method, path, Idempotency-Key) of every request that reached the server.
    seen: Mutex<Vec<(String, String, Option<String>)>>,
    executions: AtomicUsize,
    failures_left: AtomicUsize,
}

type Shared = Arc<Server>;

impl Server {
    fn keys(&self, path: &str) -> Vec<Option<String>> {
        self.seen.lock().unwrap().iter().filter(|(_, p, _)| p == path).map(|(_, _, k)| k.clone()).collect()
    }
}

async fn record(State(server): State<Shared>, req: Request, next: Next) -> Response {
    let key = req.headers().get("idempotency-key").map(|v| v.to_str().unwrap().to_owned());
    server.seen.lock().unwrap().push((req.method().to_string(), req.uri().path().to_owned(), key));
    next.run(req).await
}

#[idempotent(required)]
async fn create(State(server): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    if server.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
    }
    let n = server.executions.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::CREATED, Json(serde_json::json!({ "order": n, "body": body }))).into_response()
}

#[idempotent(required)]
async fn slow(State(server): State<Shared>) -> Response {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = server.executions.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::CREATED, Json(serde_json::json!({ "order": n }))).into_response()
}

async fn list(State(server): State<Shared>) -> Json<usize> {
    Json(server.executions.load(Ordering::SeqCst))
}

struct TestServer {
    addr: SocketAddr,
    proxy: SocketAddr,
    state: Shared,
    _runtime: tokio::runtime::Runtime,
}

/// The server (and a proxy losing `lose` responses), on a runtime of their own so that blocking
/// clients can run on the test thread.
fn start(failures: usize, lose: usize) -> TestServer {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let state = Shared::default();
    state.failures_left.store(failures, Ordering::SeqCst);
    let app = Router::new()
        .route("/orders", post(create).get(list))
        .route("/slow", post(slow))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state.clone());
    let (addr, proxy) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, common::lossy_proxy(addr, lose).await)
    });
    TestServer { addr, proxy, state, _runtime: runtime }
}

/// The clients' runtime, apart from the server's.
fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn assert_one_key_on_every_attempt(keys: &[Option<String>], attempts: usize) -> String {
    assert_eq!(keys.len(), attempts, "attempts: {keys:?}");
    let first = keys[0].clone().expect("a key was sent");
    assert!(keys.iter().all(|k| k.as_deref() == Some(&first)), "one key on every attempt: {keys:?}");
    first
}

#[test]
fn a_transient_5xx_then_success_sends_one_key_and_returns_one_success() {
    let server = start(1, 0);
    client_runtime().block_on(async {
        let http = client::client(reqwest::Client::new());
        let response = http
            .post(format!("http://{}/orders", server.addr))
            .json(&serde_json::json!({"a": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let key = assert_one_key_on_every_attempt(&server.state.keys("/orders"), 2);
        assert!(uuid::Uuid::parse_str(&key).is_ok_and(|u| u.get_version_num() == 7), "a UUIDv7: {key}");
        assert_eq!(server.state.executions.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn a_lost_response_is_retried_and_replayed_and_one_order_exists() {
    let server = start(0, 1);
    client_runtime().block_on(async {
        let http = client::client(reqwest::Client::new());
        let response = http
            .post(format!("http://{}/orders", server.proxy))
            .json(&serde_json::json!({"a": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        assert!(client::is_replayed(response.headers()), "the retry got the stored response");
        assert_one_key_on_every_attempt(&server.state.keys("/orders"), 2);
        assert_eq!(server.state.executions.load(Ordering::SeqCst), 1, "exactly one order");
    });
}

#[test]
fn a_per_call_key_is_sent_as_given_on_every_attempt() {
    let server = start(2, 0);
    client_runtime().block_on(async {
        let http = client::client(reqwest::Client::new());
        let key = IdempotencyKey::parse(b"caller-chosen-1").unwrap();
        let response =
            http.post(format!("http://{}/orders", server.addr)).idempotency_key(key).json(&1).send().await.unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(assert_one_key_on_every_attempt(&server.state.keys("/orders"), 3), "caller-chosen-1");
        // An explicit header wins too.
        let response = http
            .post(format!("http://{}/orders", server.addr))
            .header("Idempotency-Key", "by-header")
            .json(&2)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(server.state.keys("/orders").last().unwrap().as_deref(), Some("by-header"));
    });
}

#[test]
fn a_get_gets_no_key_and_a_422_is_not_retried() {
    let server = start(0, 0);
    client_runtime().block_on(async {
        let http = client::client(reqwest::Client::new());
        assert_eq!(http.get(format!("http://{}/orders", server.addr)).send().await.unwrap().status(), 200);
        assert_eq!(server.state.keys("/orders"), vec![None]);
        let key = || IdempotencyKey::parse(b"k-422").unwrap();
        http.post(format!("http://{}/orders", server.addr)).idempotency_key(key()).json(&1).send().await.unwrap();
        let mismatch =
            http.post(format!("http://{}/orders", server.addr)).idempotency_key(key()).json(&2).send().await.unwrap();
        assert_eq!(mismatch.status(), 422);
        assert_eq!(server.state.keys("/orders").len(), 3, "the 422 was final: one attempt");
    });
}

#[test]
fn an_in_flight_409_is_retried_after_retry_after_and_gets_the_replay() {
    let server = start(0, 0);
    client_runtime().block_on(async {
        let http = client::client(reqwest::Client::new());
        let url = format!("http://{}/slow", server.addr);
        let key = || IdempotencyKey::parse(b"k-409").unwrap();
        let (first, second) = tokio::join!(http.post(&url).idempotency_key(key()).send(), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            http.post(&url).idempotency_key(key()).send().await
        });
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!((first.status(), second.status()), (StatusCode::CREATED, StatusCode::CREATED));
        assert!(client::is_replayed(second.headers()));
        assert_eq!(server.state.keys("/slow").len(), 3, "first, the 409, the retry");
        assert_eq!(server.state.executions.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn blocking_client_has_the_same_guarantees() {
    // Transient 5xx then success.
    let server = start(1, 0);
    let http = blocking::Client::new(reqwest::blocking::Client::new());
    let response = http.post(format!("http://{}/orders", server.addr)).json(&1).send().unwrap();
    assert_eq!(response.status(), 201);
    assert_one_key_on_every_attempt(&server.state.keys("/orders"), 2);

    // A lost response: retried, replayed, one order.
    let server = start(0, 1);
    let response = http.post(format!("http://{}/orders", server.proxy)).json(&1).send().unwrap();
    assert_eq!(response.status(), 201);
    assert!(client::is_replayed(response.headers()));
    assert_eq!(server.state.executions.load(Ordering::SeqCst), 1);

    // A per-call key on every attempt; a GET without a key; a 422 not retried.
    let server = start(1, 0);
    let key = || IdempotencyKey::parse(b"blocking-key").unwrap();
    let url = format!("http://{}/orders", server.addr);
    assert_eq!(http.post(&url).idempotency_key(key()).json(&1).send().unwrap().status(), 201);
    assert_eq!(assert_one_key_on_every_attempt(&server.state.keys("/orders"), 2), "blocking-key");
    assert_eq!(http.get(&url).send().unwrap().status(), 200);
    assert_eq!(server.state.keys("/orders").last().unwrap(), &None);
    assert_eq!(http.post(&url).idempotency_key(key()).json(&2).send().unwrap().status(), 422);
    assert_eq!(server.state.keys("/orders").len(), 4);
}
