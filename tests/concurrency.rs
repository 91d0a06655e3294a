//! Concurrency, crashes, disconnects and panics.

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::{app, app_with, eventually, post_to};
use idem_runtime::store::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_duplicates_run_the_handler_once() {
    let (app, hits) = app();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(50));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (app, barrier) = (app.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                post_to("/slow").key("dup").json(r#"{"n":1}"#).send(&app).await
            })
        })
        .collect();
    let mut executed = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.status.as_u16() {
            201 if !reply.replayed() => executed += 1,
            201 => {}
            409 => {
                reply.assert_problem(409, "urn:idem:problem:in-flight");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(executed, 1);
    assert_eq!(hits.get("slow"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_waiters_all_get_the_one_response() {
    let (app, hits) = app();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { post_to("/wait").key("w").send(&app).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, 201);
        bodies.push(reply.body);
    }
    bodies.dedup();
    assert_eq!(bodies.len(), 1, "every caller saw the same response");
    assert_eq!(hits.get("wait"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_dropping_mid_handler_then_retrying_gets_the_replay() {
    let (app, hits) = app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Send the request, then reset the socket while the handler sleeps.
    let stream = std::net::TcpStream::connect(addr).unwrap();
    (&stream)
        .write_all(b"POST /slow HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nIdempotency-Key: gone\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    eventually(Duration::from_secs(5), || hits.get("slow_started") == 1).await;
    drop(stream);

    // The handler still runs to completion and its response is stored.
    eventually(Duration::from_secs(5), || hits.get("slow") == 1).await;
    let retry = tokio::task::spawn_blocking(move || {
        common::wire(addr, "POST", "/slow", &[("Idempotency-Key", "gone"), ("Content-Type", "application/json")], "{}")
    })
    .await
    .unwrap();
    assert_eq!(retry.status, 201);
    assert!(retry.replayed(), "{}", retry.head);
    assert_eq!(hits.get("slow_started"), 1);
    assert_eq!(hits.get("slow"), 1);
}

#[tokio::test]
async fn a_panicking_handler_is_500_and_releases_the_key() {
    let (app, hits) = app();
    let first = post_to("/panics-once").key("p").send(&app).await;
    first.assert_problem(500, "urn:idem:problem:handler-panicked");
    let retry = post_to("/panics-once").key("p").send(&app).await;
    assert_eq!(retry.status, 201);
    assert!(!retry.replayed());
    assert!(post_to("/panics-once").key("p").send(&app).await.replayed());
    assert_eq!(hits.get("panics_once"), 2);
}

#[tokio::test]
async fn a_5xx_is_not_stored_and_the_retry_runs_again() {
    let (app, hits) = app();
    let first = post_to("/fails-once").key("f").send(&app).await;
    assert_eq!(first.status, 500);
    let retry = post_to("/fails-once").key("f").send(&app).await;
    assert_eq!(retry.status, 201);
    assert!(!retry.replayed());
    assert!(post_to("/fails-once").key("f").send(&app).await.replayed());
    assert_eq!(hits.get("fails_once"), 2);
}

#[tokio::test]
async fn a_handler_outliving_its_lease_renews_it_and_no_duplicate_gets_in() {
    let (app, hits) = app();
    let first = {
        let app = app.clone();
        tokio::spawn(async move { post_to("/outlives-lease").key("l").send(&app).await })
    };
    eventually(Duration::from_secs(5), || hits.get("outlives_lease_started") == 1).await;
    // Well past the 300 ms lease: the running handler has renewed it.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        post_to("/outlives-lease").key("l").send(&app).await.assert_problem(409, "urn:idem:problem:in-flight");
    }
    assert_eq!(first.await.unwrap().status, 201);
    assert!(post_to("/outlives-lease").key("l").send(&app).await.replayed());
    assert_eq!(hits.get("outlives_lease_started"), 1);
}

#[tokio::test]
async fn a_record_expires_after_its_ttl_and_the_key_is_new_again() {
    let (app, hits) = app();
    assert_eq!(post_to("/short-ttl").key("t").send(&app).await.status, 201);
    assert!(post_to("/short-ttl").key("t").send(&app).await.replayed());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = post_to("/short-ttl").key("t").send(&app).await;
    assert_eq!(after.status, 201);
    assert!(!after.replayed());
    assert_eq!(hits.get("short_ttl"), 2);
}

#[tokio::test]
async fn capacity_pressure_evicts_the_oldest_records_and_keeps_the_newest() {
    // The records most likely to be retried are the newest: a full store must make room by
    // dropping old ones, never by refusing the one just completed.
    let store = MemoryStore::builder().max_entries(50).max_bytes(64 * 1024).build();
    let (app, hits) = app_with(store);
    for i in 0..1_000 {
        let reply = post_to("/required").key(&format!("k-{i}")).send(&app).await;
        assert!(reply.status == 201 && !reply.replayed(), "k-{i} ran");
        // A retry of a request ten requests back.
        if i >= 10 {
            let key = format!("k-{}", i - 10);
            assert!(post_to("/required").key(&key).send(&app).await.replayed(), "{key} replayed");
        }
    }
    assert_eq!(hits.get("required"), 1_000);
    // The oldest was evicted: its retry runs the handler again, as the guide's stores chapter says.
    assert!(!post_to("/required").key("k-0").send(&app).await.replayed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_pressure_does_not_evict_an_in_flight_claim() {
    let store = MemoryStore::builder().max_entries(50).max_bytes(64 * 1024).build();
    let (app, hits) = app_with(store);
    let first = {
        let app = app.clone();
        tokio::spawn(async move { post_to("/gated").key("held").send(&app).await })
    };
    eventually(Duration::from_secs(5), || hits.get("gated_started") == 1).await;
    // Far more completed records than the store holds, while "held" runs.
    for i in 0..2_000 {
        post_to("/required").key(&format!("filler-{i}")).send(&app).await;
    }
    post_to("/gated").key("held").send(&app).await.assert_problem(409, "urn:idem:problem:in-flight");
    hits.open_gate();
    assert_eq!(first.await.unwrap().status, 201);
    assert!(post_to("/gated").key("held").send(&app).await.replayed());
    assert_eq!(hits.get("gated"), 1);
}
