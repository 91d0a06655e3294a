//! Steps through the public API: a step's result is kept before it is returned, and an attempt
//! that runs the handler again (after a status that is not kept, or a rolled-back `Tx`) gets it
//! back instead of running the step twice; a step that failed runs again; without a key, steps
//! simply run. On the embedded store, on Redis, on a Redis Cluster, on PostgreSQL, and on PostgreSQL
//! with `Tx`.

mod cluster_common;
mod common;
mod pg_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use common::post_to;
use idem_runtime::postgres::Tx;
use idem_runtime::steps::Steps;
use idem_runtime::store::{MemoryStore, PgStore, RedisStore, Store};
use idem_runtime::testkit::{Fault, FaultyStore, Operation};
use idem_runtime::{idempotent, Idempotency};

/// What the handlers count: charges made, attempts of the handler, charges that failed.
#[derive(Clone, Default)]
struct Counts {
    charges: Arc<AtomicUsize>,
    attempts: Arc<AtomicUsize>,
    fail_charges: Arc<AtomicUsize>,
}

impl Counts {
    /// A charge at the provider: fails while `fail_charges` is above zero.
    async fn charge(&self) -> Result<String, std::io::Error> {
        if self.fail_charges.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(std::io::Error::other("the provider is down"));
        }
        Ok(format!("ch_{}", self.charges.fetch_add(1, Ordering::SeqCst) + 1))
    }
}

/// Charges in a step, then fails its first attempt (503: the key is released).
#[idempotent(optional)]
async fn pay(State(counts): State<Counts>, steps: Steps) -> (StatusCode, String) {
    let charge = match steps.run("charge", || counts.charge()).await {
        Ok(charge) => charge,
        Err(error) => return (StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    };
    if counts.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
        return (StatusCode::SERVICE_UNAVAILABLE, "crashed after the charge".into());
    }
    (StatusCode::CREATED, charge)
}

fn app(store: impl Store, counts: &Counts) -> Router {
    Router::new().route("/pay", post(pay)).layer(Idempotency::new(store)).with_state(counts.clone())
}

/// The first attempt charges and fails; the retry gets the kept charge; one charge in all.
async fn a_retry_gets_the_kept_charge(app: &Router, counts: &Counts, key: &str) {
    let first = post_to("/pay").key(key).send(app).await;
    assert_eq!((first.status.as_u16(), first.body.as_ref()), (503, &b"crashed after the charge"[..]));
    let retry = post_to("/pay").key(key).send(app).await;
    assert_eq!((retry.status.as_u16(), retry.body.as_ref()), (201, &b"ch_1"[..]), "the kept charge");
    assert_eq!(counts.charges.load(Ordering::SeqCst), 1, "charged once");
    let replay = post_to("/pay").key(key).send(app).await;
    assert!(replay.replayed() && replay.body.as_ref() == b"ch_1");
}

#[tokio::test]
async fn on_the_embedded_store_a_retry_gets_the_kept_result_and_a_failed_step_runs_again() {
    let counts = Counts::default();
    let app = app(MemoryStore::new(), &counts);
    a_retry_gets_the_kept_charge(&app, &counts, "kept").await;

    // A step that fails keeps nothing: the next attempt runs it again.
    let counts = Counts::default();
    counts.fail_charges.store(1, Ordering::SeqCst);
    counts.attempts.store(1, Ordering::SeqCst);
    let app = self::app(MemoryStore::new(), &counts);
    let failed = post_to("/pay").key("failed").send(&app).await;
    assert_eq!(failed.status, 503);
    let retry = post_to("/pay").key("failed").send(&app).await;
    assert_eq!((retry.status.as_u16(), retry.body.as_ref()), (201, &b"ch_1"[..]));

    // Without a key, steps just run, every time.
    let counts = Counts::default();
    counts.attempts.store(1, Ordering::SeqCst);
    let app = self::app(MemoryStore::new(), &counts);
    for n in 1..=2 {
        let reply = post_to("/pay").send(&app).await;
        assert_eq!(reply.body, format!("ch_{n}"));
    }
}

/// Charges `amount` in a step, then fails its first attempt (503: the key is released).
#[idempotent(required)]
async fn pay_amount(State(counts): State<Counts>, steps: Steps, Json(amount): Json<u32>) -> (StatusCode, String) {
    let charge = steps.run("charge", || async { counts.charge().await.map(|id| format!("{id} of {amount}")) }).await;
    let charge = match charge {
        Ok(charge) => charge,
        Err(error) => return (StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    };
    if counts.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
        return (StatusCode::SERVICE_UNAVAILABLE, "crashed after the charge".into());
    }
    (StatusCode::CREATED, charge)
}

/// A key whose first request kept a step and then failed (nothing stored) is free for another
/// request: it runs its own step, and never sees the first request's result.
#[tokio::test]
async fn a_key_reused_by_another_request_runs_its_own_steps() {
    let counts = Counts::default();
    let app = Router::new()
        .route("/pay", post(pay_amount))
        .layer(Idempotency::new(MemoryStore::new()))
        .with_state(counts.clone());
    let first = post_to("/pay").key("reused").json("5").send(&app).await;
    assert_eq!((first.status.as_u16(), first.body.as_ref()), (503, &b"crashed after the charge"[..]));
    let other = post_to("/pay").key("reused").json("7").send(&app).await;
    assert_eq!((other.status.as_u16(), other.body.as_ref()), (201, &b"ch_2 of 7"[..]), "its own charge");
    let again = post_to("/pay").key("reused").json("5").send(&app).await;
    again.assert_problem(422, "urn:idem:problem:key-reused");
    assert_eq!(counts.charges.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn on_redis_a_retry_gets_the_kept_result() {
    let Some(url) = common::redis_url("on_redis_a_retry_gets_the_kept_result") else { return };
    let store = RedisStore::builder(url).prefix("idem-test:steps:").connect().await.expect("Redis is reachable");
    let counts = Counts::default();
    let key = format!("steps-{}", uuid::Uuid::now_v7());
    a_retry_gets_the_kept_charge(&app(store, &counts), &counts, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_a_retry_gets_the_kept_result() {
    let Some(cluster) = cluster_common::RedisCluster::start("steps on a cluster") else { return };
    let store = RedisStore::cluster_builder(cluster.urls()).prefix("steps:").new_key_space().connect().await;
    let counts = Counts::default();
    a_retry_gets_the_kept_charge(&app(store.expect("the cluster"), &counts), &counts, "on-a-cluster").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_retry_gets_the_kept_result() {
    let Some(schema) = pg_common::TestSchema::create("on_postgres_a_retry_gets_the_kept_result").await else {
        return;
    };
    let counts = Counts::default();
    a_retry_gets_the_kept_charge(&app(schema.store().await, &counts), &counts, "on-postgres").await;
}

#[derive(Clone)]
struct TxApp {
    store: PgStore,
    orders: String,
    counts: Counts,
}

impl FromRef<TxApp> for PgStore {
    fn from_ref(app: &TxApp) -> PgStore {
        app.store.clone()
    }
}

/// Charges in a step, inserts the payment in `Tx`, and fails its first attempt: the insert
/// rolls back, the kept charge does not.
#[idempotent(required)]
async fn pay_in_tx(State(app): State<TxApp>, steps: Steps, mut tx: Tx) -> (StatusCode, String) {
    let charge = match steps.run("charge", || app.counts.charge()).await {
        Ok(charge) => charge,
        Err(error) => return (StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    };
    let insert = format!("INSERT INTO {} (item) VALUES ($1)", app.orders);
    sqlx::query(&insert).bind(&charge).execute(&mut *tx).await.unwrap();
    if app.counts.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
        return (StatusCode::SERVICE_UNAVAILABLE, "crashed after the charge".into());
    }
    (StatusCode::CREATED, charge)
}

/// A payments table in the schema, a pool to read it, and a store of the schema's own.
async fn payments_table(schema: &pg_common::TestSchema) -> (sqlx::PgPool, PgStore, String) {
    let pool = schema.pool(2).await;
    let orders = format!("\"{}\".payments", schema.name);
    sqlx::query(&format!("CREATE TABLE {orders} (id bigserial PRIMARY KEY, item text NOT NULL)"))
        .execute(&pool)
        .await
        .unwrap();
    (pool, schema.builder(schema.pool(4).await).build(), orders)
}

#[tokio::test]
async fn with_tx_the_kept_step_survives_the_rollback() {
    let Some(schema) = pg_common::TestSchema::create("with_tx_the_kept_step_survives_the_rollback").await else {
        return;
    };
    let (pool, store, orders) = payments_table(&schema).await;
    let app = TxApp { store: store.clone(), orders: orders.clone(), counts: Counts::default() };
    let router = Router::new().route("/pay", post(pay_in_tx)).layer(Idempotency::new(store)).with_state(app.clone());
    let first = post_to("/pay").key("tx-1").send(&router).await;
    assert_eq!(first.status, 503, "rolled back after the charge");
    let retry = post_to("/pay").key("tx-1").send(&router).await;
    assert_eq!((retry.status.as_u16(), retry.body.as_ref()), (201, &b"ch_1"[..]), "the kept charge");
    assert_eq!(app.counts.charges.load(Ordering::SeqCst), 1, "charged once");
    let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {orders}")).fetch_one(&pool).await.unwrap();
    assert_eq!(rows, 1, "one payment: the first attempt's insert rolled back");
}

/// With no `Idempotency` layer, a `Tx` handler's record goes to the `PgStore` of its state, and so
/// must its steps: kept in the database, where another instance or a restart finds them.
#[tokio::test]
async fn with_tx_and_no_layer_the_steps_are_kept_in_the_database() {
    let test = "with_tx_and_no_layer_the_steps_are_kept_in_the_database";
    let Some(schema) = pg_common::TestSchema::create(test).await else { return };
    let (pool, store, orders) = payments_table(&schema).await;
    let app = TxApp { store, orders, counts: Counts::default() };
    let router = Router::new().route("/pay", post(pay_in_tx)).with_state(app.clone());
    let first = post_to("/pay").key("no-layer").send(&router).await;
    assert_eq!(first.status, 503, "rolled back after the charge");
    let records = format!("SELECT count(*) FROM \"{}\".idem_records", schema.name);
    let kept: i64 = sqlx::query_scalar(&records).fetch_one(&pool).await.unwrap();
    assert_eq!(kept, 1, "the step's record, in the database (the request's claim rolled back)");
}

/// Runs the step named "item" once per item of the body.
#[idempotent(required)]
async fn per_item(State(counts): State<Counts>, steps: Steps, Json(items): Json<u32>) -> String {
    let mut results = Vec::new();
    for _ in 0..items {
        match steps.run("item", || counts.charge()).await {
            Ok(charge) => results.push(charge),
            Err(error) => results.push(format!("refused: {error}")),
        }
    }
    results.join(", ")
}

/// A name the attribute cannot see (here in a loop) used twice in one attempt is refused: the
/// second call would otherwise get the first one's result.
#[tokio::test]
async fn a_step_name_run_twice_in_one_attempt_is_refused() {
    let counts = Counts::default();
    let app = Router::new()
        .route("/items", post(per_item))
        .layer(Idempotency::new(MemoryStore::new()))
        .with_state(counts.clone());
    let reply = post_to("/items").key("twice").json("2").send(&app).await;
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    assert!(text.starts_with("ch_1, refused: ") && text.contains("\"item\""), "{text}");
    assert_eq!(counts.charges.load(Ordering::SeqCst), 1);
}

/// A step whose result is `size` bytes long, counted; the first attempt answers 503 after it.
#[idempotent(required)]
async fn sized(State(counts): State<Counts>, steps: Steps, Json(size): Json<usize>) -> (StatusCode, String) {
    let step = || async {
        counts.charges.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>("x".repeat(size))
    };
    match steps.run("sized", step).await {
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
        Ok(_) if counts.attempts.fetch_add(1, Ordering::SeqCst) == 0 => {
            (StatusCode::SERVICE_UNAVAILABLE, "after".into())
        }
        Ok(value) => (StatusCode::CREATED, format!("{} bytes", value.len())),
    }
}

/// A step that ran but whose result cannot be kept (larger than the store keeps) is reported, and
/// never runs again: the retries are told so.
#[tokio::test]
async fn a_step_that_ran_but_cannot_be_kept_never_runs_again() {
    let counts = Counts::default();
    let store = MemoryStore::builder().max_body_bytes(1000).build();
    let app = Router::new().route("/sized", post(sized)).layer(Idempotency::new(store)).with_state(counts.clone());
    let first = post_to("/sized").key("too-large").json("2000").send(&app).await;
    let text = String::from_utf8_lossy(&first.body).into_owned();
    assert!(first.status == 503 && text.contains("more than the store keeps"), "{text}");
    for _ in 0..2 {
        let retry = post_to("/sized").key("too-large").json("2000").send(&app).await;
        let text = String::from_utf8_lossy(&retry.body).into_owned();
        assert!(retry.status == 503 && text.contains("an earlier attempt ran"), "{text}");
    }
    assert_eq!(counts.charges.load(Ordering::SeqCst), 1, "the step ran once");
}

/// The store fails to keep a step's result (its first write refused): the step ran, so its
/// result is returned anyway and kept once the store answers; the retry gets it without running it.
#[tokio::test]
async fn a_result_the_store_failed_to_keep_is_returned_and_kept_later() {
    let counts = Counts::default();
    let store = FaultyStore::new(MemoryStore::new());
    store.schedule(Operation::Complete, [Some(Fault::ErrorBefore)]);
    let app =
        Router::new().route("/sized", post(sized)).layer(Idempotency::new(store.clone())).with_state(counts.clone());
    let first = post_to("/sized").key("kept-later").json("10").send(&app).await;
    assert_eq!((first.status.as_u16(), first.body.as_ref()), (503, &b"after"[..]), "the step's result in hand");
    common::eventually(std::time::Duration::from_secs(5), || store.calls(Operation::Complete) >= 2).await;
    let retry = post_to("/sized").key("kept-later").json("10").send(&app).await;
    assert_eq!((retry.status.as_u16(), retry.body.as_ref()), (201, &b"10 bytes"[..]));
    assert_eq!(counts.charges.load(Ordering::SeqCst), 1, "kept in the background: not run again");
}
