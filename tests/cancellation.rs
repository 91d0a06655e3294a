//! Cancellation is an input: a request future dropped after any number of polls (a client gone,
//! a timeout layer, a shutdown) leaves nothing behind. For each path — a miss, a replay, a
//! duplicate refused or waiting while the first runs, a mismatch — and each store, the
//! transactional mode included, the request is polled k times and dropped, for every k until it
//! completes; afterwards the handler's effect took hold once for its key (its run, or with `Tx`
//! its committed row), and a retry gets that run's answer at once (no claim is left without an
//! owner: the lease here is a minute, and the retry is given a few seconds).

mod common;
mod pg_common;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::BodyExt as _;
use idem_runtime::fingerprint::Fingerprint;
use idem_runtime::postgres::Tx;
use idem_runtime::record::Record;
use idem_runtime::store::{Claim, ClaimToken, MemoryStore, PgStore, RecordKey, RedisStore, Store, StoreError};
use idem_runtime::{idempotent, Idempotency};
use tower::ServiceExt as _;

/// Runs per key, and the keys whose handlers may finish.
#[derive(Default)]
struct Runs {
    runs: Mutex<HashMap<String, usize>>,
    open: Mutex<HashSet<String>>,
}

impl Runs {
    fn of(&self, key: &str) -> usize {
        self.runs.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

#[derive(serde::Deserialize)]
struct Order {
    k: String,
    #[serde(default)]
    gated: bool,
}

/// Runs once per key (counted), yielding a few times on the way, and waits for its key's gate
/// when asked to.
async fn work(runs: &Runs, body: &Order) -> Response {
    let n = run(runs, body).await;
    (StatusCode::CREATED, Json(serde_json::json!({ "k": body.k, "run": n }))).into_response()
}

/// Counts a run of `body`'s key, yields a few times, and waits for the key's gate when asked
/// to; the run's number.
async fn run(runs: &Runs, body: &Order) -> usize {
    let n = {
        let mut all = runs.runs.lock().unwrap();
        let n = all.entry(body.k.clone()).or_default();
        *n += 1;
        *n
    };
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    while body.gated && !runs.open.lock().unwrap().contains(&body.k) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    n
}

#[idempotent(required, lease = "60s")]
async fn reject(State(runs): State<Arc<Runs>>, Json(body): Json<Order>) -> Response {
    work(&runs, &body).await
}

#[idempotent(required, lease = "60s", on_conflict = "wait")]
async fn wait(State(runs): State<Arc<Runs>>, Json(body): Json<Order>) -> Response {
    work(&runs, &body).await
}

/// The embedded store, answering each operation after yielding to the runtime, as a remote
/// store would: every operation is a point where the request can be dropped.
#[derive(Clone, Default)]
struct Yielding(MemoryStore);

impl Store for Yielding {
    async fn claim(&self, key: &RecordKey, fingerprint: &Fingerprint, lease: Duration) -> Result<Claim, StoreError> {
        tokio::task::yield_now().await;
        let claim = self.0.claim(key, fingerprint, lease).await;
        tokio::task::yield_now().await;
        claim
    }
    async fn complete(&self, key: &RecordKey, token: ClaimToken, record: Record) -> Result<(), StoreError> {
        tokio::task::yield_now().await;
        let done = self.0.complete(key, token, record).await;
        tokio::task::yield_now().await;
        done
    }
    async fn release(&self, key: &RecordKey, token: ClaimToken) -> Result<(), StoreError> {
        tokio::task::yield_now().await;
        self.0.release(key, token).await
    }
    async fn renew(&self, key: &RecordKey, token: ClaimToken, lease: Duration) -> Result<(), StoreError> {
        self.0.renew(key, token, lease).await
    }
}

/// How many times the handler's effect for a key took hold, and whether `answer` is the one
/// that did.
type Effects =
    Box<dyn Fn(String, serde_json::Value) -> Pin<Box<dyn Future<Output = (usize, bool)> + Send>> + Send + Sync>;

/// An application under the sweep: `/reject` and `/wait` routes, their runs, and what counts as
/// the handler's effect.
struct Subject {
    app: Router,
    runs: Arc<Runs>,
    effects: Effects,
}

/// Handlers whose effect is their run, behind `layer`.
fn subject(layer: Idempotency) -> Subject {
    let runs = Arc::new(Runs::default());
    let app =
        Router::new().route("/reject", post(reject)).route("/wait", post(wait)).layer(layer).with_state(runs.clone());
    let counted = runs.clone();
    let effects: Effects = Box::new(move |key, answer| {
        let runs = counted.of(&key);
        Box::pin(async move { (runs, answer["run"] == 1) })
    });
    Subject { app, runs, effects }
}

fn request(path: &str, key: &str, body: serde_json::Value) -> Request<Body> {
    Request::post(path)
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// Polls the inner future at most `left` more times, then gives up (`None`) and drops it.
struct PolledAtMost<F> {
    inner: Pin<Box<F>>,
    left: usize,
}

impl<F: Future> Future for PolledAtMost<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        self.inner.as_mut().poll(cx).map(Some)
    }
}

/// Sends the request to completion; the status and whether it was a replay.
async fn send(app: &Router, request: Request<Body>) -> (StatusCode, bool, Vec<u8>) {
    let response = app.clone().oneshot(request).await.unwrap();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, replayed, body)
}

/// Retries `request` until it is no longer refused as in flight, for at most a few seconds.
async fn settled(app: &Router, request: impl Fn() -> Request<Body>) -> (StatusCode, bool, Vec<u8>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answer = send(app, request()).await;
        if answer.0 != StatusCode::CONFLICT {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key is still claimed 5 s after the request was dropped (lease 60 s): a claim was left without an owner"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Clone, Copy, Debug)]
enum Path {
    Miss,
    Replay,
    InFlight,
    Waiting,
    Mismatch,
}

/// Drops the request of `path` after k polls for k = 1, 2, … until one completes, each with a
/// fresh key, and checks what is left after each drop. Returns how many drop points it tried.
async fn sweep(name: &str, subject: &Subject, path: Path) -> usize {
    let Subject { app, runs, effects } = subject;
    let prefix = format!("{name}-{path:?}-{}", &idem_runtime::testkit::fresh_key().to_hex()[..8]);
    let route = if matches!(path, Path::Waiting) { "/wait" } else { "/reject" };
    for k in 1.. {
        let key = format!("{prefix}-{k}");
        let body = serde_json::json!({ "k": key });
        let gated = serde_json::json!({ "k": key, "gated": true });
        let first = match path {
            Path::Miss => None,
            Path::Replay | Path::Mismatch => Some(send(app, request(route, &key, body.clone())).await),
            Path::InFlight | Path::Waiting => {
                let (app, request) = (app.clone(), request(route, &key, gated.clone()));
                let first = tokio::spawn(async move { send(&app, request).await });
                while runs.of(&key) == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                drop(first);
                None
            }
        };
        let sent = match path {
            Path::Mismatch => serde_json::json!({ "k": key, "other": true }),
            Path::InFlight | Path::Waiting => gated.clone(),
            _ => body.clone(),
        };
        if matches!(path, Path::Waiting) {
            // The first finishes while the duplicate waits, so that some number of polls sees it
            // through to the replay.
            let runs = runs.clone();
            let key = key.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                runs.open.lock().unwrap().insert(key);
            });
        }
        let polled = PolledAtMost { inner: Box::pin(app.clone().oneshot(request(route, &key, sent))), left: k };
        let completed = polled.await.is_some();
        runs.open.lock().unwrap().insert(key.clone());

        let retried = if matches!(path, Path::InFlight | Path::Waiting) { gated.clone() } else { body.clone() };
        let (status, _, answer) = settled(app, || request(route, &key, retried.clone())).await;
        assert_eq!(status, StatusCode::CREATED, "{name} {path:?}, dropped after {k} polls: the retry got {status}");
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        let (effects, answered_by_it) = effects(key.clone(), answer).await;
        assert_eq!(
            effects, 1,
            "{name} {path:?}, dropped after {k} polls: the handler's effect took hold {effects} times"
        );
        assert!(
            answered_by_it,
            "{name} {path:?}, dropped after {k} polls: the retry did not get the answer of the run that took hold"
        );
        if let Some((status, ..)) = first {
            assert_eq!(status, StatusCode::CREATED);
        }
        if completed {
            return k;
        }
    }
    unreachable!()
}

async fn every_path(name: &str, subject: Subject) {
    for path in [Path::Miss, Path::Replay, Path::InFlight, Path::Waiting, Path::Mismatch] {
        let points = sweep(name, &subject, path).await;
        eprintln!("{name} {path:?}: dropped at each of {points} polls");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_at_any_poll_leaves_nothing_behind_in_the_embedded_store() {
    every_path("memory", subject(Idempotency::new(Yielding::default()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_at_any_poll_leaves_nothing_behind_in_redis() {
    let Some(url) = common::redis_url("a_request_dropped_at_any_poll_leaves_nothing_behind_in_redis") else {
        return;
    };
    let store = RedisStore::connect(url).await.unwrap();
    every_path("redis", subject(Idempotency::new(store))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_at_any_poll_leaves_nothing_behind_in_postgres() {
    let Some(schema) =
        pg_common::TestSchema::create("a_request_dropped_at_any_poll_leaves_nothing_behind_in_postgres").await
    else {
        return;
    };
    let store = schema.store().await;
    every_path("postgres", subject(Idempotency::new(store))).await;
}

/// The transactional mode's handlers: the order is inserted through the request's transaction,
/// and the effect is the committed row.
#[derive(Clone)]
struct Transactional {
    store: PgStore,
    /// `"schema".orders`.
    orders: String,
    runs: Arc<Runs>,
}

impl FromRef<Transactional> for PgStore {
    fn from_ref(app: &Transactional) -> PgStore {
        app.store.clone()
    }
}

async fn insert(app: &Transactional, tx: &mut Tx, body: &Order) -> Response {
    let insert = format!("INSERT INTO {} (k) VALUES ($1) RETURNING id", app.orders);
    let id: i64 = sqlx::query_scalar(&insert).bind(&body.k).fetch_one(&mut **tx).await.unwrap();
    run(&app.runs, body).await;
    (StatusCode::CREATED, Json(serde_json::json!({ "k": body.k, "id": id }))).into_response()
}

#[idempotent(required, lease = "60s")]
async fn tx_reject(State(app): State<Transactional>, mut tx: Tx, Json(body): Json<Order>) -> Response {
    insert(&app, &mut tx, &body).await
}

#[idempotent(required, lease = "60s", on_conflict = "wait")]
async fn tx_wait(State(app): State<Transactional>, mut tx: Tx, Json(body): Json<Order>) -> Response {
    insert(&app, &mut tx, &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_request_dropped_at_any_poll_commits_once() {
    let Some(schema) = pg_common::TestSchema::create("a_transactional_request_dropped_at_any_poll_commits_once").await
    else {
        return;
    };
    let pool = schema.pool(4).await;
    let orders = format!("\"{}\".orders", schema.name);
    sqlx::query(&format!("CREATE TABLE {orders} (id bigserial PRIMARY KEY, k text NOT NULL)"))
        .execute(&pool)
        .await
        .unwrap();
    let runs = Arc::new(Runs::default());
    let state = Transactional { store: schema.store().await, orders: orders.clone(), runs: runs.clone() };
    let app = Router::new().route("/reject", post(tx_reject)).route("/wait", post(tx_wait)).with_state(state);
    let effects: Effects = Box::new(move |key, answer| {
        let (pool, orders) = (pool.clone(), orders.clone());
        Box::pin(async move {
            let ids: Vec<i64> = sqlx::query_scalar(&format!("SELECT id FROM {orders} WHERE k = $1"))
                .bind(&key)
                .fetch_all(&pool)
                .await
                .unwrap();
            (ids.len(), ids.first().is_some_and(|id| answer["id"] == *id))
        })
    });
    every_path("tx", Subject { app, runs, effects }).await;
}
