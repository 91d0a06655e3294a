//! A completed record heavier than an in-process store's capacity: it is never silently
//! refused, so a retry never runs the handler a second time. The store keeps it as status and
//! headers and a replay answers with the documented problem, as for a body over the store's
//! limit.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use common::{post_to, Reply};
use idem_runtime::idempotent;
use idem_runtime::store::{LocalTier, MemoryStore, Store};
use idem_runtime::Idempotency;

/// The bytes of completed records the small stores here hold.
const CAPACITY: u64 = 4096;

type Runs = Arc<AtomicUsize>;

/// A 201 with `Location`, `len` bytes of body and `headers` bytes of one extra header.
#[idempotent(required)]
async fn answer(State(runs): State<Runs>, Path((len, headers)): Path<(usize, usize)>) -> Response {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    let mut map = HeaderMap::new();
    map.insert("location", HeaderValue::from_str(&format!("/things/{run}")).unwrap());
    if headers > 0 {
        map.insert("x-padding", HeaderValue::from_str(&"h".repeat(headers)).unwrap());
    }
    (StatusCode::CREATED, map, vec![b'x'; len]).into_response()
}

fn app(store: impl Store) -> (Router, Runs) {
    let runs = Runs::default();
    let app = Router::new()
        .route("/answer/{len}/{headers}", post(answer))
        .layer(Idempotency::new(store))
        .with_state(runs.clone());
    (app, runs)
}

/// Enough retries for the cache's housekeeping to run (it runs after 64 reads at most), which
/// is when a record heavier than the cache would be dropped.
const RETRIES: usize = 100;

/// Sends `path` with `key`, then its retries, and returns the first reply and the last replay.
async fn first_and_retries(app: &Router, runs: &Runs, path: &str, key: &str) -> (Reply, Reply) {
    let first = post_to(path).key(key).send(app).await;
    assert_eq!(first.status, 201);
    assert!(!first.replayed());
    let mut last = None;
    for retry in 0..RETRIES {
        let reply = post_to(path).key(key).send(app).await;
        let seen = format!("{} {:?}, {} bytes", reply.status, reply.header("location"), reply.body.len());
        assert_eq!(runs.load(Ordering::SeqCst), 1, "retry {retry} ran the handler a second time: {seen}");
        assert!(reply.replayed(), "retry {retry} is not a replay: {seen}");
        last = Some(reply);
    }
    (first, last.expect("retries ran"))
}

#[tokio::test]
async fn a_body_within_the_body_limit_but_heavier_than_the_store_is_replayed_as_status_and_headers() {
    let store = MemoryStore::builder().max_bytes(CAPACITY).build();
    // Accepted as kept whole: the body is within the store's per-record body limit.
    let len = 4000;
    assert!(len <= store.max_body_bytes());
    let (app, runs) = app(store);
    let (first, replay) = first_and_retries(&app, &runs, &format!("/answer/{len}/0"), "heavy-body").await;
    assert_eq!(first.body.len(), len, "the first caller gets the whole body");
    assert_eq!(replay.header("location"), Some("/things/1"));
    replay.assert_problem(201, "urn:idem:problem:body-not-stored");
}

#[tokio::test]
async fn headers_alone_heavier_than_the_store_are_still_kept_and_replayed() {
    let (app, runs) = app(MemoryStore::builder().max_bytes(CAPACITY).build());
    let (_, replay) = first_and_retries(&app, &runs, "/answer/10/5000", "heavy-headers").await;
    assert_eq!(replay.header("location"), Some("/things/1"));
    assert_eq!(replay.header("x-padding").map(str::len), Some(5000));
    replay.assert_problem(201, "urn:idem:problem:body-not-stored");
}

#[tokio::test]
async fn a_store_holding_one_heavy_record_keeps_taking_new_ones() {
    let (app, runs) = app(MemoryStore::builder().max_bytes(CAPACITY).build());
    first_and_retries(&app, &runs, "/answer/10/5000", "heavy").await;
    // Later records push the heavy one out, as any least recently used record, and are kept.
    for n in 0..20 {
        let key = format!("light-{n}");
        post_to("/answer/10/0").key(&key).send(&app).await;
        let replay = post_to("/answer/10/0").key(&key).send(&app).await;
        assert!(replay.replayed(), "record {n} was not kept: {replay:?}");
        assert_eq!(replay.body.len(), 10);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 21);
}

#[tokio::test]
async fn a_local_tier_smaller_than_a_record_replays_it_whole_from_the_store_behind() {
    let tier = LocalTier::with_capacity(MemoryStore::new(), 100, CAPACITY);
    let (app, runs) = app(tier);
    let (_, replay) = first_and_retries(&app, &runs, "/answer/4000/0", "tier").await;
    assert_eq!(replay.status, 201);
    assert_eq!(replay.body.len(), 4000, "the store behind kept the whole body");
    assert_eq!(replay.header("location"), Some("/things/1"));
}
