//! The guide's "Testing your handlers" example (`idem_runtime::guide::testing`), run as it is shown there.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::{routing::post, Router};
use idem_runtime::store::{MemoryStore, TokioClock};
use idem_runtime::{idempotent, Idempotency};
use tower::ServiceExt as _;

#[idempotent(required, ttl = "1h", lease = "10s")]
async fn create_order(order: String) -> (StatusCode, String) {
    // Slow work: it outlives the lease, which idem renews while it runs.
    tokio::time::sleep(Duration::from_secs(30)).await;
    (StatusCode::CREATED, order)
}

/// The store reads Tokio's clock, so a test with paused time moves leases and ttls with it.
fn app() -> Router {
    let store = MemoryStore::builder().clock(TokioClock::new()).build();
    Router::new().route("/orders", post(create_order)).layer(Idempotency::new(store))
}

fn order(key: &str) -> Request<Body> {
    Request::post("/orders").header("idempotency-key", key).body(Body::from("book")).unwrap()
}

fn replayed(response: &axum::response::Response) -> bool {
    response.headers().get("idempotent-replayed").is_some_and(|v| v == "true")
}

#[tokio::test(start_paused = true)]
async fn a_retry_is_replayed_until_the_ttl_runs_out() {
    let app = app();
    let first = app.clone().oneshot(order("k1")).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(!replayed(&first));

    let retry = app.clone().oneshot(order("k1")).await.unwrap();
    assert!(replayed(&retry), "the handler did not run again");

    // `advance` moves the paused clock at once: the record is an hour old, and gone.
    tokio::time::advance(Duration::from_secs(3600)).await;
    let later = app.clone().oneshot(order("k1")).await.unwrap();
    assert_eq!(later.status(), StatusCode::CREATED);
    assert!(!replayed(&later), "past its ttl the key is new");
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_gets_409_while_the_first_runs_even_past_its_lease() {
    let app = app();
    let first = tokio::spawn(app.clone().oneshot(order("k2")));
    // `sleep` lets the first request run while the clock moves: 15 s is past the 10 s lease,
    // which the running request keeps renewing.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let duplicate = app.clone().oneshot(order("k2")).await.unwrap();
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);
    assert!(duplicate.headers().contains_key("retry-after"));

    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(replayed(&app.clone().oneshot(order("k2")).await.unwrap()));
}

// The guide's testing chapter shows this file from its first `use` down to here.

#[test]
fn the_guide_shows_this_example() {
    let source = include_str!("testing_handlers.rs");
    let start = source.find("use std::time").unwrap();
    let end = source.find("// The guide's testing chapter shows this file").unwrap();
    let example = source[start..end].trim_end();
    let chapter = include_str!("../idem-runtime/src/guide/testing.md");
    assert!(chapter.contains(example), "the guide's testing chapter must show tests/testing_handlers.rs");
}
