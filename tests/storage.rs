//! What is kept, and for how long, and the store seam: swapping the store, an unreachable
//! store, what reaches a store at rest, and the tracing events.

mod common;

use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use axum::Router;
use common::{app, app_with, echo, post_to, Down, Spy};
use idem_runtime::store::MemoryStore;
use idem_runtime::Idempotency;

#[tokio::test]
async fn replay_drops_date_and_set_cookie_and_keeps_the_rest() {
    let (app, _) = app();
    let first = post_to("/required").key("h").send(&app).await;
    assert_eq!(first.header("set-cookie"), Some("session=abc"), "the first response is untouched");
    assert!(first.header("date").is_some());
    let replay = post_to("/required").key("h").send(&app).await;
    assert!(replay.replayed());
    assert_eq!(replay.header("set-cookie"), None);
    assert_eq!(replay.header("date"), None);
    assert_eq!(replay.header("location"), Some("/things/1"));
    assert_eq!(replay.header("content-type"), Some("application/json"));
    assert_eq!(replay.header("x-run"), Some("1"));
}

#[tokio::test]
async fn statuses_408_409_425_429_and_5xx_are_not_stored() {
    let (app, hits) = app();
    for code in [408, 409, 425, 429, 500, 502, 503] {
        let key = format!("s{code}");
        let uri = format!("/status/{code}");
        for _ in 0..2 {
            let reply = post_to(&uri).key(&key).send(&app).await;
            assert_eq!(reply.status.as_u16(), code);
            assert!(!reply.replayed(), "{code} must not be replayed");
        }
    }
    assert_eq!(hits.get("status"), 14);
}

#[tokio::test]
async fn a_handler_keeps_and_releases_the_statuses_it_lists() {
    let (app, hits) = app();
    // keep_status(409), release_status(404, 410..=418); everything else as by default.
    for (code, stored) in
        [(409, true), (404, false), (410, false), (415, false), (418, false), (400, true), (201, true), (500, false)]
    {
        let key = format!("p{code}");
        let uri = format!("/status-policy/{code}");
        let before = hits.get("status_policy");
        let first = post_to(&uri).key(&key).send(&app).await;
        assert!(first.status.as_u16() == code && !first.replayed());
        let retry = post_to(&uri).key(&key).send(&app).await;
        assert_eq!(retry.status.as_u16(), code);
        assert_eq!(retry.replayed(), stored, "{code} stored: {stored}");
        assert_eq!(hits.get("status_policy") - before, if stored { 1 } else { 2 }, "{code}");
    }
}

#[tokio::test]
async fn an_allow_list_replays_only_the_listed_headers_and_the_body_description() {
    let (app, hits) = app();
    let first = post_to("/allow-listed").key("a").send(&app).await;
    assert!(first.header("date").is_some() && first.header("x-run").is_some());
    let replay = post_to("/allow-listed").key("a").send(&app).await;
    assert!(replay.replayed());
    assert_eq!(replay.header("location"), Some("/things/1"));
    assert_eq!(replay.header("set-cookie"), Some("session=abc"), "listed, so replayed");
    assert_eq!(replay.header("content-type"), Some("application/json"), "describes the stored body");
    assert_eq!(replay.header("x-run"), None, "not listed");
    assert_eq!(replay.header("date"), None);
    assert_eq!(replay.body, first.body);
    assert_eq!(hits.get("allow_listed"), 1);
}

#[tokio::test]
async fn other_4xx_are_stored_and_replayed() {
    let (app, hits) = app();
    for code in [400, 404, 410, 422] {
        let key = format!("s{code}");
        let uri = format!("/status/{code}");
        assert!(!post_to(&uri).key(&key).send(&app).await.replayed());
        let replay = post_to(&uri).key(&key).send(&app).await;
        assert_eq!(replay.status.as_u16(), code);
        assert!(replay.replayed());
    }
    assert_eq!(hits.get("status"), 4);
}

#[tokio::test]
async fn an_oversized_body_is_returned_whole_and_replayed_as_a_documented_problem() {
    let (app, hits) = app_with(MemoryStore::builder().max_body_bytes(1024).build());
    let first = post_to("/big/5000").key("b").send(&app).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.body.len(), 5000);
    let replay = post_to("/big/5000").key("b").send(&app).await;
    assert!(replay.replayed());
    assert_eq!(replay.header("location"), Some("/big/1"));
    let problem = replay.assert_problem(201, "urn:idem:problem:body-not-stored");
    assert!(problem["detail"].as_str().unwrap().contains("executed"));
    // Within the limit, the body is kept.
    post_to("/big/1024").key("c").send(&app).await;
    let small = post_to("/big/1024").key("c").send(&app).await;
    assert_eq!(small.body.len(), 1024);
    assert!(small.replayed());
    assert_eq!(hits.get("big"), 2);
}

#[tokio::test]
async fn a_request_body_over_the_limit_is_413_before_anything_runs() {
    let app = Router::new().route("/echo", post(echo)).layer(DefaultBodyLimit::max(64));
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(100));
    post_to("/echo").key("k").json(&big).send(&app).await.assert_problem(413, "urn:idem:problem:body-too-large");
    // A body within the limit goes through.
    assert_eq!(post_to("/echo").key("k2").json("{}").send(&app).await.status, 200);
}

#[tokio::test]
async fn a_store_sees_digests_never_the_raw_key_or_credential() {
    let spy = Spy::default();
    let app = Router::new().route("/echo", post(echo)).layer(Idempotency::new(spy.clone()));
    let send = || {
        post_to("/echo").key("raw-key-0123456789").header("authorization", "Bearer cred-9876543210").json(r#"{"a":1}"#)
    };
    assert!(!send().send(&app).await.replayed());
    assert!(send().send(&app).await.replayed(), "the swapped-in store serves the replay");
    let seen = spy.bytes.lock().unwrap().clone();
    common::assert_holds_no_secret(&seen, &[b"raw-key-0123456789", b"cred-9876543210", b"Bearer"]);
}

#[tokio::test]
async fn an_unreachable_store_fails_closed_with_503_and_retry_after() {
    let app = Router::new().route("/echo", post(echo)).layer(Idempotency::new(Down));
    let reply = post_to("/echo").key("k").send(&app).await;
    reply.assert_problem(503, "urn:idem:problem:store-unavailable");
    assert_eq!(reply.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn fail_open_runs_the_handler_without_idempotency() {
    let app = Router::new().route("/echo", post(echo)).layer(Idempotency::new(Down).fail_open(true));
    let reply = post_to("/echo").key("k").json(r#"{"ok":true}"#).send(&app).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), serde_json::json!({"ok": true}));
    assert!(!reply.replayed());
}
