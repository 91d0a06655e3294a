//! Store operations: a miss (claim, complete) and a replay (claim) on the embedded store, and
//! on Redis (`RedisStore`, and behind a `LocalTier`) when `IDEM_TEST_REDIS_URL` is set and the
//! `redis` feature is on.
//!
//! `cargo bench -p idem-runtime --all-features --bench store`

use std::time::Duration;

use bytes::Bytes;
use divan::Bencher;
use idem_runtime::store::{Claim, MemoryStore, Store};
use idem_runtime::testkit::{fingerprint, fresh_key, record};

fn main() {
    divan::main();
}

const LEASE: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(3600);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn bench_miss<S: Store>(bencher: Bencher<'_, '_>, rt: &tokio::runtime::Runtime, store: &S) {
    bencher.with_inputs(fresh_key).bench_local_refs(|key| {
        rt.block_on(async {
            let Claim::Acquired(token) = store.claim(key, &fingerprint(1), LEASE).await.unwrap() else {
                panic!("a fresh key is acquired")
            };
            store
                .complete(key, token, record(fingerprint(1), TTL, Some(Bytes::from_static(b"{\"id\":1}"))))
                .await
                .unwrap();
        })
    });
}

fn bench_replay<S: Store>(bencher: Bencher<'_, '_>, rt: &tokio::runtime::Runtime, store: &S) {
    let key = fresh_key();
    rt.block_on(async {
        let Claim::Acquired(token) = store.claim(&key, &fingerprint(1), LEASE).await.unwrap() else { panic!() };
        store.complete(&key, token, record(fingerprint(1), TTL, Some(Bytes::from_static(b"{}")))).await.unwrap();
    });
    bencher.bench_local(|| {
        rt.block_on(async {
            assert!(matches!(store.claim(&key, &fingerprint(1), LEASE).await.unwrap(), Claim::Completed(_)));
        })
    });
}

#[divan::bench]
fn memory_miss(bencher: Bencher<'_, '_>) {
    bench_miss(bencher, &runtime(), &MemoryStore::new());
}

#[divan::bench]
fn memory_replay(bencher: Bencher<'_, '_>) {
    bench_replay(bencher, &runtime(), &MemoryStore::new());
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use idem_runtime::store::{LocalTier, RedisStore};

    fn connect(rt: &tokio::runtime::Runtime) -> Option<RedisStore> {
        let Ok(url) = std::env::var("IDEM_TEST_REDIS_URL") else {
            eprintln!("skipped: set IDEM_TEST_REDIS_URL to benchmark RedisStore");
            return None;
        };
        Some(rt.block_on(RedisStore::builder(url).prefix("idem-bench:").connect()).expect("Redis reachable"))
    }

    #[divan::bench]
    fn redis_miss(bencher: Bencher<'_, '_>) {
        let rt = runtime();
        if let Some(store) = connect(&rt) {
            bench_miss(bencher, &rt, &store);
        }
    }

    #[divan::bench]
    fn redis_replay(bencher: Bencher<'_, '_>) {
        let rt = runtime();
        if let Some(store) = connect(&rt) {
            bench_replay(bencher, &rt, &store);
        }
    }

    #[divan::bench]
    fn redis_replay_warm_local_tier(bencher: Bencher<'_, '_>) {
        let rt = runtime();
        if let Some(store) = connect(&rt) {
            bench_replay(bencher, &rt, &LocalTier::new(store));
        }
    }
}
