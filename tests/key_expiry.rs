//! Keys past their lifetime: a request whose logical call began longer ago than the handler's
//! ttl (by its UUIDv7 key, or its `Repeatability-First-Sent` header), beyond the clock-skew
//! allowance, is refused with `key-expired` and never runs; one from the future is refused too.
//! The store runs on a `ManualClock`, so each edge is hit to the millisecond.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use common::{post_to, v4, v7_at, Down, Reply};
use idem_runtime::store::{Clock as _, MemoryStore, Store as _};
use idem_runtime::testkit::ManualClock;
use idem_runtime::{defaults, idempotent, Defaults, Idempotency};
use serde_json::{json, Value};

const TTL: Duration = Duration::from_secs(3600);
/// The clock skew idem allows between a client and the server, as documented.
const SKEW: Duration = Duration::from_secs(300);
const MS: Duration = Duration::from_millis(1);
const EXPIRED: &str = "urn:idem:problem:key-expired";
const FROM_FUTURE: &str = "urn:idem:problem:key-from-future";
const FIRST_SENT: &str = "repeatability-first-sent";

type Runs = Arc<AtomicUsize>;

#[idempotent(required, ttl = "1h")]
async fn create(State(runs): State<Runs>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::CREATED, Json(json!({ "run": run, "body": body })))
}

#[idempotent(optional, ttl = "1h")]
async fn note(State(runs): State<Runs>) -> StatusCode {
    runs.fetch_add(1, Ordering::SeqCst);
    StatusCode::CREATED
}

/// Late keys run as new ones: the check is off.
#[idempotent(required, ttl = "1h", on_expired_key = "run")]
async fn create_unchecked(State(runs): State<Runs>) -> StatusCode {
    runs.fetch_add(1, Ordering::SeqCst);
    StatusCode::CREATED
}

const RUN_EXPIRED: Defaults = defaults!(required, ttl = "1h", on_expired_key = "run");

#[idempotent(defaults = RUN_EXPIRED)]
async fn create_by_defaults(State(runs): State<Runs>) -> StatusCode {
    runs.fetch_add(1, Ordering::SeqCst);
    StatusCode::CREATED
}

#[idempotent(defaults = RUN_EXPIRED, on_expired_key = "refuse")]
async fn create_refusing(State(runs): State<Runs>) -> StatusCode {
    runs.fetch_add(1, Ordering::SeqCst);
    StatusCode::CREATED
}

fn routes() -> Router<Runs> {
    Router::new()
        .route("/orders", post(create))
        .route("/notes", post(note))
        .route("/unchecked", post(create_unchecked))
        .route("/by-defaults", post(create_by_defaults))
        .route("/refusing", post(create_refusing))
}

/// The routes behind a store on a manual clock, their run counter, and the clock.
fn app() -> (Router, Runs, ManualClock) {
    let clock = ManualClock::new();
    let store = MemoryStore::builder().clock(clock.clone()).build();
    let (router, runs) = app_on(Idempotency::new(store));
    (router, runs, clock)
}

fn app_on(layer: Idempotency) -> (Router, Runs) {
    let runs = Runs::default();
    (routes().layer(layer).with_state(runs.clone()), runs)
}

fn http_date(at: SystemTime) -> String {
    httpdate::fmt_http_date(at)
}

async fn order(app: &Router, key: &str, first_sent: Option<&str>) -> Reply {
    let mut request = post_to("/orders").key(key).json(r#"{"item":"book"}"#);
    if let Some(date) = first_sent {
        request = request.header(FIRST_SENT, date);
    }
    request.send(app).await
}

/// Moves the clock to the next whole second, the precision of an HTTP-date.
fn to_whole_second(clock: &ManualClock) -> SystemTime {
    let into_second = clock.now().duration_since(UNIX_EPOCH).unwrap().subsec_millis();
    if into_second != 0 {
        clock.advance(Duration::from_millis(u64::from(1000 - into_second)));
    }
    clock.now()
}

fn assert_expired(reply: &Reply) {
    let problem = reply.assert_problem(412, EXPIRED);
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("unknown") && detail.contains("new key"), "the detail says what to do: {detail}");
    assert!(!reply.replayed());
}

#[tokio::test]
async fn a_uuidv7_key_older_than_the_ttl_is_refused_with_key_expired_and_the_handler_does_not_run() {
    let (app, runs, clock) = app();
    let key = v7_at(clock.now() - Duration::from_secs(25 * 3600));
    let reply = order(&app, &key, None).await;
    assert_expired(&reply);
    assert!(reply.json()["detail"].as_str().unwrap().contains("UUIDv7"), "{:?}", reply.json());
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    // Asking again changes nothing: still refused, still not run.
    assert_expired(&order(&app, &key, None).await);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_uuidv7_key_just_inside_the_allowance_runs_and_just_outside_is_refused() {
    let (app, runs, clock) = app();
    let inside = v7_at(clock.now() - TTL - SKEW);
    assert_eq!(order(&app, &inside, None).await.status, 201);
    let outside = v7_at(clock.now() - TTL - SKEW - MS);
    assert_expired(&order(&app, &outside, None).await);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // The quoted form is the same key.
    let quoted = format!("\"{}\"", v7_at(clock.now() - TTL - SKEW - MS));
    assert_expired(&order(&app, &quoted, None).await);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_first_sent_header_older_than_the_ttl_is_refused_whatever_the_key() {
    let (app, runs, clock) = app();
    let old = http_date(clock.now() - Duration::from_secs(25 * 3600));
    let reply = order(&app, &v4(), Some(&old)).await;
    assert_expired(&reply);
    assert!(reply.json()["detail"].as_str().unwrap().contains("Repeatability-First-Sent"));
    assert_expired(&order(&app, "order-17", Some(&old)).await);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_first_sent_header_just_inside_the_allowance_runs_and_just_outside_is_refused() {
    let (app, runs, clock) = app();
    let now = to_whole_second(&clock);
    let date = http_date(now - TTL - SKEW);
    assert_eq!(order(&app, &v4(), Some(&date)).await.status, 201);
    clock.advance(MS);
    assert_expired(&order(&app, &v4(), Some(&date)).await);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_malformed_first_sent_header_is_a_400_and_runs_nothing() {
    let (app, runs, clock) = app();
    for bad in ["yesterday", "1700000000", "Sun, 06 Nov 1994 08:49:37", ""] {
        let reply = order(&app, &v4(), Some(bad)).await;
        let problem = reply.assert_problem(400, "urn:idem:problem:malformed-first-sent");
        assert!(problem["detail"].as_str().unwrap().contains("HTTP-date"), "{bad:?}: {problem}");
    }
    let date = http_date(clock.now());
    let twice = post_to("/orders").key(&v4()).header(FIRST_SENT, &date).header(FIRST_SENT, &date).send(&app).await;
    twice.assert_problem(400, "urn:idem:problem:malformed-first-sent");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    // The other HTTP-date forms are HTTP-dates too.
    assert_eq!(order(&app, &v4(), Some("Sunday, 06-Nov-94 08:49:37 GMT")).await.status, 412);
}

#[tokio::test]
async fn a_start_in_the_future_beyond_the_allowance_is_refused_and_within_it_runs() {
    let (app, runs, clock) = app();
    assert_eq!(order(&app, &v7_at(clock.now() + SKEW), None).await.status, 201);
    let reply = order(&app, &v7_at(clock.now() + SKEW + MS), None).await;
    let problem = reply.assert_problem(400, FROM_FUTURE);
    assert!(problem["detail"].as_str().unwrap().contains("clock"), "{problem}");
    let far = http_date(clock.now() + Duration::from_secs(3 * 3600));
    order(&app, &v4(), Some(&far)).await.assert_problem(400, FROM_FUTURE);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn when_both_say_when_the_call_began_the_earlier_counts() {
    let (app, runs, clock) = app();
    let (fresh, old) = (clock.now(), clock.now() - Duration::from_secs(2 * 3600));
    assert_expired(&order(&app, &v7_at(fresh), Some(&http_date(old))).await);
    assert_expired(&order(&app, &v7_at(old), Some(&http_date(fresh))).await);
    assert_eq!(order(&app, &v7_at(fresh), Some(&http_date(fresh))).await.status, 201);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// The record is kept for the ttl after the call completed, and the call may have completed
/// well after it began: a late retry whose record is still there gets it.
#[tokio::test]
async fn a_late_retry_whose_record_still_exists_is_replayed_not_refused() {
    let (app, runs, clock) = app();
    let key = v7_at(clock.now());
    clock.advance(Duration::from_secs(50 * 60));
    let first = order(&app, &key, None).await;
    assert_eq!(first.status, 201);
    // Late (began 1 h 30 min ago), and the record runs until 1 h 50 min.
    clock.advance(Duration::from_secs(40 * 60));
    let late = order(&app, &key, None).await;
    assert_eq!((late.status.as_u16(), late.replayed()), (201, true), "{late:?}");
    assert_eq!(late.body, first.body);
    let other = post_to("/orders").key(&key).json(r#"{"item":"pen"}"#).send(&app).await;
    other.assert_problem(422, "urn:idem:problem:key-reused");
    // Once the record is gone, the retry is refused, never run again.
    clock.advance(Duration::from_secs(21 * 60));
    assert_expired(&order(&app, &key, None).await);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn keys_that_carry_no_time_are_not_judged() {
    let (app, runs, clock) = app();
    let old = v7_at(clock.now() - Duration::from_secs(30 * 24 * 3600));
    let simple = old.replace('-', "");
    let urn = format!("urn:uuid:{old}");
    let v4_looking = format!("{}4{}", &old[..14], &old[15..]);
    for key in ["order-1", simple.as_str(), urn.as_str(), v4_looking.as_str(), &v4()] {
        assert_eq!(order(&app, key, None).await.status, 201, "{key}");
    }
    // Upper-case hex is the same UUID.
    assert_expired(&order(&app, &old.to_uppercase(), None).await);
    assert_eq!(runs.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn on_expired_key_run_turns_the_check_off_on_a_handler_or_in_its_defaults() {
    let (app, runs, clock) = app();
    let old = || v7_at(clock.now() - Duration::from_secs(25 * 3600));
    let future = || v7_at(clock.now() + Duration::from_secs(3600));
    for path in ["/unchecked", "/by-defaults"] {
        assert_eq!(post_to(path).key(&old()).send(&app).await.status, 201, "{path}");
        assert_eq!(post_to(path).key(&future()).send(&app).await.status, 201, "{path}");
        let garbage = post_to(path).key(&v4()).header(FIRST_SENT, "garbage").send(&app).await;
        assert_eq!(garbage.status, 201, "{path}: the header is not read");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 6);
    post_to("/refusing").key(&old()).send(&app).await.assert_problem(412, EXPIRED);
    assert_eq!(runs.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn requests_idem_does_not_cover_ignore_the_first_sent_header() {
    let (app, runs, clock) = app();
    let old = http_date(clock.now() - Duration::from_secs(25 * 3600));
    let no_key = post_to("/notes").header(FIRST_SENT, &old).send(&app).await;
    assert_eq!(no_key.status, 201);
    let garbage = post_to("/notes").header(FIRST_SENT, "garbage").send(&app).await;
    assert_eq!(garbage.status, 201);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_late_request_is_never_run_without_idempotency_even_failing_open() {
    let (app, runs) = app_on(Idempotency::new(Down).fail_open(true));
    let old = v7_at(Down.now() - Duration::from_secs(25 * 3600));
    order(&app, &old, None).await.assert_problem(503, "urn:idem:problem:store-unavailable");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(order(&app, &v7_at(Down.now()), None).await.status, 201, "fail-open runs a fresh one");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_refusal_is_its_own_outcome_and_problem_kind() {
    let clock = ManualClock::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let layer = Idempotency::new(MemoryStore::builder().clock(clock.clone()).build()).on_outcome({
        let seen = seen.clone();
        move |outcome| {
            let kind = outcome.problem().map(|p| p.kind());
            seen.lock().unwrap().push((outcome.kind().as_str(), outcome.status().as_u16(), kind));
        }
    });
    let (app, _) = app_on(layer);
    order(&app, &v7_at(clock.now() - Duration::from_secs(2 * 3600)), None).await;
    order(&app, &v7_at(clock.now() + Duration::from_secs(3600)), None).await;
    order(&app, &v4(), Some("garbage")).await;
    use idem_runtime::problem::ProblemKind;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            ("key-expired", 412, Some(ProblemKind::KeyExpired)),
            ("rejected", 400, Some(ProblemKind::KeyFromFuture)),
            ("rejected", 400, Some(ProblemKind::MalformedFirstSent)),
        ]
    );
    assert_eq!(ProblemKind::KeyExpired.type_uri(), EXPIRED);
    assert_eq!(ProblemKind::KeyExpired.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(SKEW, idem_runtime::key::MAX_CLOCK_SKEW);
}

#[tokio::test]
async fn the_refusals_are_shaped_like_every_other_problem() {
    use axum::response::IntoResponse as _;
    use idem_runtime::problem::ProblemKind;
    let clock = ManualClock::new();
    let layer = Idempotency::new(MemoryStore::builder().clock(clock.clone()).build()).shape_problems(|problem| {
        let ours = [ProblemKind::KeyExpired, ProblemKind::KeyFromFuture, ProblemKind::MalformedFirstSent];
        ours.contains(&problem.kind())
            .then(|| (problem.status(), format!("ours: {:?}", problem.kind())).into_response())
    });
    let (app, runs) = app_on(layer);
    let late = order(&app, &v7_at(clock.now() - Duration::from_secs(2 * 3600)), None).await;
    assert_eq!((late.status.as_u16(), late.body.as_ref()), (412, b"ours: KeyExpired".as_ref()));
    let early = order(&app, &v7_at(clock.now() + Duration::from_secs(3600)), None).await;
    assert_eq!((early.status.as_u16(), early.body.as_ref()), (400, b"ours: KeyFromFuture".as_ref()));
    let undated = order(&app, &v4(), Some("garbage")).await;
    assert_eq!((undated.status.as_u16(), undated.body.as_ref()), (400, b"ours: MalformedFirstSent".as_ref()));
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}
