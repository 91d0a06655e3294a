//! The PostgreSQL store against a real server (`IDEM_TEST_DATABASE_URL`), each test in a
//! schema of its own: the contract suite, the model-based protocol check, the sweep, the
//! migration, what is kept at rest and how many statements a request costs.
//!
//! `IDEM_MODEL_CASES` sets the protocol check's cases, e.g. for a long run:
//! `IDEM_MODEL_CASES=20000 cargo test --release --all-features --test pg_store protocol -- --nocapture`

mod common;
mod pg_common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{app_with, post_to};
use idem_runtime::store::{Claim, ClaimToken, LocalTier, PgStore, RecordKey, Store};
use idem_runtime::testkit::{
    check_protocol, check_store, fingerprint, fresh_key, record, ManualClock, ProtocolReport, Subject,
};
use pg_common::{CountingProxy, TestSchema};
use sqlx::postgres::{PgPool, PgPoolOptions};

/// Cases per store in a default run: about six seconds each in a debug build.
const CASES: u32 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_store_passes_the_contract() {
    let Some(schema) = TestSchema::create("pg_store_passes_the_contract").await else { return };
    check_store(Arc::new(schema.store().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_store_behind_a_local_tier_passes_the_contract() {
    let Some(schema) = TestSchema::create("pg_store_behind_a_local_tier_passes_the_contract").await else { return };
    check_store(Arc::new(LocalTier::new(schema.store().await))).await;
}

fn report(store: &str, started: Instant, report: ProtocolReport) {
    println!("{store}: {report}\n  in {:.1} s", started.elapsed().as_secs_f64());
}

/// Runs the protocol check on stores over one pool, made inside the check's own runtime (a
/// pool belongs to the runtime it was made in).
fn protocol_check<S: Store>(test: &str, name: &str, wrap: fn(PgStore) -> S) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(schema) = runtime.block_on(TestSchema::create(test)) else { return };
    drop(runtime);
    let pool: Arc<Mutex<Option<PgPool>>> = Arc::default();
    let started = Instant::now();
    let run = check_protocol(
        |clock| {
            let (pool, schema) = (pool.clone(), &schema);
            async move {
                let existing = pool.lock().unwrap().clone();
                let shared = match existing {
                    Some(shared) => shared,
                    None => {
                        let made = schema.pool(4).await;
                        *pool.lock().unwrap() = Some(made.clone());
                        made
                    }
                };
                Subject::new(wrap(schema.builder(shared).clock(clock).build()))
            }
        },
        CASES,
    );
    report(name, started, run);
}

#[test]
fn pg_store_follows_the_protocol() {
    protocol_check("pg_store_follows_the_protocol", "PgStore", |store| store);
}

#[test]
fn pg_store_behind_a_local_tier_follows_the_protocol() {
    protocol_check("pg_store_behind_a_local_tier_follows_the_protocol", "LocalTier<PgStore>", LocalTier::new);
}

async fn rows(store: &PgStore) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {}", store.table())).fetch_one(store.pool()).await.unwrap()
}

async fn acquire(store: &impl Store, key: &RecordKey, lease: Duration) -> ClaimToken {
    match store.claim(key, &fingerprint(1), lease).await.unwrap() {
        Claim::Acquired(token) => token,
        other => panic!("expected Acquired, got {other:?}"),
    }
}

/// A key completed with a record that lives `ttl` on the store's clock.
async fn completed(store: &PgStore, ttl: Duration) -> RecordKey {
    let key = fresh_key();
    let token = acquire(store, &key, Duration::from_secs(30)).await;
    let mut stored = record(fingerprint(1), Duration::ZERO, Some(Bytes::from_static(b"{}")));
    stored.expires_at = store.now() + ttl;
    store.complete(&key, token, stored).await.unwrap();
    key
}

#[tokio::test]
async fn the_sweep_deletes_expired_records_and_abandoned_claims_and_keeps_live_ones() {
    let Some(schema) = TestSchema::create("the_sweep").await else { return };
    let clock = ManualClock::new();
    let store = schema
        .builder(schema.pool(2).await)
        .clock(clock.clone())
        .sweep_every(None)
        .sweep_batch(2)
        .abandoned_after(Duration::from_secs(600))
        .build();
    let minute = Duration::from_secs(60);
    // Six records for a minute (three batches of two, and a short one), one for an hour.
    let mut short = Vec::new();
    for _ in 0..6 {
        short.push(completed(&store, minute).await);
    }
    let long = completed(&store, 60 * minute).await;
    // A claim whose owner crashed, and one whose owner keeps renewing.
    let abandoned = fresh_key();
    acquire(&store, &abandoned, Duration::from_secs(30)).await;
    let running = fresh_key();
    let token = acquire(&store, &running, Duration::from_secs(30)).await;
    assert_eq!(rows(&store).await, 9);
    assert_eq!(store.sweep().await.unwrap(), 0, "nothing is past its time yet");

    clock.advance(2 * minute);
    store.renew(&running, token, 30 * minute).await.unwrap();
    assert_eq!(store.sweep().await.unwrap(), 6, "the expired records go, in batches");
    assert_eq!(rows(&store).await, 3);
    // The abandoned claim's lease ran out at 30 s: any claim may take it over, but its row
    // stays until ten minutes after that.
    clock.advance(8 * minute);
    assert_eq!(store.sweep().await.unwrap(), 0);
    clock.advance(minute);
    assert_eq!(store.sweep().await.unwrap(), 1, "the abandoned claim goes");
    assert_eq!(rows(&store).await, 2);

    assert!(matches!(store.claim(&long, &fingerprint(1), minute).await.unwrap(), Claim::Completed(_)));
    assert!(matches!(store.claim(&running, &fingerprint(1), minute).await.unwrap(), Claim::InFlight { .. }));
    store.complete(&running, token, record(fingerprint(1), Duration::ZERO, None)).await.unwrap_or_else(|e| {
        panic!("the running owner still holds its claim: {e}");
    });
    for key in short.iter().chain([&abandoned]) {
        acquire(&store, key, minute).await;
    }
}

#[tokio::test]
async fn the_background_sweep_runs_on_its_interval_and_stops_with_the_store() {
    let Some(schema) = TestSchema::create("the_background_sweep").await else { return };
    let clock = ManualClock::new();
    let sessions = format!("{}_sweeper", schema.name);
    let pool = schema.pool_named(2, &sessions).await;
    let store = schema.builder(pool).clock(clock.clone()).sweep_every(Some(Duration::from_millis(20))).build();
    let expired = completed(&store, Duration::from_secs(1)).await;
    let live = completed(&store, Duration::from_secs(3600)).await;
    clock.advance(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(10);
    while rows(&store).await > 1 {
        assert!(Instant::now() < deadline, "the background sweep did not run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lease = Duration::from_secs(1);
    assert!(matches!(store.claim(&live, &fingerprint(1), lease).await.unwrap(), Claim::Completed(_)));
    acquire(&store, &expired, lease).await;
    // The task holds the pool too: once the store is dropped and the task ended, the pool's
    // last handle is gone and its sessions close.
    drop(store);
    let observer = schema.pool(1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(&sessions)
            .fetch_one(&observer)
            .await
            .unwrap();
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the sweep task outlived its store: {open} sessions open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_migration_is_idempotent_and_safe_to_run_from_many_instances_at_once() {
    let Some(schema) = TestSchema::create("the_migration").await else { return };
    let pool = schema.pool(8).await;
    let store = schema.builder(pool.clone()).build();
    store.migrate().await.unwrap();
    // A fresh table in another schema, migrated by eight instances starting together.
    let other = format!("{}_b", schema.name);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = PgStore::builder(pool.clone()).schema(&other).build();
            tokio::spawn(async move { store.migrate().await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let other_store = PgStore::builder(pool.clone()).schema(&other).build();
    let key = fresh_key();
    acquire(&other_store, &key, Duration::from_secs(1)).await;
    sqlx::query(&format!("DROP SCHEMA \"{other}\" CASCADE")).execute(&pool).await.unwrap();
    assert!(PgStore::MIGRATION.contains("CREATE TABLE IF NOT EXISTS \"public\".\"idem_records\""));
    assert!(store.migration().contains(&format!("\"{}\".\"idem_records\"", schema.name)));
}

#[tokio::test]
async fn the_table_holds_digests_never_a_raw_key_or_credential() {
    let Some(schema) = TestSchema::create("the_table_holds_digests").await else { return };
    let store = schema.store().await;
    let (app, _) = app_with(store.clone());
    for i in 0..20 {
        let key = format!("raw-key-{i:04}");
        let auth = format!("Bearer credential-{i:04}");
        assert_eq!(post_to("/pat").key(&key).header("authorization", &auth).send(&app).await.status, 201);
        assert_eq!(
            post_to("/tenant").key(&key).header("x-tenant", &format!("tenant-{i:04}")).send(&app).await.status,
            201
        );
    }
    type Row = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);
    let rows: Vec<Row> = sqlx::query_as(&format!("SELECT record_key, fingerprint, record FROM {}", store.table()))
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 40, "one row per (scope, key)");
    let mut everything = Vec::new();
    for (key, fingerprint, record) in &rows {
        assert_eq!((key.len(), fingerprint.len()), (32, 32), "digests");
        everything.extend_from_slice(key);
        everything.extend_from_slice(fingerprint);
        everything.extend_from_slice(record.as_deref().expect("completed"));
    }
    let contains = |needle: &[u8]| everything.windows(needle.len()).any(|w| w == needle);
    for secret in [&b"raw-key-"[..], b"credential-", b"Bearer", b"tenant-"] {
        assert!(!contains(secret), "{} is stored in PostgreSQL", String::from_utf8_lossy(secret));
    }
}

#[tokio::test]
async fn a_miss_costs_two_round_trips_a_replay_one_and_a_warm_local_replay_none() {
    let Some(schema) = TestSchema::create("round trips per request").await else { return };
    let proxy = CountingProxy::start(&schema.url).await;
    // One connection, so that warming it up prepares every statement once; no ping before a
    // connection is handed out, as `PgStore::connect` sets it.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_with(proxy.options(&schema.url))
        .await
        .unwrap();
    let store = schema.builder(pool).sweep_every(None).build();
    let plain = app_with(store.clone()).0;
    let tiered = app_with(LocalTier::new(store)).0;
    // Statements and prepares; sqlx's ping when it takes a connection back runs in the
    // background and is not counted.
    let measure = |app: axum::Router, key: &'static str| {
        let proxy = &proxy;
        async move {
            let before = proxy.counts();
            let reply = post_to("/required").key(key).send(&app).await;
            assert_eq!(reply.status, 201);
            let spent = proxy.counts() - before;
            (spent.statements, spent.prepares, reply.replayed())
        }
    };
    assert_eq!(measure(plain.clone(), "warm-up").await, (2, 2, false), "a cold connection prepares both first");
    assert_eq!(measure(plain.clone(), "a").await, (2, 0, false), "miss: claim + complete");
    assert_eq!(measure(plain.clone(), "a").await, (1, 0, true), "replay: claim");
    assert_eq!(measure(tiered.clone(), "b").await, (2, 0, false), "miss through the tier");
    assert_eq!(measure(tiered.clone(), "b").await, (0, 0, true), "replay from the warm tier");
    assert_eq!(measure(plain, "b").await, (1, 0, true), "replay on an instance without the record cached");
}
