//! Redis forgets while a handler runs (a restart without persistence): the retry on another
//! instance must not run the handler a second time.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use common::{eventually, post_to, RedisServer, Reply};
use idem_runtime::idempotent;
use idem_runtime::store::{Claim, RedisStore, Store as _, StoreError};
use idem_runtime::testkit::{fingerprint, fresh_key};
use idem_runtime::Idempotency;

/// One application instance: how often its handlers started and finished, and a gate that
/// holds `/gated` until opened.
#[derive(Default)]
struct Instance {
    started: AtomicUsize,
    finished: AtomicUsize,
    plain: AtomicUsize,
    open: AtomicBool,
}

type Shared = Arc<Instance>;

/// Renews its claim every third of a second while it waits for the gate.
#[idempotent(required, lease = "1s")]
async fn gated(State(instance): State<Shared>) -> Response {
    instance.started.fetch_add(1, Ordering::SeqCst);
    while !instance.open.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let run = instance.finished.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::CREATED, Json(serde_json::json!({ "run": run }))).into_response()
}

#[idempotent(required)]
async fn plain(State(instance): State<Shared>) -> Response {
    let run = instance.plain.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::CREATED, Json(serde_json::json!({ "run": run }))).into_response()
}

fn instance(store: RedisStore) -> (Router, Shared) {
    let shared = Shared::default();
    let router = Router::new()
        .route("/gated", post(gated))
        .route("/plain", post(plain))
        .layer(Idempotency::new(store))
        .with_state(shared.clone());
    (router, shared)
}

const PREFIX: &str = "amnesia:";

/// Sends one request to `app` and waits for its reply, failing at once if `instance`'s gated
/// handler starts meanwhile (it would wait for its gate, so the reply would never come).
async fn send_without_running(app: &Router, path: &str, key: &str, instance: &Shared) -> Reply {
    let request = tokio::spawn({
        let (app, path, key) = (app.clone(), path.to_owned(), key.to_owned());
        async move { post_to(&path).key(&key).send(&app).await }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !request.is_finished() {
        assert_eq!(instance.started.load(Ordering::SeqCst), 0, "instance B ran the handler a second time");
        assert!(Instant::now() < deadline, "no reply from instance B");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    request.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_another_instance_after_redis_restarted_empty_does_not_run_the_handler_again() {
    let Some(mut server) = RedisServer::start("redis amnesia") else { return };
    // The server just started: its key space is new (else claims would wait from the start).
    let store = || RedisStore::builder(server.url()).prefix(PREFIX).new_key_space().connect();
    let (a, on_a) = instance(store().await.unwrap());
    let store_b = store().await.unwrap();
    let (b, on_b) = instance(store_b.clone());

    let first = tokio::spawn({
        let a = a.clone();
        async move { post_to("/gated").key("order-1").send(&a).await }
    });
    eventually(Duration::from_secs(5), || on_a.started.load(Ordering::SeqCst) == 1).await;

    // Redis restarts without persistence while the handler runs on A: every key is gone.
    server.stop();
    server.resume();

    // The store itself says why: it is recovering, for as long as a lease may still run.
    let deadline = Instant::now() + Duration::from_secs(20);
    let held_back = loop {
        match store_b.claim(&fresh_key(), &fingerprint(1), Duration::from_secs(1)).await {
            Err(StoreError::Recovering { retry_after }) => break retry_after,
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("a new claim during the quarantine got {other:?}"),
        }
    };
    assert!(held_back > Duration::from_secs(20) && held_back <= Duration::from_secs(30), "{held_back:?}");

    // A new key on B is held back while the lost claims' leases may still be running.
    let fresh = send_without_running(&b, "/plain", "order-2", &on_b).await;
    fresh.assert_problem(503, "urn:idem:problem:store-recovering");
    assert!(fresh.header("retry-after").is_some(), "503 carries Retry-After");
    assert_eq!(on_b.plain.load(Ordering::SeqCst), 0);

    // The retry of the running request on B: 503 while the quarantine holds and A has not
    // re-asserted its claim yet, then 409 once A's renewal did; never a second execution.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let retry = send_without_running(&b, "/gated", "order-1", &on_b).await;
        assert!(retry.header("retry-after").is_some(), "{} carries Retry-After", retry.status);
        match retry.status.as_u16() {
            503 => {
                retry.assert_problem(503, "urn:idem:problem:store-recovering");
            }
            409 => break,
            other => panic!("the retry got {other}: {:?}", retry.body),
        }
        assert!(Instant::now() < deadline, "A's claim was never re-asserted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A finishes: its response is stored and B replays it.
    on_a.open.store(true, Ordering::SeqCst);
    let first = first.await.unwrap();
    assert_eq!(first.status, 201);
    assert!(!first.replayed());
    let deadline = Instant::now() + Duration::from_secs(20);
    let replay = loop {
        let retry = send_without_running(&b, "/gated", "order-1", &on_b).await;
        if retry.status == 201 {
            break retry;
        }
        assert_eq!(retry.status, 409, "while A stores its response: {:?}", retry.body);
        assert!(Instant::now() < deadline, "A's response was never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(replay.replayed(), "B replays A's response");
    assert_eq!(replay.json(), first.json());
    assert_eq!(on_a.finished.load(Ordering::SeqCst), 1);
    assert_eq!(on_b.started.load(Ordering::SeqCst), 0, "one execution in all");
}

#[tokio::test]
async fn a_store_connecting_to_a_server_that_just_started_without_its_marker_waits_out_the_longest_lease() {
    let Some(server) = RedisServer::start("connect-time quarantine") else { return };
    // The server may have restarted empty a moment ago, with handlers of other instances still
    // running: no claim until every lease of before the start has run out.
    let store = RedisStore::connect(server.url()).await.unwrap();
    match store.claim(&fresh_key(), &fingerprint(1), Duration::from_secs(1)).await {
        Err(StoreError::Recovering { retry_after }) => {
            assert!(retry_after > Duration::from_secs(20) && retry_after <= Duration::from_secs(30), "{retry_after:?}")
        }
        other => panic!("a claim right after connecting got {other:?}"),
    }
    // A key space declared new (a first deployment) starts at once; so does one whose marker
    // is there (a key space in use).
    let fresh = RedisStore::builder(server.url()).prefix("fresh:").new_key_space().connect().await.unwrap();
    assert!(matches!(fresh.claim(&fresh_key(), &fingerprint(1), Duration::from_secs(1)).await, Ok(Claim::Acquired(_))));
    let again = RedisStore::builder(server.url()).prefix("fresh:").connect().await.unwrap();
    assert!(matches!(again.claim(&fresh_key(), &fingerprint(1), Duration::from_secs(1)).await, Ok(Claim::Acquired(_))));
}
