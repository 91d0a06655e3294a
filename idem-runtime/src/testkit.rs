//! The store contract suite (feature `testkit`): what every [`Store`] must pass. idem runs it
//! against `MemoryStore`, `RedisStore` and both behind a `LocalTier`; run it against yours.
//!
//! Two checks:
//!
//! - [`check_protocol`]: a model-based check of the claim/lease/complete protocol — random
//!   interleavings of several owners, crashes, outages (including replies lost after the
//!   operation took effect), the clock jumping past leases and ttls, and for a store that can
//!   forget what it holds, forgetting — against a reference model, with the invariants checked
//!   after every step. The store runs on a [`ManualClock`], so nothing waits.
//! - [`check_store`]: scenarios on the real clock, among them 64 concurrent claims of one key.
//!
//! And [`FaultyStore`], which wraps any store (yours too) and injects faults by a schedule
//! (delays, errors before or after an operation took effect, replies that never come), to
//! drive an application's requests through them.
//!
//! ```no_run
//! use idem_runtime::{store::MemoryStore, testkit};
//!
//! let report = testkit::check_protocol(
//!     |clock| async move { testkit::Subject::new(MemoryStore::builder().clock(clock).build()) },
//!     64,
//! );
//! println!("{report}");
//! ```
//!
//! ```no_run
//! # async fn demo() {
//! use std::sync::Arc;
//! use idem_runtime::{store::MemoryStore, testkit};
//!
//! testkit::check_store(Arc::new(MemoryStore::new())).await;
//! # }
//! ```
//!
//! Each check uses fresh keys, so a shared store (one Redis for many test runs) is fine.
//! [`check_store`]'s scenarios wait for leases and TTLs of a few hundred milliseconds, so it
//! takes about two seconds. A failed check panics with its name.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use crate::fingerprint::Fingerprint;
use crate::record::{Record, StoredBody};
use crate::store::{Claim, ClaimToken, RecordKey, Store, StoreError};

mod faults;
mod protocol;

pub use faults::{Fault, FaultyStore, Operation};
pub use protocol::{check_protocol, ManualClock, ProtocolReport, Subject, MODEL_MAX_LEASE};

const LEASE: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(30);

/// A record key no other check or run uses.
pub fn fresh_key() -> RecordKey {
    static SEED: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = SEED.get_or_init(RandomState::new).hash_one(n);
    let mut h = Sha256::new();
    h.update(b"idem-testkit");
    h.update(seed.to_be_bytes());
    h.update(n.to_be_bytes());
    RecordKey::from_digest(h.finalize().into())
}

/// A fingerprint numbered `n`.
pub fn fingerprint(n: u8) -> Fingerprint {
    Fingerprint::from_bytes([n; 32])
}

/// A 201 record with `Location` and `body` (`None`: too large to keep), expiring after `ttl`.
pub fn record(fingerprint: Fingerprint, ttl: Duration, body: Option<Bytes>) -> Record {
    let mut headers = HeaderMap::new();
    headers.insert(header::LOCATION, HeaderValue::from_static("/orders/1"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Whole milliseconds, the precision of the byte encoding.
    let expires_at = SystemTime::now() + ttl;
    let ms = expires_at.duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64;
    Record {
        fingerprint,
        status: StatusCode::CREATED,
        headers,
        body: body.map_or(StoredBody::TooLarge, StoredBody::Kept),
        expires_at: UNIX_EPOCH + Duration::from_millis(ms),
    }
}

fn acquired(claim: Claim, check: &str) -> ClaimToken {
    match claim {
        Claim::Acquired(token) => token,
        other => panic!("{check}: expected Acquired, got {other:?}"),
    }
}

async fn claim<S: Store>(store: &S, key: &RecordKey, fp: u8, lease: Duration, check: &str) -> Claim {
    store.claim(key, &fingerprint(fp), lease).await.unwrap_or_else(|e| panic!("{check}: claim failed: {e}"))
}

/// Runs every check, in order.
pub async fn check_store<S: Store>(store: Arc<S>) {
    claim_is_atomic(store.clone()).await;
    completed_is_replayed(&*store).await;
    trailers_are_kept(&*store).await;
    mismatch(&*store).await;
    in_flight_conflict(&*store).await;
    release_frees_the_key(&*store).await;
    lease_expiry_allows_takeover(&*store).await;
    renewal_keeps_the_claim(&*store).await;
    stale_owner_is_fenced(&*store).await;
    ttl_expiry(&*store).await;
    size_limit(&*store).await;
}

/// 64 concurrent claims of one key: exactly one acquires, the others see it in flight.
pub async fn claim_is_atomic<S: Store>(store: Arc<S>) {
    let key = fresh_key();
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.claim(&key, &fingerprint(1), LONG).await
            })
        })
        .collect();
    let (mut acquired, mut in_flight) = (0, 0);
    for task in tasks {
        match task.await.expect("claim task") {
            Ok(Claim::Acquired(_)) => acquired += 1,
            Ok(Claim::InFlight { lease_left }) => {
                assert!(lease_left <= LONG, "claim_is_atomic: lease_left {lease_left:?} exceeds the lease");
                in_flight += 1;
            }
            other => panic!("claim_is_atomic: unexpected {other:?}"),
        }
    }
    assert_eq!((acquired, in_flight), (1, 63), "claim_is_atomic: one claim wins, 63 see it in flight");
}

/// A completed key with the same fingerprint returns the record, intact.
pub async fn completed_is_replayed<S: Store>(store: &S) {
    let check = "completed_is_replayed";
    let key = fresh_key();
    let token = acquired(claim(store, &key, 1, LONG, check).await, check);
    let stored = record(fingerprint(1), LONG, Some(Bytes::from_static(b"{\"id\":1}")));
    store.complete(&key, token, stored.clone()).await.unwrap_or_else(|e| panic!("{check}: complete: {e}"));
    for _ in 0..2 {
        match claim(store, &key, 1, LONG, check).await {
            Claim::Completed(record) => assert_eq!(*record, stored, "{check}: the record changed in the store"),
            other => panic!("{check}: expected Completed, got {other:?}"),
        }
    }
}

/// A record whose body ended with trailers comes back with them, intact.
pub async fn trailers_are_kept<S: Store>(store: &S) {
    let check = "trailers_are_kept";
    let key = fresh_key();
    let token = acquired(claim(store, &key, 1, LONG, check).await, check);
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("sha-256=:n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=:"));
    trailers.append("grpc-message", HeaderValue::from_static("first"));
    trailers.append("grpc-message", HeaderValue::from_static("second"));
    let mut stored = record(fingerprint(1), LONG, None);
    stored.body = StoredBody::kept(Bytes::from_static(b"{\"id\":1}"), trailers);
    store.complete(&key, token, stored.clone()).await.unwrap_or_else(|e| panic!("{check}: complete: {e}"));
    match claim(store, &key, 1, LONG, check).await {
        Claim::Completed(record) => assert_eq!(*record, stored, "{check}: the record changed in the store"),
        other => panic!("{check}: expected Completed, got {other:?}"),
    }
}

/// A completed key with another fingerprint is a mismatch, and stays completed.
pub async fn mismatch<S: Store>(store: &S) {
    let check = "mismatch";
    let key = fresh_key();
    let token = acquired(claim(store, &key, 1, LONG, check).await, check);
    store.complete(&key, token, record(fingerprint(1), LONG, Some(Bytes::new()))).await.expect("complete");
    assert!(matches!(claim(store, &key, 2, LONG, check).await, Claim::Mismatch), "{check}: other fingerprint");
    assert!(matches!(claim(store, &key, 1, LONG, check).await, Claim::Completed(_)), "{check}: still completed");
}

/// An in-flight key: the same fingerprint is a conflict, another one a mismatch.
pub async fn in_flight_conflict<S: Store>(store: &S) {
    let check = "in_flight_conflict";
    let key = fresh_key();
    acquired(claim(store, &key, 1, LONG, check).await, check);
    match claim(store, &key, 1, LONG, check).await {
        Claim::InFlight { lease_left } => assert!(lease_left > Duration::ZERO && lease_left <= LONG, "{check}"),
        other => panic!("{check}: expected InFlight, got {other:?}"),
    }
    assert!(matches!(claim(store, &key, 2, LONG, check).await, Claim::Mismatch), "{check}: other fingerprint");
}

/// A released key can be claimed again, and the old token no longer works.
pub async fn release_frees_the_key<S: Store>(store: &S) {
    let check = "release_frees_the_key";
    let key = fresh_key();
    let first = acquired(claim(store, &key, 1, LONG, check).await, check);
    store.release(&key, first).await.unwrap_or_else(|e| panic!("{check}: release: {e}"));
    let second = acquired(claim(store, &key, 1, LONG, check).await, check);
    assert_ne!(first, second, "{check}: a new claim gets a new token");
    assert!(matches!(store.release(&key, first).await, Err(StoreError::LeaseLost)), "{check}: old token released");
}

/// A claim whose lease ran out is taken over by the next claim.
pub async fn lease_expiry_allows_takeover<S: Store>(store: &S) {
    let check = "lease_expiry_allows_takeover";
    let key = fresh_key();
    acquired(claim(store, &key, 1, LEASE, check).await, check);
    assert!(matches!(claim(store, &key, 1, LEASE, check).await, Claim::InFlight { .. }), "{check}: before expiry");
    tokio::time::sleep(LEASE + Duration::from_millis(100)).await;
    acquired(claim(store, &key, 1, LEASE, check).await, check);
}

/// Renewing keeps a claim past its original lease.
pub async fn renewal_keeps_the_claim<S: Store>(store: &S) {
    let check = "renewal_keeps_the_claim";
    let key = fresh_key();
    let token = acquired(claim(store, &key, 1, LEASE, check).await, check);
    for _ in 0..4 {
        tokio::time::sleep(LEASE / 2).await;
        store.renew(&key, token, LEASE).await.unwrap_or_else(|e| panic!("{check}: renew: {e}"));
    }
    assert!(matches!(claim(store, &key, 1, LEASE, check).await, Claim::InFlight { .. }), "{check}: still held");
    store.complete(&key, token, record(fingerprint(1), LONG, None)).await.expect("complete after renewals");
}

/// After a takeover, the stale owner can neither complete, renew nor release, and the new
/// owner's result stands.
pub async fn stale_owner_is_fenced<S: Store>(store: &S) {
    let check = "stale_owner_is_fenced";
    let key = fresh_key();
    let stale = acquired(claim(store, &key, 1, LEASE, check).await, check);
    tokio::time::sleep(LEASE + Duration::from_millis(100)).await;
    let owner = acquired(claim(store, &key, 1, LONG, check).await, check);
    let stale_record = record(fingerprint(1), LONG, Some(Bytes::from_static(b"stale")));
    assert!(matches!(store.complete(&key, stale, stale_record).await, Err(StoreError::LeaseLost)), "{check}: complete");
    assert!(matches!(store.renew(&key, stale, LONG).await, Err(StoreError::LeaseLost)), "{check}: renew");
    assert!(matches!(store.release(&key, stale).await, Err(StoreError::LeaseLost)), "{check}: release");
    let fresh = record(fingerprint(1), LONG, Some(Bytes::from_static(b"fresh")));
    store.complete(&key, owner, fresh.clone()).await.expect("the new owner completes");
    let stale_again = record(fingerprint(1), LONG, Some(Bytes::from_static(b"stale")));
    assert!(matches!(store.complete(&key, stale, stale_again).await, Err(StoreError::LeaseLost)), "{check}: late");
    match claim(store, &key, 1, LONG, check).await {
        Claim::Completed(record) => assert_eq!(record.body, fresh.body, "{check}: the new owner's result stands"),
        other => panic!("{check}: expected Completed, got {other:?}"),
    }
}

/// A record past its TTL is gone: the key is new again.
pub async fn ttl_expiry<S: Store>(store: &S) {
    let check = "ttl_expiry";
    let key = fresh_key();
    let token = acquired(claim(store, &key, 1, LONG, check).await, check);
    let ttl = Duration::from_millis(400);
    store.complete(&key, token, record(fingerprint(1), ttl, Some(Bytes::new()))).await.expect("complete");
    assert!(matches!(claim(store, &key, 2, LONG, check).await, Claim::Mismatch), "{check}: before expiry");
    tokio::time::sleep(ttl + Duration::from_millis(150)).await;
    acquired(claim(store, &key, 2, LONG, check).await, check);
}

/// A body of exactly the store's limit is kept whole; a record without a body (one over the
/// limit) keeps its status and headers.
pub async fn size_limit<S: Store>(store: &S) {
    let check = "size_limit";
    let limit = store.max_body_bytes();
    assert!(limit > 0, "{check}: the limit is positive");
    let key = fresh_key();
    let token = acquired(claim(store, &key, 1, LONG, check).await, check);
    let full = record(fingerprint(1), LONG, Some(Bytes::from(vec![b'x'; limit])));
    store.complete(&key, token, full).await.expect("complete at the limit");
    match claim(store, &key, 1, LONG, check).await {
        Claim::Completed(record) => assert_eq!(record.body.bytes().map(Bytes::len), Some(limit), "{check}"),
        other => panic!("{check}: expected Completed, got {other:?}"),
    }
    let key = fresh_key();
    let token = acquired(claim(store, &key, 1, LONG, check).await, check);
    let headless = record(fingerprint(1), LONG, None);
    store.complete(&key, token, headless.clone()).await.expect("complete without body");
    match claim(store, &key, 1, LONG, check).await {
        Claim::Completed(record) => {
            assert_eq!(record.body, StoredBody::TooLarge, "{check}");
            assert_eq!(record.status, headless.status, "{check}");
            assert_eq!(record.headers, headless.headers, "{check}");
        }
        other => panic!("{check}: expected Completed, got {other:?}"),
    }
}
