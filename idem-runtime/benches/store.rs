//! Store operations: a miss (claim, complete) and a replay (claim) on the embedded store, on
//! Redis (`RedisStore`, and behind a `LocalTier`) when `IDEM_TEST_REDIS_URL` is set and the
//! `redis` feature is on, and on PostgreSQL (`PgStore`, next to a bare `SELECT 1` round trip on
//! the same pool) when `IDEM_TEST_DATABASE_URL` is set and the `postgres` feature is on.
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

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use idem_runtime::store::{LocalTier, PgStore};
    use sqlx::postgres::{PgPool, PgPoolOptions};

    /// A pool as `PgStore::connect` makes it (no ping before a connection is handed out) and a
    /// store in a schema of its own, dropped after the benchmark.
    struct Bench {
        rt: tokio::runtime::Runtime,
        pool: PgPool,
        store: PgStore,
        schema: String,
    }

    impl Bench {
        fn new() -> Option<Self> {
            let Ok(url) = std::env::var("IDEM_TEST_DATABASE_URL") else {
                eprintln!("skipped: set IDEM_TEST_DATABASE_URL to benchmark PgStore");
                return None;
            };
            let rt = runtime();
            let schema = format!("idem_bench_{}", &fresh_key().to_hex()[..16]);
            let pool = rt
                .block_on(PgPoolOptions::new().max_connections(4).test_before_acquire(false).connect(&url))
                .expect("PostgreSQL reachable");
            let store = PgStore::builder(pool.clone()).schema(&schema).sweep_every(None).build();
            rt.block_on(store.migrate()).expect("the migration runs");
            Some(Self { rt, pool, store, schema })
        }
    }

    impl Drop for Bench {
        fn drop(&mut self) {
            let drop_schema = format!("DROP SCHEMA \"{}\" CASCADE", self.schema);
            let _ = self.rt.block_on(sqlx::query(&drop_schema).execute(&self.pool));
        }
    }

    /// The floor: one prepared statement's round trip on the same pool.
    #[divan::bench]
    fn pg_select_1(bencher: Bencher<'_, '_>) {
        if let Some(bench) = Bench::new() {
            bencher.bench_local(|| {
                bench.rt.block_on(async {
                    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&bench.pool).await.unwrap();
                    assert_eq!(one, 1);
                })
            });
        }
    }

    #[divan::bench]
    fn pg_miss(bencher: Bencher<'_, '_>) {
        if let Some(bench) = Bench::new() {
            bench_miss(bencher, &bench.rt, &bench.store);
        }
    }

    #[divan::bench]
    fn pg_replay(bencher: Bencher<'_, '_>) {
        if let Some(bench) = Bench::new() {
            bench_replay(bencher, &bench.rt, &bench.store);
        }
    }

    #[divan::bench]
    fn pg_replay_warm_local_tier(bencher: Bencher<'_, '_>) {
        if let Some(bench) = Bench::new() {
            bench_replay(bencher, &bench.rt, &LocalTier::new(bench.store.clone()));
        }
    }
}
