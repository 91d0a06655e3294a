//! Store faults under an application: each store operation (claim, complete, release, renew)
//! meets each kind of fault once (a delay longer than the lease, an error before or after the
//! operation took effect, a reply that comes only after the caller gave up, or never) while a
//! request and its retries go through an annotated handler. Whatever the fault, the handler
//! never runs twice for one key (beyond the second run a released key is meant to get), no
//! response is lost (retries get 409 or 503 until they replay the stored response) and no
//! claim is left without an owner beyond its lease (a retry runs the handler within a lease of
//! the first request's end, or replays its response).
//!
//! Time is Tokio's paused clock, which the store reads too (`TokioClock`): leases, delays and
//! timeouts pass without waiting.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use common::{post_to, Reply};
use idem_runtime::idempotent;
use idem_runtime::store::{MemoryStore, TokioClock};
use idem_runtime::testkit::{Fault, FaultyStore, Operation};
use idem_runtime::Idempotency;
use tokio::time::{timeout, Instant};

/// The handlers' lease.
const LEASE: Duration = Duration::from_secs(1);
/// How long the handlers run: longer than the lease, so their claims are renewed.
const WORK: Duration = Duration::from_millis(1500);
/// How long a client waits for a reply before it gives up.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long faults last: longer than the lease.
const LONG: Duration = Duration::from_millis(1500);

type Runs = Arc<AtomicUsize>;

#[idempotent(required, lease = "1s")]
async fn create(State(runs): State<Runs>) -> Response {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(WORK).await;
    (StatusCode::CREATED, Json(serde_json::json!({ "run": run }))).into_response()
}

/// Fails the first time with a status that is not stored, so that its key is released.
#[idempotent(required, lease = "1s")]
async fn fails_first(State(runs): State<Runs>) -> Response {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(WORK).await;
    if run == 1 {
        return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
    }
    (StatusCode::CREATED, Json(serde_json::json!({ "run": run }))).into_response()
}

fn summary(reply: &Option<Reply>) -> String {
    match reply {
        Some(reply) => format!("{}{}", reply.status.as_u16(), if reply.replayed() { " (replay)" } else { "" }),
        None => "no reply: the client gave up".to_owned(),
    }
}

/// The first request meets `fault` in its first call of `operation`; then retries until one
/// replays the stored response.
async fn drive(operation: Operation, fault: Fault) {
    let store = FaultyStore::new(MemoryStore::builder().clock(TokioClock::new()).build());
    store.next(operation, fault);
    let runs = Runs::default();
    let app = Router::new()
        .route("/create", post(create))
        .route("/fails-first", post(fails_first))
        .layer(Idempotency::new(store.clone()))
        .with_state(runs.clone());
    // A release happens only when the handler's answer is not stored: that handler runs twice.
    let (path, runs_expected) = if operation == Operation::Release { ("/fails-first", 2) } else { ("/create", 1) };
    let app = &app;
    let send = || async move {
        let request = post_to(path).key("order-1");
        timeout(PATIENCE, request.send(app)).await
    };

    let first = send().await.ok();
    let mut seen = vec![summary(&first)];
    let first_ended = Instant::now();
    let replay = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reply = send().await.ok();
        seen.push(summary(&reply));
        let ran = runs.load(Ordering::SeqCst);
        assert!(ran <= runs_expected, "the handler ran {ran} times; replies: {seen:?}");
        let reply = reply.unwrap_or_else(|| panic!("a retry got no reply; replies: {seen:?}"));
        match reply.status.as_u16() {
            201 if reply.replayed() => break reply,
            201 | 409 | 503 => {}
            other => panic!("a retry got {other}: {:?}; replies: {seen:?}", reply.body),
        }
        // A claim nobody holds lapses within a lease; a retry then runs the handler, and the
        // next one replays.
        assert!(
            first_ended.elapsed() <= LEASE + WORK + Duration::from_millis(500),
            "no replay {:?} after the first request ended: its key is held and no response is stored; replies: {seen:?}",
            first_ended.elapsed()
        );
    };
    assert_eq!(runs.load(Ordering::SeqCst), runs_expected, "replies: {seen:?}");
    // The replay is the last run's response, the one the first caller got if it got one.
    assert_eq!(replay.json(), serde_json::json!({ "run": runs_expected }), "replies: {seen:?}");
    if let Some(first) = first.filter(|first| first.status == 201) {
        assert_eq!(first.json(), replay.json(), "the first caller's response is the one replayed");
    }
    assert_eq!(store.faulted(operation), 1, "the fault was met");
}

const fn no_reply(took_effect: bool, until: Option<Duration>) -> Fault {
    Fault::NoReply { took_effect, until }
}

macro_rules! scenarios {
    ($($(#[$attr:meta])* $name:ident: $operation:ident, $fault:expr;)*) => {
        $(
            $(#[$attr])*
            #[tokio::test(start_paused = true)]
            async fn $name() {
                drive(Operation::$operation, $fault).await;
            }
        )*
    };
}

scenarios! {
    claim_delayed_past_the_lease: Claim, Fault::Delay(LONG);
    claim_failing_before_it_took_effect: Claim, Fault::ErrorBefore;
    claim_whose_reply_is_lost: Claim, Fault::ErrorAfter;
    claim_lost_on_the_way_and_timed_out: Claim, no_reply(false, Some(LONG));
    claim_taking_effect_and_timed_out: Claim, no_reply(true, Some(LONG));
    claim_lost_on_the_way_and_never_answered: Claim, no_reply(false, None);
    claim_taking_effect_and_never_answered: Claim, no_reply(true, None);

    complete_delayed_past_the_lease: Complete, Fault::Delay(LONG);
    complete_failing_before_it_took_effect: Complete, Fault::ErrorBefore;
    complete_whose_reply_is_lost: Complete, Fault::ErrorAfter;
    complete_lost_on_the_way_and_timed_out: Complete, no_reply(false, Some(LONG));
    complete_taking_effect_and_timed_out: Complete, no_reply(true, Some(LONG));
    complete_lost_on_the_way_and_never_answered: Complete, no_reply(false, None);
    complete_taking_effect_and_never_answered: Complete, no_reply(true, None);

    release_delayed_past_the_lease: Release, Fault::Delay(LONG);
    release_failing_before_it_took_effect: Release, Fault::ErrorBefore;
    release_whose_reply_is_lost: Release, Fault::ErrorAfter;
    release_lost_on_the_way_and_timed_out: Release, no_reply(false, Some(LONG));
    release_taking_effect_and_timed_out: Release, no_reply(true, Some(LONG));
    release_lost_on_the_way_and_never_answered: Release, no_reply(false, None);
    release_taking_effect_and_never_answered: Release, no_reply(true, None);

    renew_delayed_past_the_lease: Renew, Fault::Delay(LONG);
    renew_failing_before_it_took_effect: Renew, Fault::ErrorBefore;
    renew_whose_reply_is_lost: Renew, Fault::ErrorAfter;
    renew_lost_on_the_way_and_timed_out: Renew, no_reply(false, Some(LONG));
    renew_taking_effect_and_timed_out: Renew, no_reply(true, Some(LONG));
    renew_lost_on_the_way_and_never_answered: Renew, no_reply(false, None);
    renew_taking_effect_and_never_answered: Renew, no_reply(true, None);
}

#[tokio::test(start_paused = true)]
async fn faults_are_met_in_the_order_scheduled_then_the_standing_one_until_healed() {
    use idem_runtime::store::{Claim, Store as _, StoreError};
    use idem_runtime::testkit::{fingerprint, fresh_key};

    // Longer than any wait here.
    const HELD: Duration = Duration::from_secs(30);
    let store = FaultyStore::new(MemoryStore::builder().clock(TokioClock::new()).build());
    let claim = |key| {
        let store = store.clone();
        async move { store.claim(&key, &fingerprint(1), HELD).await }
    };
    store.schedule(
        Operation::Claim,
        [None, Some(Fault::ErrorBefore), Some(Fault::NoReply { took_effect: true, until: Some(LONG) })],
    );
    store.always(Operation::Claim, Fault::ErrorAfter);
    let (a, b, c, d) = (fresh_key(), fresh_key(), fresh_key(), fresh_key());
    assert!(matches!(claim(a).await, Ok(Claim::Acquired(_))), "the first call goes through");
    assert!(matches!(claim(b).await, Err(StoreError::Unavailable(_))));
    assert!(
        matches!(store.inner().claim(&b, &fingerprint(1), HELD).await, Ok(Claim::Acquired(_))),
        "b was not claimed"
    );
    let started = Instant::now();
    assert!(matches!(claim(c).await, Err(StoreError::Unavailable(_))));
    assert_eq!(started.elapsed(), LONG, "the caller waited for a reply until it gave up");
    assert!(
        matches!(store.inner().claim(&c, &fingerprint(1), HELD).await, Ok(Claim::InFlight { .. })),
        "c was claimed"
    );
    assert_eq!(store.queued(Operation::Claim), 0);
    assert!(matches!(claim(d).await, Err(StoreError::Unavailable(_))), "the standing fault");
    assert!(
        matches!(store.inner().claim(&d, &fingerprint(1), HELD).await, Ok(Claim::InFlight { .. })),
        "d was claimed"
    );
    store.heal(Operation::Claim);
    assert!(matches!(claim(fresh_key()).await, Ok(Claim::Acquired(_))), "healed");
    assert_eq!((store.calls(Operation::Claim), store.faulted(Operation::Claim)), (5, 3));
    assert_eq!(store.calls(Operation::Renew), 0);
}
