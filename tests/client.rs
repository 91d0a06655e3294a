//! The client side end to end: a real idem server on a real socket, the async middleware and
//! the blocking client, and a proxy that loses responses.

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
use idem_runtime::client::{self, blocking, ClientConfig, IdempotencyKeyExt as _};
use idem_runtime::idempotent;
use idem_runtime::key::IdempotencyKey;
use reqwest::header::HeaderName;
use tokio::sync::Semaphore;

/// The header names a server may read a key from: the two standard ones and the one `/custom`
/// adds with `header = "X-Request-Key"`.
const KEY_HEADERS: [&str; 3] = ["idempotency-key", "x-idempotency-key", "x-request-key"];

/// The key headers a request carried, as (name, value).
type KeyHeaders = Vec<(String, String)>;

struct Server {
    /// (path, key headers) of every request that reached the server.
    seen: Mutex<Vec<(String, KeyHeaders)>>,
    executions: AtomicUsize,
    failures_left: AtomicUsize,
    /// Holds `/gated` in flight until a permit is added.
    gate: Semaphore,
    /// Gets a permit when `/gated` starts running.
    entered: Semaphore,
    /// The request to `/gated` (counting from 1) on whose arrival the gate opens; 0: never.
    open_gate_at: AtomicUsize,
}

type Shared = Arc<Server>;

impl Server {
    fn new(failures: usize) -> Shared {
        Arc::new(Server {
            seen: Mutex::default(),
            executions: AtomicUsize::new(0),
            failures_left: AtomicUsize::new(failures),
            gate: Semaphore::new(0),
            entered: Semaphore::new(0),
            open_gate_at: AtomicUsize::new(0),
        })
    }

    /// The key of every request to `path`; a request carrying two key headers fails the test.
    fn keys(&self, path: &str) -> Vec<Option<String>> {
        self.key_headers(path)
            .into_iter()
            .map(|headers| match headers.as_slice() {
                [] => None,
                [(_, value)] => Some(value.clone()),
                more => panic!("a request carried {} key headers: {more:?}", more.len()),
            })
            .collect()
    }

    /// The key headers of every request to `path`.
    fn key_headers(&self, path: &str) -> Vec<KeyHeaders> {
        self.seen.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, k)| k.clone()).collect()
    }
}

async fn record(State(server): State<Shared>, req: Request, next: Next) -> Response {
    let keys = KEY_HEADERS
        .iter()
        .flat_map(|name| {
            req.headers().get_all(*name).iter().map(|v| (name.to_string(), v.to_str().unwrap().to_owned()))
        })
        .collect();
    let path = req.uri().path().to_owned();
    let arrived = {
        let mut seen = server.seen.lock().unwrap();
        seen.push((path.clone(), keys));
        seen.iter().filter(|(p, _)| p == "/gated").count()
    };
    if path == "/gated" && arrived == server.open_gate_at.load(Ordering::SeqCst) {
        server.gate.add_permits(1);
    }
    next.run(req).await
}

async fn order(server: &Server, body: serde_json::Value) -> Response {
    if server.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
    }
    let n = server.executions.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::CREATED, Json(serde_json::json!({ "order": n, "body": body }))).into_response()
}

#[idempotent(required)]
async fn create(State(server): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    order(&server, body).await
}

#[idempotent(required, header = "X-Request-Key")]
async fn custom(State(server): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    order(&server, body).await
}

#[idempotent(required)]
async fn slow(State(server): State<Shared>) -> Response {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = server.executions.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::CREATED, Json(serde_json::json!({ "order": n }))).into_response()
}

/// Stays in flight until the gate opens, well past its 2 s lease (renewed meanwhile).
#[idempotent(required, lease = "2s")]
async fn gated(State(server): State<Shared>) -> Response {
    server.entered.add_permits(1);
    server.gate.acquire().await.unwrap().forget();
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
    runtime: tokio::runtime::Runtime,
}

/// The server (and a proxy losing `lose` responses), on a runtime of their own so that blocking
/// clients can run on the test thread.
fn start(failures: usize, lose: usize) -> TestServer {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let state = Server::new(failures);
    let app = Router::new()
        .route("/orders", post(create).get(list))
        .route("/custom", post(custom))
        .route("/slow", post(slow))
        .route("/gated", post(gated))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state.clone());
    let (addr, proxy) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, common::lossy_proxy(addr, lose).await)
    });
    TestServer { addr, proxy, state, runtime }
}

impl TestServer {
    /// Sends a first attempt with `key` to `/gated` (a plain client, no retries) and returns
    /// once its handler runs. [`finish`](Self::finish) opens the gate and returns its status.
    fn first_attempt_in_flight(&self, key: &'static str) -> tokio::task::JoinHandle<StatusCode> {
        let url = format!("http://{}/gated", self.addr);
        let first = self.runtime.spawn(async move {
            reqwest::Client::new().post(url).header("idempotency-key", key).send().await.unwrap().status()
        });
        self.runtime.block_on(self.state.entered.acquire()).unwrap().forget();
        first
    }

    fn finish(&self, first: tokio::task::JoinHandle<StatusCode>) -> StatusCode {
        self.state.gate.add_permits(1);
        self.runtime.block_on(first).unwrap()
    }

    /// How many requests reached `/gated` after the first attempt.
    fn retrying_attempts(&self) -> usize {
        self.keys("/gated").len() - 1
    }

    fn keys(&self, path: &str) -> Vec<Option<String>> {
        self.state.keys(path)
    }
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

fn x_request_key() -> HeaderName {
    HeaderName::from_static("x-request-key")
}

/// A client whose retry count allows no retry at all: only `deadline` keeps a call going.
fn no_retry_by_count(deadline: Duration) -> ClientConfig {
    ClientConfig::new().max_retries(0).deadline(deadline)
}

#[test]
fn a_transient_5xx_then_success_sends_one_key_and_returns_one_success() {
    let server = start(1, 0);
    client_runtime().block_on(async {
        let http = client::wrap(reqwest::Client::new());
        let response = http
            .post(format!("http://{}/orders", server.addr))
            .json(&serde_json::json!({"a": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let key = assert_one_key_on_every_attempt(&server.keys("/orders"), 2);
        assert!(uuid::Uuid::parse_str(&key).is_ok_and(|u| u.get_version_num() == 7), "a UUIDv7: {key}");
        assert_eq!(server.state.executions.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn a_lost_response_is_retried_and_replayed_and_one_order_exists() {
    let server = start(0, 1);
    client_runtime().block_on(async {
        let http = client::wrap(reqwest::Client::new());
        let response = http
            .post(format!("http://{}/orders", server.proxy))
            .json(&serde_json::json!({"a": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        assert!(client::is_replayed(response.headers()), "the retry got the stored response");
        assert_one_key_on_every_attempt(&server.keys("/orders"), 2);
        assert_eq!(server.state.executions.load(Ordering::SeqCst), 1, "exactly one order");
    });
}

#[test]
fn a_per_call_key_is_sent_as_given_on_every_attempt() {
    let server = start(2, 0);
    client_runtime().block_on(async {
        let http = client::wrap(reqwest::Client::new());
        let key = IdempotencyKey::parse(b"caller-chosen-1").unwrap();
        let response =
            http.post(format!("http://{}/orders", server.addr)).idempotency_key(key).json(&1).send().await.unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(assert_one_key_on_every_attempt(&server.keys("/orders"), 3), "caller-chosen-1");
        // An explicit header wins too.
        let response = http
            .post(format!("http://{}/orders", server.addr))
            .header("Idempotency-Key", "by-header")
            .json(&2)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(server.keys("/orders").last().unwrap().as_deref(), Some("by-header"));
    });
}

#[test]
fn a_get_gets_no_key_and_a_422_is_not_retried() {
    let server = start(0, 0);
    client_runtime().block_on(async {
        let http = client::wrap(reqwest::Client::new());
        assert_eq!(http.get(format!("http://{}/orders", server.addr)).send().await.unwrap().status(), 200);
        assert_eq!(server.keys("/orders"), vec![None]);
        let key = || IdempotencyKey::parse(b"k-422").unwrap();
        http.post(format!("http://{}/orders", server.addr)).idempotency_key(key()).json(&1).send().await.unwrap();
        let mismatch =
            http.post(format!("http://{}/orders", server.addr)).idempotency_key(key()).json(&2).send().await.unwrap();
        assert_eq!(mismatch.status(), 422);
        assert_eq!(server.keys("/orders").len(), 3, "the 422 was final: one attempt");
    });
}

#[test]
fn an_in_flight_409_is_retried_after_retry_after_and_gets_the_replay() {
    let server = start(0, 0);
    client_runtime().block_on(async {
        let http = client::wrap(reqwest::Client::new());
        let url = format!("http://{}/slow", server.addr);
        let key = || IdempotencyKey::parse(b"k-409").unwrap();
        let (first, second) = tokio::join!(http.post(&url).idempotency_key(key()).send(), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            http.post(&url).idempotency_key(key()).send().await
        });
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!((first.status(), second.status()), (StatusCode::CREATED, StatusCode::CREATED));
        assert!(client::is_replayed(second.headers()));
        assert_eq!(server.keys("/slow").len(), 3, "first, the 409, the retry");
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
    assert_one_key_on_every_attempt(&server.keys("/orders"), 2);

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
    assert_eq!(assert_one_key_on_every_attempt(&server.keys("/orders"), 2), "blocking-key");
    assert_eq!(http.get(&url).send().unwrap().status(), 200);
    assert_eq!(server.keys("/orders").last().unwrap(), &None);
    assert_eq!(http.post(&url).idempotency_key(key()).json(&2).send().unwrap().status(), 422);
    assert_eq!(server.keys("/orders").len(), 4);
}

#[test]
fn an_in_flight_409_is_retried_until_the_deadline_not_only_as_often_as_the_count_allows() {
    let server = start(0, 0);
    // The gate opens on the retrying call's second attempt, one more than its retry count allows.
    server.state.open_gate_at.store(1 + 2, Ordering::SeqCst);
    let first = server.first_attempt_in_flight("k-deadline");
    let (status, replayed) = client_runtime().block_on(async {
        // The server's lease is 2 s; the deadline outlasts it, as the default outlasts the default lease.
        let http = no_retry_by_count(Duration::from_secs(5)).build(reqwest::Client::new());
        let key = IdempotencyKey::parse(b"k-deadline").unwrap();
        let response = http.post(format!("http://{}/gated", server.addr)).idempotency_key(key).send().await.unwrap();
        (response.status(), client::is_replayed(response.headers()))
    });
    assert_eq!(server.finish(first), StatusCode::CREATED);
    assert_eq!((status, replayed), (StatusCode::CREATED, true), "the call got the first attempt's response");
    assert!(server.retrying_attempts() >= 2, "attempts: {}", server.retrying_attempts());
    assert_one_key_on_every_attempt(&server.keys("/gated"), server.retrying_attempts() + 1);
    assert_eq!(server.state.executions.load(Ordering::SeqCst), 1, "the handler ran once");
}

#[test]
fn a_deadline_shorter_than_the_first_attempt_returns_the_409_once_no_attempt_fits_before_it() {
    let server = start(0, 0);
    let first = server.first_attempt_in_flight("k-short");
    let status = client_runtime().block_on(async {
        // In-flight 409s (`Retry-After: 1`) until 1.5 s: attempts at 0 and 1 s, none at 2 s.
        let http = no_retry_by_count(Duration::from_millis(1500)).build(reqwest::Client::new());
        let key = IdempotencyKey::parse(b"k-short").unwrap();
        http.post(format!("http://{}/gated", server.addr)).idempotency_key(key).send().await.unwrap().status()
    });
    assert_eq!(status, StatusCode::CONFLICT, "the first attempt was still running at the deadline");
    assert_eq!(server.retrying_attempts(), 2, "a third attempt could not start before the deadline");
    assert_eq!(server.finish(first), StatusCode::CREATED);
    assert_eq!(server.state.executions.load(Ordering::SeqCst), 1);
}

#[test]
fn a_configured_key_header_carries_the_only_key_and_the_retry_gets_the_replay() {
    let server = start(0, 1);
    client_runtime().block_on(async {
        let http = ClientConfig::new().key_header(x_request_key()).build(reqwest::Client::new());
        let response = http.post(format!("http://{}/custom", server.proxy)).json(&1).send().await.unwrap();
        assert_eq!(response.status(), 201);
        assert!(client::is_replayed(response.headers()), "the retry got the stored response");
        let sent = server.state.key_headers("/custom");
        assert_eq!(sent.len(), 2, "the lost attempt and its retry: {sent:?}");
        assert!(sent.iter().all(|keys| keys.len() == 1 && keys[0] == sent[0][0]), "one key: {sent:?}");
        assert_eq!(sent[0][0].0, "x-request-key");
        assert_eq!(server.state.executions.load(Ordering::SeqCst), 1);

        // A key the caller already put under that name is the only one sent.
        let response = http
            .post(format!("http://{}/custom", server.addr))
            .header("X-Request-Key", "callers-own")
            .json(&2)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        let last = server.state.key_headers("/custom").pop().unwrap();
        assert_eq!(last, vec![("x-request-key".to_owned(), "callers-own".to_owned())]);
        // So is one under a standard name.
        let response =
            http.post(format!("http://{}/custom", server.addr)).header("Idempotency-Key", "std").json(&3).send().await;
        assert_eq!(response.unwrap().status(), 201);
        let last = server.state.key_headers("/custom").pop().unwrap();
        assert_eq!(last, vec![("idempotency-key".to_owned(), "std".to_owned())]);
        // A per-call key goes under the configured name.
        let key = IdempotencyKey::parse(b"per-call").unwrap();
        let response = http.post(format!("http://{}/custom", server.addr)).idempotency_key(key).json(&4).send().await;
        assert_eq!(response.unwrap().status(), 201);
        let last = server.state.key_headers("/custom").pop().unwrap();
        assert_eq!(last, vec![("x-request-key".to_owned(), "per-call".to_owned())]);
    });
}

#[test]
fn blocking_client_retries_an_in_flight_409_until_the_deadline() {
    let server = start(0, 0);
    server.state.open_gate_at.store(1 + 2, Ordering::SeqCst);
    let first = server.first_attempt_in_flight("k-blocking-deadline");
    let config = no_retry_by_count(Duration::from_secs(5));
    let http = blocking::Client::with_config(reqwest::blocking::Client::new(), config);
    let key = IdempotencyKey::parse(b"k-blocking-deadline").unwrap();
    let response = http.post(format!("http://{}/gated", server.addr)).idempotency_key(key).send().unwrap();
    assert_eq!(server.finish(first), StatusCode::CREATED);
    assert_eq!(response.status(), 201);
    assert!(client::is_replayed(response.headers()));
    assert!(server.retrying_attempts() >= 2, "attempts: {}", server.retrying_attempts());
    assert_eq!(server.state.executions.load(Ordering::SeqCst), 1);
}

#[test]
fn blocking_client_returns_the_409_once_no_attempt_fits_before_the_deadline() {
    let server = start(0, 0);
    let first = server.first_attempt_in_flight("k-blocking-short");
    let config = no_retry_by_count(Duration::from_millis(1500));
    let http = blocking::Client::with_config(reqwest::blocking::Client::new(), config);
    let key = IdempotencyKey::parse(b"k-blocking-short").unwrap();
    let response = http.post(format!("http://{}/gated", server.addr)).idempotency_key(key).send().unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(server.retrying_attempts(), 2);
    assert_eq!(server.finish(first), StatusCode::CREATED);
}

#[test]
fn blocking_client_sends_the_only_key_under_a_configured_header() {
    let server = start(0, 1);
    let config = ClientConfig::new().key_header(x_request_key());
    let http = blocking::Client::with_config(reqwest::blocking::Client::new(), config);
    let response = http.post(format!("http://{}/custom", server.proxy)).json(&1).send().unwrap();
    assert_eq!(response.status(), 201);
    assert!(client::is_replayed(response.headers()));
    let sent = server.state.key_headers("/custom");
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|keys| keys.len() == 1 && keys[0] == sent[0][0]), "one key: {sent:?}");
    assert_eq!(sent[0][0].0, "x-request-key");
    assert_eq!(server.state.executions.load(Ordering::SeqCst), 1);

    let url = format!("http://{}/custom", server.addr);
    let response = http.post(&url).header("X-Request-Key", "callers-own").json(&2).send().unwrap();
    assert_eq!(response.status(), 201);
    let last = server.state.key_headers("/custom").pop().unwrap();
    assert_eq!(last, vec![("x-request-key".to_owned(), "callers-own".to_owned())]);
}
