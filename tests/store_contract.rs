//! Every store passes the same contract suite (`idem_runtime::testkit`).

mod common;

use std::sync::Arc;

use idem_runtime::store::{LocalTier, MemoryStore, RedisStore};
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
