//! A duplicate that waits (`on_conflict = "wait"`) for a request of the same process is woken by
//! that request's outcome, instead of polling the store: it looks at the key a bounded number of
//! times however long the first request runs, and replays right after the first is stored.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::{post_to, Reply};
use idem_runtime::idempotent;
use idem_runtime::store::{MemoryStore, TokioClock};
use idem_runtime::testkit::{FaultyStore, Operation};
use idem_runtime::Idempotency;

type Runs = Arc<AtomicUsize>;

/// Long enough that polling every 5 ms doubling up to 250 ms looks at the key ten times.
const WORK: Duration = Duration::from_secs(2);

#[idempotent(required, on_conflict = "wait", lease = "10s")]
async fn slow(State(runs): State<Runs>) -> (StatusCode, String) {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(WORK).await;
    (StatusCode::CREATED, format!("run {run}"))
}

#[idempotent(required, on_conflict = "wait", lease = "10s")]
async fn slow_failing(State(runs): State<Runs>) -> (StatusCode, String) {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(WORK).await;
    let status = if run == 1 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::CREATED };
    (status, format!("run {run}"))
}

fn app(store: &FaultyStore<MemoryStore>, runs: &Runs) -> Router {
    Router::new()
        .route("/slow", post(slow))
        .route("/slow-failing", post(slow_failing))
        .layer(Idempotency::new(store.clone()))
        .with_state(runs.clone())
}

fn store() -> FaultyStore<MemoryStore> {
    FaultyStore::new(MemoryStore::builder().clock(TokioClock::new()).build())
}

/// The first request to `path`, and 100 ms into it a duplicate; their replies, and when the
/// duplicate was sent.
async fn first_and_duplicate(
    app: &Router,
    path: &'static str,
    key: &'static str,
) -> (Reply, Reply, tokio::time::Instant) {
    let first = tokio::spawn({
        let app = app.clone();
        async move { post_to(path).key(key).send(&app).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = tokio::time::Instant::now();
    let second = post_to(path).key(key).send(app).await;
    (first.await.unwrap(), second, started)
}

#[tokio::test(start_paused = true)]
async fn a_waiting_duplicate_is_woken_by_the_first_requests_record_not_by_polling() {
    let (store, runs) = (store(), Runs::default());
    let (first, second, started) = first_and_duplicate(&app(&store, &runs), "/slow", "w-1").await;
    assert_eq!((first.status.as_u16(), first.replayed()), (201, false));
    assert_eq!((second.status.as_u16(), second.replayed(), second.body.as_ref()), (201, true, &b"run 1"[..]));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // The first's claim, and the duplicate's: in flight, in flight again once it listens, then
    // the record. Polling would have looked at the key ten times in those 1.9 s.
    assert_eq!(store.calls(Operation::Claim), 4, "claims: the first's one and the duplicate's");
    // Woken at the first's record, on the paused clock: no pause of polling in between.
    assert_eq!(started.elapsed(), WORK - Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_waiting_duplicate_is_woken_when_the_first_releases_the_key_and_runs_it() {
    let (store, runs) = (store(), Runs::default());
    let (first, second, started) = first_and_duplicate(&app(&store, &runs), "/slow-failing", "w-2").await;
    assert_eq!(first.status, 503, "the first's answer is not kept: the key is released");
    assert_eq!((second.status.as_u16(), second.replayed(), second.body.as_ref()), (201, false, &b"run 2"[..]));
    assert_eq!(store.calls(Operation::Claim), 4, "the first's claim; the duplicate's three, the last acquired");
    assert_eq!(started.elapsed(), 2 * WORK - Duration::from_millis(100), "run at once after the release");
}

/// The time from the first request's answer (its record is stored before it) to the waiting
/// duplicate's replay, on the real clock, printed as p50 and p99: a measurement for
/// BENCHMARKS.md, not an assertion.
/// `cargo test --all-features --test wait_wakeup -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCHMARKS.md"]
async fn measure_the_time_from_the_record_to_the_waiting_duplicates_replay() {
    #[idempotent(required, on_conflict = "wait", lease = "10s")]
    async fn work(axum::extract::Path(ms): axum::extract::Path<u64>) -> (StatusCode, &'static str) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        (StatusCode::CREATED, "done")
    }
    let app = Router::new().route("/work/{ms}", post(work)).layer(Idempotency::new(MemoryStore::new()));
    let mut gaps = Vec::new();
    for trial in 0..200u64 {
        // Handlers of 20 to 59 ms: the duplicate's polls (5, 10, 20, 40 ms apart) fall anywhere.
        let path = format!("/work/{}", 20 + trial % 40);
        let key = format!("measure-{trial}-{}", std::process::id());
        let first = tokio::spawn({
            let (app, path, key) = (app.clone(), path.clone(), key.clone());
            async move {
                let reply = post_to(&path).key(&key).send(&app).await;
                (reply, std::time::Instant::now())
            }
        });
        tokio::time::sleep(Duration::from_millis(2)).await;
        let second = post_to(&path).key(&key).send(&app).await;
        let replayed_at = std::time::Instant::now();
        let (first, answered_at) = first.await.unwrap();
        assert_eq!((first.status.as_u16(), second.status.as_u16(), second.replayed()), (201, 201, true));
        gaps.push(replayed_at.saturating_duration_since(answered_at));
    }
    gaps.sort();
    let at = |q: f64| gaps[((gaps.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "record to waiting duplicate's replay, 200 trials: p50 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
