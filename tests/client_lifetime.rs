//! idem's client and keys past their lifetime: it never sends a key older than the lifetime it
//! is told (a caller's UUIDv7 key that is too old already is an error before anything is sent),
//! and it stops retrying a call once its key is older than that.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use idem_runtime::client::{blocking, ClientConfig, IdempotencyKeyExt as _, KeyExpired};
use idem_runtime::idempotent;
use idem_runtime::key::IdempotencyKey;

const HOUR: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct Seen {
    /// The key of every request that reached the server.
    keys: Mutex<Vec<Option<String>>>,
    executions: AtomicUsize,
}

async fn record(State(seen): State<Arc<Seen>>, req: Request, next: Next) -> Response {
    let key = req.headers().get("idempotency-key").map(|v| v.to_str().unwrap().to_owned());
    seen.keys.lock().unwrap().push(key);
    next.run(req).await
}

/// The server's default ttl: a day.
#[idempotent(required)]
async fn create(State(seen): State<Arc<Seen>>) -> StatusCode {
    seen.executions.fetch_add(1, Ordering::SeqCst);
    StatusCode::CREATED
}

/// Always answers as idem does while the first attempt of a call still runs.
async fn in_flight() -> Response {
    (StatusCode::CONFLICT, [(header::RETRY_AFTER, "1")], "in flight").into_response()
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Seen>,
    runtime: tokio::runtime::Runtime,
}

/// A server on a runtime of its own, so that the blocking client can run on the test thread.
fn start() -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/orders", post(create))
        .route("/in-flight", post(in_flight))
        .layer(middleware::from_fn_with_state(seen.clone(), record))
        .with_state(seen.clone());
    let addr = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    });
    Server { addr, seen, runtime }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn attempts(&self) -> usize {
        self.seen.keys.lock().unwrap().len()
    }
}

fn v7_at(at: SystemTime) -> IdempotencyKey {
    let since = at.duration_since(UNIX_EPOCH).unwrap();
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
    IdempotencyKey::parse(uuid::Uuid::new_v7(ts).hyphenated().to_string().as_bytes()).unwrap()
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The [`KeyExpired`] an error carries, if it does.
fn key_expired(error: &reqwest_middleware::Error) -> Option<&KeyExpired> {
    match error {
        reqwest_middleware::Error::Middleware(error) => error.downcast_ref::<KeyExpired>(),
        reqwest_middleware::Error::Reqwest(_) => None,
    }
}

#[test]
fn a_caller_key_older_than_the_lifetime_is_an_error_before_anything_is_sent() {
    let server = start();
    let http = ClientConfig::new().key_lifetime(HOUR).build(reqwest::Client::new());
    let old = v7_at(SystemTime::now() - 2 * HOUR);
    let runtime = client_runtime();
    let per_call = runtime.block_on(http.post(server.url("/orders")).idempotency_key(old.clone()).send());
    let error = per_call.expect_err("refused before sending");
    let expired = key_expired(&error).unwrap_or_else(|| panic!("not a KeyExpired: {error:?}"));
    assert_eq!(expired.lifetime(), HOUR);
    assert!(expired.age() >= 2 * HOUR && expired.age() < 2 * HOUR + Duration::from_secs(60), "{expired:?}");
    let message = expired.to_string();
    assert!(message.contains("unknown") && message.contains("new key"), "{message}");

    // Set as a header, it is refused all the same.
    let as_header = http.post(server.url("/orders")).header("idempotency-key", old.as_str()).send();
    assert!(runtime.block_on(as_header).as_ref().err().and_then(key_expired).is_some());
    assert_eq!(server.attempts(), 0, "nothing reached the server");

    // Within the lifetime, the caller's key is sent as it is.
    let recent = v7_at(SystemTime::now() - HOUR + Duration::from_secs(60));
    let sent = runtime.block_on(http.post(server.url("/orders")).idempotency_key(recent.clone()).send()).unwrap();
    assert_eq!(sent.status(), 201);
    assert_eq!(*server.seen.keys.lock().unwrap(), [Some(recent.as_str().to_owned())]);
}

#[test]
fn the_blocking_client_refuses_it_too() {
    let server = start();
    let config = ClientConfig::new().key_lifetime(HOUR);
    let http = blocking::Client::with_config(reqwest::blocking::Client::new(), config);
    let old = v7_at(SystemTime::now() - 2 * HOUR);
    let error = http.post(server.url("/orders")).idempotency_key(old).send().expect_err("refused before sending");
    assert!(key_expired(&error).is_some(), "{error:?}");
    assert_eq!(server.attempts(), 0);
    assert_eq!(http.post(server.url("/orders")).send().unwrap().status(), 201, "a fresh key is sent");
}

/// By default the lifetime is an idem server's default ttl, a day: a key minted 25 hours ago is
/// never sent, one minted 23 hours ago is (and the server accepts it).
#[test]
fn the_default_lifetime_is_a_day() {
    let server = start();
    let http = ClientConfig::new().build(reqwest::Client::new());
    let runtime = client_runtime();
    let send = |key: IdempotencyKey| runtime.block_on(http.post(server.url("/orders")).idempotency_key(key).send());
    assert!(key_expired(&send(v7_at(SystemTime::now() - 25 * HOUR)).unwrap_err()).is_some());
    assert_eq!(send(v7_at(SystemTime::now() - 23 * HOUR)).unwrap().status(), 201);
    assert_eq!((server.attempts(), server.seen.executions.load(Ordering::SeqCst)), (1, 1));
}

/// A call whose first attempt is still in flight is asked again until its deadline, unless its
/// key would be older than the lifetime by then: the last attempt starts within it.
#[test]
fn retries_stop_once_the_key_is_older_than_the_lifetime() {
    let server = start();
    let http = ClientConfig::new().key_lifetime(HOUR).deadline(Duration::from_secs(6)).build(reqwest::Client::new());
    let nearly_old = v7_at(SystemTime::now() - HOUR + Duration::from_millis(1500));
    let runtime = client_runtime();
    let response = runtime.block_on(http.post(server.url("/in-flight")).idempotency_key(nearly_old).send()).unwrap();
    assert_eq!(response.status(), 409, "the call ends with the last answer");
    // `Retry-After: 1`: attempts at 0 s and 1 s; at 2 s the key would be past its lifetime. The
    // deadline alone would have allowed 6 or 7.
    let attempts = server.attempts();
    assert!((1..=2).contains(&attempts), "{attempts} attempts");

    let blocking = blocking::Client::with_config(
        reqwest::blocking::Client::new(),
        ClientConfig::new().key_lifetime(HOUR).deadline(Duration::from_secs(6)),
    );
    let nearly_old = v7_at(SystemTime::now() - HOUR + Duration::from_millis(1500));
    let response = blocking.post(server.url("/in-flight")).idempotency_key(nearly_old).send().unwrap();
    assert_eq!(response.status(), 409);
    let blocking_attempts = server.attempts() - attempts;
    assert!((1..=2).contains(&blocking_attempts), "{blocking_attempts} attempts");
    drop(server.runtime);
}
