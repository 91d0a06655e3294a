//! Stores on Tokio's clock: a test with paused time lets leases and ttls run out without
//! waiting for them.

mod common;

use std::time::Duration;

use common::post_to;
use idem_runtime::store::{Claim, MemoryStore, Store, TokioClock};
use idem_runtime::testkit::{fingerprint, fresh_key, record};

#[tokio::test(start_paused = true)]
async fn a_lease_runs_out_and_a_record_expires_when_the_paused_clock_is_advanced() {
    let store = MemoryStore::builder().clock(TokioClock::new()).build();
    let key = fresh_key();
    let lease = Duration::from_secs(30);
    let Ok(Claim::Acquired(_crashed)) = store.claim(&key, &fingerprint(1), lease).await else { panic!("acquired") };

    tokio::time::advance(Duration::from_secs(29)).await;
    match store.claim(&key, &fingerprint(1), lease).await {
        Ok(Claim::InFlight { lease_left }) => assert_eq!(lease_left, Duration::from_secs(1)),
        other => panic!("within the lease: {other:?}"),
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    let Ok(Claim::Acquired(token)) = store.claim(&key, &fingerprint(1), lease).await else {
        panic!("the lease ran out: the retry takes over")
    };

    // The record expires a day after its completion, on the store's clock.
    let mut stored = record(fingerprint(1), Duration::ZERO, None);
    stored.expires_at = store.now() + Duration::from_secs(86_400);
    store.complete(&key, token, stored).await.unwrap();
    tokio::time::advance(Duration::from_secs(86_399)).await;
    assert!(matches!(store.claim(&key, &fingerprint(1), lease).await, Ok(Claim::Completed(_))));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(matches!(store.claim(&key, &fingerprint(1), lease).await, Ok(Claim::Acquired(_))), "the key is new");
}

#[tokio::test(start_paused = true)]
async fn an_application_test_lets_a_ttl_run_out_without_waiting() {
    let (app, hits) = common::app_with(MemoryStore::builder().clock(TokioClock::new()).build());
    assert_eq!(post_to("/short-ttl").key("k").send(&app).await.status, 201);
    assert!(post_to("/short-ttl").key("k").send(&app).await.replayed());
    // The handler's ttl is one second.
    tokio::time::advance(Duration::from_secs(2)).await;
    let after = post_to("/short-ttl").key("k").send(&app).await;
    assert_eq!(after.status, 201);
    assert!(!after.replayed(), "past its ttl the key is new");
    assert_eq!(hits.get("short_ttl"), 2);
}
