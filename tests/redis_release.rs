//! The Redis store puts back a claim it forgot (its owner's renewal or completion re-asserts
//! it), never one its owner released: a renewal still on its way when the key is released
//! must not leave a claim that nobody owns, answered 409 to every retry for a whole lease.
//!
//! A renewal on its way is made here the way it happens in production: Redis no longer has
//! the script cached (a restart, a failover, `SCRIPT FLUSH`), so the renewal's first attempt
//! fails, the script is loaded, and the renewal is sent again, after the release that was sent
//! meanwhile. Those tests run on a private `redis-server`, since they flush its scripts.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use common::RedisServer;
use idem_runtime::store::{Claim, ClaimToken, RecordKey, RedisStore, Store as _, StoreError};
use idem_runtime::testkit::{fingerprint, fresh_key, record};

const LEASE: Duration = Duration::from_secs(30);

async fn shared_store(test: &str) -> Option<RedisStore> {
    let url = common::redis_url(test)?;
    let store = RedisStore::builder(url).prefix("idem-test:release:").new_key_space().connect().await;
    Some(store.expect("Redis is reachable"))
}

async fn acquire(store: &RedisStore, key: &RecordKey) -> ClaimToken {
    match store.claim(key, &fingerprint(1), LEASE).await {
        Ok(Claim::Acquired(token)) => token,
        other => panic!("the key is not free: a new claim got {other:?}"),
    }
}

#[tokio::test]
async fn a_renewal_after_the_release_does_not_put_the_claim_back() {
    let Some(store) = shared_store("a_renewal_after_the_release_does_not_put_the_claim_back").await else { return };
    let key = fresh_key();
    let token = acquire(&store, &key).await;
    store.release(&key, token).await.expect("the owner releases");
    assert!(matches!(store.renew(&key, token, LEASE).await, Err(StoreError::LeaseLost)));
    acquire(&store, &key).await;
}

#[tokio::test]
async fn a_completion_after_the_release_stores_nothing() {
    let Some(store) = shared_store("a_completion_after_the_release_stores_nothing").await else { return };
    let key = fresh_key();
    let token = acquire(&store, &key).await;
    store.release(&key, token).await.expect("the owner releases");
    let late = record(fingerprint(1), LEASE, None);
    assert!(matches!(store.complete(&key, token, late).await, Err(StoreError::LeaseLost)));
    acquire(&store, &key).await;
}

/// A store on a private server the test just started, and a connection to flush its scripts.
async fn private(test: &str) -> Option<(RedisServer, RedisStore, redis::Connection)> {
    let server = RedisServer::start(test)?;
    let store = RedisStore::builder(server.url()).new_key_space().connect().await.expect("Redis is reachable");
    let conn = redis::Client::open(server.url()).unwrap().get_connection().unwrap();
    Some((server, store, conn))
}

/// Makes Redis forget its scripts, as a restart or a failover does.
fn flush_scripts(conn: &mut redis::Connection) {
    redis::cmd("SCRIPT").arg("FLUSH").exec(conn).unwrap();
}

/// `op`, sent on its way: polled once, so its script is on the wire (and, with the scripts
/// flushed, it takes effect only after a reload, after whatever is sent meanwhile).
async fn on_its_way<F: Future>(op: F) -> Pin<Box<F>> {
    let mut op = Box::pin(op);
    let sent = std::future::poll_fn(|cx| Poll::Ready(op.as_mut().poll(cx).is_pending())).await;
    assert!(sent, "the operation finished at once: it was not on its way");
    op
}

#[tokio::test]
async fn a_renewal_on_its_way_when_the_key_is_released_does_not_put_the_claim_back() {
    let Some((_server, store, mut conn)) = private("renewal on its way at release").await else { return };
    let key = fresh_key();
    let token = acquire(&store, &key).await;
    flush_scripts(&mut conn);
    let renewal = on_its_way(store.renew(&key, token, LEASE)).await;
    store.release(&key, token).await.expect("the owner releases");
    let renewed = renewal.await;
    // The key is free: a retry runs the handler instead of getting 409 for a whole lease.
    acquire(&store, &key).await;
    assert!(matches!(renewed, Err(StoreError::LeaseLost)), "the late renewal got {renewed:?}");
}

#[tokio::test]
async fn a_completion_on_its_way_when_the_key_is_released_stores_nothing() {
    let Some((_server, store, mut conn)) = private("completion on its way at release").await else { return };
    let key = fresh_key();
    let token = acquire(&store, &key).await;
    flush_scripts(&mut conn);
    let completion = on_its_way(store.complete(&key, token, record(fingerprint(1), LEASE, None))).await;
    store.release(&key, token).await.expect("the owner releases");
    let completed = completion.await;
    acquire(&store, &key).await;
    assert!(matches!(completed, Err(StoreError::LeaseLost)), "the late completion got {completed:?}");
}

#[tokio::test]
async fn a_claim_redis_forgot_is_put_back_by_its_owner_and_released_for_good() {
    let Some((_server, store, mut conn)) = private("forgotten claim, then released").await else { return };
    let key = fresh_key();
    let token = acquire(&store, &key).await;
    // Redis loses the claim alone (a failover to a replica that missed it): its owner's renewal
    // puts it back.
    redis::cmd("DEL").arg(store.redis_key(&key)).exec(&mut conn).unwrap();
    store.renew(&key, token, LEASE).await.expect("the owner re-asserts a claim Redis forgot");
    assert!(matches!(store.claim(&key, &fingerprint(1), LEASE).await, Ok(Claim::InFlight { .. })));
    // Forgotten again, then released while a renewal is on its way: the release is remembered.
    redis::cmd("DEL").arg(store.redis_key(&key)).exec(&mut conn).unwrap();
    flush_scripts(&mut conn);
    let renewal = on_its_way(store.renew(&key, token, LEASE)).await;
    let released = store.release(&key, token).await;
    assert!(matches!(released, Err(StoreError::LeaseLost)), "the claim was not there: {released:?}");
    let renewed = renewal.await;
    acquire(&store, &key).await;
    assert!(matches!(renewed, Err(StoreError::LeaseLost)), "the late renewal got {renewed:?}");
}
