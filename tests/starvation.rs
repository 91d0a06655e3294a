//! Renewal cannot be starved: a handler that blocks its worker thread for longer than its lease
//! (a long synchronous section, which the guide says keeps its claim) never lets a duplicate run,
//! whatever the lease machinery was doing when the claim was taken — not started yet on this
//! runtime, sleeping until a later renewal, or renewing other leases every millisecond.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use idem_runtime::store::MemoryStore;
use idem_runtime::{idempotent, Idempotency};
use tower::ServiceExt as _;

#[derive(Default)]
struct Runs {
    blocking: AtomicUsize,
    long_started: AtomicUsize,
}

/// Blocks its worker thread for two and a half leases.
#[idempotent(required, lease = "1s")]
async fn blocking(State(runs): State<Arc<Runs>>) -> impl IntoResponse {
    runs.blocking.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2500));
    StatusCode::CREATED
}

/// Holds a long lease while it waits, so that the lease machinery sleeps until its renewal.
#[idempotent(required, lease = "60s", ttl = "1h")]
async fn long(State(runs): State<Arc<Runs>>) -> impl IntoResponse {
    runs.long_started.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    StatusCode::CREATED
}

/// Holds a lease renewed every millisecond, so that the lease machinery is always busy.
#[idempotent(required, lease = "3ms", ttl = "1h")]
async fn busy(State(runs): State<Arc<Runs>>) -> impl IntoResponse {
    runs.long_started.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    StatusCode::CREATED
}

fn app() -> (Router, Arc<Runs>) {
    let runs = Arc::new(Runs::default());
    let app = Router::new()
        .route("/blocking", post(blocking))
        .route("/long", post(long))
        .route("/busy", post(busy))
        // A store per test: tests in one process would share the embedded store, and their keys.
        .layer(Idempotency::new(MemoryStore::new()))
        .with_state(runs.clone());
    (app, runs)
}

fn request(path: &str, key: &str) -> Request<Body> {
    Request::post(path).header("idempotency-key", key).body(Body::empty()).unwrap()
}

/// Starts a request on a task of its own and returns once its handler runs.
async fn start(app: &Router, path: &'static str, key: &str, runs: &Arc<Runs>, started: fn(&Runs) -> usize) {
    let before = started(runs);
    let (app, request) = (app.clone(), request(path, key));
    tokio::spawn(async move { app.oneshot(request).await.unwrap() });
    while started(runs) == before {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Takes the claim of a blocking handler, then sends duplicates once its lease (1 s) would have
/// run out twice over without renewal: each must be refused as in flight.
async fn duplicates_never_run(app: Router, runs: Arc<Runs>, key: &str) {
    let before = runs.blocking.load(Ordering::SeqCst);
    start(&app, "/blocking", key, &runs, |runs| runs.blocking.load(Ordering::SeqCst)).await;
    for (pause, at) in [(1500, 1500), (700, 2200)] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let duplicate = app.clone().oneshot(request("/blocking", key)).await.unwrap();
        assert_eq!(
            duplicate.status(),
            StatusCode::CONFLICT,
            "a duplicate {at} ms into a blocking handler with a 1 s lease must find the claim still held"
        );
    }
    assert_eq!(runs.blocking.load(Ordering::SeqCst), before + 1, "the blocking handler ran twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_handler_keeps_its_claim_when_it_is_the_first_lease_on_the_runtime() {
    let (app, runs) = app();
    duplicates_never_run(app, runs, "first-lease").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_handler_keeps_its_claim_while_the_lease_keeper_sleeps() {
    let (app, runs) = app();
    start(&app, "/long", "long", &runs, |runs| runs.long_started.load(Ordering::SeqCst)).await;
    duplicates_never_run(app, runs, "keeper-sleeping").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_handler_keeps_its_claim_while_the_lease_keeper_is_busy() {
    let (app, runs) = app();
    start(&app, "/busy", "busy", &runs, |runs| runs.long_started.load(Ordering::SeqCst)).await;
    duplicates_never_run(app, runs, "keeper-busy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocking_handlers_on_every_worker_but_one_keep_their_claims() {
    let (app, runs) = app();
    start(&app, "/long", "long", &runs, |runs| runs.long_started.load(Ordering::SeqCst)).await;
    for key in ["a", "b"] {
        start(&app, "/blocking", key, &runs, |runs| runs.blocking.load(Ordering::SeqCst)).await;
    }
    duplicates_never_run(app.clone(), runs.clone(), "c").await;
    for key in ["a", "b"] {
        let duplicate = app.clone().oneshot(request("/blocking", key)).await.unwrap();
        assert_ne!(duplicate.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(runs.blocking.load(Ordering::SeqCst), 3, "a blocking handler ran twice");
}
