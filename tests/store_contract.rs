//! Every store passes the same contract suite (`idem_runtime::testkit`).

mod common;

use std::sync::Arc;

use idem_runtime::store::{Claim, LocalTier, MemoryStore, RedisStore, Store as _};
use idem_runtime::testkit::check_store;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_the_contract() {
    check_store(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_behind_a_local_tier_passes_the_contract() {
    check_store(Arc::new(LocalTier::new(MemoryStore::new()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_passes_the_contract() {
    let Some(url) = common::redis_url("redis_store_passes_the_contract") else { return };
    let store = contract_redis(url).await;
    check_store(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_behind_a_local_tier_passes_the_contract() {
    let Some(url) = common::redis_url("redis_store_behind_a_local_tier_passes_the_contract") else { return };
    let store = contract_redis(url).await;
    check_store(Arc::new(LocalTier::new(store))).await;
}

async fn contract_redis(url: String) -> RedisStore {
    RedisStore::builder(url)
        .prefix("idem-test:contract:")
        // No other process runs handlers in it: a missing marker means nothing was lost.
        .new_key_space()
        .connect()
        .await
        .expect("Redis is reachable")
}

#[tokio::test]
async fn stores_on_the_applications_client_and_connection_manager_share_keys() {
    let Some(url) = common::redis_url("stores_on_the_applications_client_and_connection_manager_share_keys") else {
        return;
    };
    let client = redis::Client::open(url.as_str()).expect("a valid URL");
    let manager = redis::aio::ConnectionManager::new(client.clone()).await.expect("Redis is reachable");
    let on_client = RedisStore::builder_with_client(client)
        .prefix("idem-test:shared-conn:")
        .new_key_space()
        .connect()
        .await
        .expect("a store on the client");
    let on_manager = RedisStore::builder_with_connection(manager)
        .prefix("idem-test:shared-conn:")
        .new_key_space()
        .connect()
        .await
        .expect("a store on the connection manager");
    let key = idem_runtime::testkit::fresh_key();
    let fp = idem_runtime::testkit::fingerprint(1);
    let long = std::time::Duration::from_secs(30);
    let Ok(Claim::Acquired(token)) = on_client.claim(&key, &fp, long).await else { panic!("the first claim acquires") };
    assert!(matches!(on_manager.claim(&key, &fp, long).await, Ok(Claim::InFlight { .. })));
    let record = idem_runtime::testkit::record(fp, long, Some(bytes::Bytes::from_static(b"{}")));
    on_client.complete(&key, token, record.clone()).await.expect("complete");
    match on_manager.claim(&key, &fp, long).await {
        Ok(Claim::Completed(stored)) => assert_eq!(*stored, record),
        other => panic!("expected the record, got {other:?}"),
    }
}
