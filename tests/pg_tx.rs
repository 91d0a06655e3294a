//! The transactional mode against a real PostgreSQL server (`IDEM_TEST_DATABASE_URL`): a
//! handler's own writes through `Tx` and its stored response commit or roll back together,
//! duplicates are answered from the row lock, and a dead owner's claim is gone at once.

mod common;
mod pg_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use common::{post_to, Reply};
use idem_runtime::idempotent;
use idem_runtime::postgres::Tx;
use idem_runtime::store::PgStore;
use pg_common::TestSchema;
use serde::Deserialize;
use sqlx::PgPool;
use tokio::sync::{mpsc, Semaphore};

#[derive(Clone)]
struct App {
    store: PgStore,
    /// `"schema".orders`.
    orders: String,
    runs: Arc<AtomicUsize>,
    /// Runs still to answer 503 (after their insert).
    fail_next: Arc<AtomicUsize>,
    /// A handler told to hold sends its backend's pid here, then waits for a permit.
    reached: mpsc::UnboundedSender<i32>,
    gate: Arc<Semaphore>,
}

impl FromRef<App> for PgStore {
    fn from_ref(app: &App) -> PgStore {
        app.store.clone()
    }
}

#[derive(Deserialize)]
struct NewOrder {
    item: String,
    #[serde(default)]
    hold: bool,
    #[serde(default)]
    panic: bool,
    /// Bytes of padding in the response.
    #[serde(default)]
    pad: usize,
}

/// Inserts the order through `tx`, then does what the request asks.
async fn place(app: &App, tx: &mut Tx, order: &NewOrder) -> Response {
    app.runs.fetch_add(1, Ordering::SeqCst);
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut **tx).await.unwrap();
    let insert = format!("INSERT INTO {} (item) VALUES ($1) RETURNING id", app.orders);
    let id: i64 = sqlx::query_scalar(&insert).bind(&order.item).fetch_one(&mut **tx).await.unwrap();
    if order.hold {
        app.reached.send(pid).unwrap();
        app.gate.acquire().await.unwrap().forget();
    }
    assert!(!order.panic, "the handler panics after its insert");
    if app.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let pad = "x".repeat(order.pad);
    (StatusCode::CREATED, Json(serde_json::json!({ "id": id, "item": order.item, "pad": pad }))).into_response()
}

#[idempotent(required)]
async fn create(State(app): State<App>, mut tx: Tx, Json(order): Json<NewOrder>) -> Response {
    place(&app, &mut tx, &order).await
}

#[idempotent(required, on_conflict = "wait")]
async fn create_waiting(State(app): State<App>, mut tx: Tx, Json(order): Json<NewOrder>) -> Response {
    place(&app, &mut tx, &order).await
}

#[idempotent(required, lease = "1h")]
async fn create_long_lease(State(app): State<App>, mut tx: Tx, Json(order): Json<NewOrder>) -> Response {
    place(&app, &mut tx, &order).await
}

#[idempotent(optional)]
async fn create_optional(State(app): State<App>, mut tx: Tx, Json(order): Json<NewOrder>) -> Response {
    place(&app, &mut tx, &order).await
}

struct Fixture {
    schema: TestSchema,
    app: App,
    router: Router,
    reached: mpsc::UnboundedReceiver<i32>,
    pool: PgPool,
}

impl Fixture {
    async fn new(test: &str) -> Option<Self> {
        let schema = TestSchema::create(test).await?;
        let pool = schema.pool(4).await;
        let orders = format!("\"{}\".orders", schema.name);
        sqlx::query(&format!("CREATE TABLE {orders} (id bigserial PRIMARY KEY, item text NOT NULL)"))
            .execute(&pool)
            .await
            .unwrap();
        let store = schema.builder(schema.pool(8).await).max_body_bytes(64).build();
        let (sender, reached) = mpsc::unbounded_channel();
        let app = App {
            store,
            orders,
            runs: Arc::default(),
            fail_next: Arc::default(),
            reached: sender,
            gate: Arc::new(Semaphore::new(0)),
        };
        let router = Router::new()
            .route("/orders", post(create))
            .route("/orders-waiting", post(create_waiting))
            .route("/orders-long-lease", post(create_long_lease))
            .route("/orders-optional", post(create_optional));
        let router = router.with_state(app.clone());
        Some(Self { schema, app, router, reached, pool })
    }

    async fn orders(&self, item: &str) -> i64 {
        let count = format!("SELECT count(*) FROM {} WHERE item = $1", self.app.orders);
        sqlx::query_scalar(&count).bind(item).fetch_one(&self.pool).await.unwrap()
    }

    fn runs(&self) -> usize {
        self.app.runs.load(Ordering::SeqCst)
    }

    /// Sends in a task of its own.
    fn spawn(&self, request: common::Req) -> tokio::task::JoinHandle<Reply> {
        let router = self.router.clone();
        tokio::spawn(async move { request.send(&router).await })
    }
}

fn order(item: &str) -> String {
    format!(r#"{{"item":"{item}"}}"#)
}

fn held_order(item: &str) -> String {
    format!(r#"{{"item":"{item}","hold":true}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_order_and_its_response_commit_together_and_a_retry_replays() {
    let Some(f) = Fixture::new("tx_commit_together").await else { return };
    let first = post_to("/orders").key("k1").json(&order("book")).send(&f.router).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert!(!first.replayed());
    let retry = post_to("/orders").key("k1").json(&order("book")).send(&f.router).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(retry.replayed());
    assert_eq!(retry.body, first.body);
    assert_eq!((f.orders("book").await, f.runs()), (1, 1));
    // The record is in the store's table, committed.
    let records: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {} WHERE completed", f.app.store.table()))
        .fetch_one(&f.pool)
        .await
        .unwrap();
    assert_eq!(records, 1);
    drop(f.schema);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_status_that_is_not_stored_rolls_the_order_back_and_frees_the_key() {
    let Some(f) = Fixture::new("tx_not_stored_rolls_back").await else { return };
    f.app.fail_next.store(1, Ordering::SeqCst);
    let failed = post_to("/orders").key("k2").json(&order("lamp")).send(&f.router).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(f.orders("lamp").await, 0, "the 503's insert rolled back");
    let retry = post_to("/orders").key("k2").json(&order("lamp")).send(&f.router).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(!retry.replayed());
    assert_eq!((f.orders("lamp").await, f.runs()), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_after_the_insert_rolls_it_back_and_frees_the_key() {
    let Some(f) = Fixture::new("tx_panic_rolls_back").await else { return };
    let panicked = post_to("/orders").key("k3").json(r#"{"item":"vase","panic":true}"#).send(&f.router).await;
    panicked.assert_problem(500, "urn:idem:problem:handler-panicked");
    assert_eq!(f.orders("vase").await, 0);
    // The same key for the same request runs again (and panics again): the key was freed.
    let again = post_to("/orders").key("k3").json(r#"{"item":"vase","panic":true}"#).send(&f.router).await;
    again.assert_problem(500, "urn:idem:problem:handler-panicked");
    assert_eq!((f.orders("vase").await, f.runs()), (0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_while_the_first_runs_gets_409_at_once() {
    let Some(mut f) = Fixture::new("tx_duplicate_rejected").await else { return };
    let first = f.spawn(post_to("/orders").key("k4").json(&held_order("desk")));
    f.reached.recv().await.unwrap();
    let duplicate = post_to("/orders").key("k4").json(&held_order("desk")).send(&f.router).await;
    duplicate.assert_problem(409, "urn:idem:problem:in-flight");
    f.app.gate.add_permits(1);
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::CREATED);
    let retry = post_to("/orders").key("k4").json(&held_order("desk")).send(&f.router).await;
    assert!(retry.replayed());
    assert_eq!(retry.body, first.body);
    assert_eq!((f.orders("desk").await, f.runs()), (1, 1));
}

/// Waits until some session waits for an advisory lock.
async fn until_a_waiter(pool: &PgPool) {
    for _ in 0..2000 {
        let waiting: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                .fetch_one(pool)
                .await
                .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no request waited on the key's lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_duplicate_replays_the_first_once_it_commits() {
    let Some(mut f) = Fixture::new("tx_waiting_duplicate_replays").await else { return };
    let first = f.spawn(post_to("/orders-waiting").key("k5").json(&held_order("chair")));
    f.reached.recv().await.unwrap();
    let duplicate = f.spawn(post_to("/orders-waiting").key("k5").json(&held_order("chair")));
    until_a_waiter(&f.pool).await;
    f.app.gate.add_permits(1);
    let (first, duplicate) = (first.await.unwrap(), duplicate.await.unwrap());
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(duplicate.replayed(), "{:?}", duplicate.body);
    assert_eq!(duplicate.body, first.body);
    assert_eq!((f.orders("chair").await, f.runs()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_duplicate_runs_the_handler_when_the_first_rolls_back() {
    let Some(mut f) = Fixture::new("tx_waiting_duplicate_runs").await else { return };
    f.app.fail_next.store(1, Ordering::SeqCst);
    let first = f.spawn(post_to("/orders-waiting").key("k6").json(&held_order("rug")));
    f.reached.recv().await.unwrap();
    let duplicate = f.spawn(post_to("/orders-waiting").key("k6").json(&held_order("rug")));
    until_a_waiter(&f.pool).await;
    f.app.gate.add_permits(2);
    let (first, duplicate) = (first.await.unwrap(), duplicate.await.unwrap());
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(duplicate.status, StatusCode::CREATED);
    assert!(!duplicate.replayed());
    assert_eq!((f.orders("rug").await, f.runs()), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_owners_connection_dies_a_retry_runs_at_once_without_waiting_for_the_lease() {
    let Some(mut f) = Fixture::new("tx_dead_owner").await else { return };
    // The lease is an hour: were the claim a lease, the retry would get 409 for an hour.
    let first = f.spawn(post_to("/orders-long-lease").key("k7").json(&held_order("clock")));
    let pid = f.reached.recv().await.unwrap();
    // As when its process dies: the server ends the session and rolls its transaction back.
    let ended: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1, 10000)").bind(pid).fetch_one(&f.pool).await.unwrap();
    assert!(ended);
    f.app.gate.add_permits(2);
    let retry = post_to("/orders-long-lease").key("k7").json(&held_order("clock")).send(&f.router).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{:?}", retry.body);
    assert!(!retry.replayed());
    // The first lost its transaction: its commit fails, so it cannot claim success.
    f.spawn_reached_drain();
    let first = first.await.unwrap();
    first.assert_problem(503, "urn:idem:problem:store-unavailable");
    assert_eq!((f.orders("clock").await, f.runs()), (1, 2));
    let replay = post_to("/orders-long-lease").key("k7").json(&held_order("clock")).send(&f.router).await;
    assert_eq!(replay.body, retry.body);
}

impl Fixture {
    /// Lets later holders through without anyone reading their pids.
    fn spawn_reached_drain(&mut self) {
        while self.reached.try_recv().is_ok() {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_key_with_another_order_is_a_mismatch_and_writes_nothing() {
    let Some(f) = Fixture::new("tx_mismatch").await else { return };
    let first = post_to("/orders").key("k8").json(&order("pen")).send(&f.router).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let other = post_to("/orders").key("k8").json(&order("ink")).send(&f.router).await;
    other.assert_problem(422, "urn:idem:problem:key-reused");
    assert_eq!((f.orders("pen").await, f.orders("ink").await, f.runs()), (1, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_larger_than_the_store_keeps_still_commits_and_replays_as_not_stored() {
    let Some(f) = Fixture::new("tx_large_body").await else { return };
    let body = r#"{"item":"poster","pad":500}"#;
    let first = post_to("/orders").key("k9").json(body).send(&f.router).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(first.body.len() > 500, "the caller gets the whole body");
    let retry = post_to("/orders").key("k9").json(body).send(&f.router).await;
    let problem = retry.assert_problem(201, "urn:idem:problem:body-not-stored");
    assert!(retry.replayed(), "{problem}");
    assert_eq!((f.orders("poster").await, f.runs()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_without_a_key_commits_by_status_too() {
    let Some(f) = Fixture::new("tx_uncovered").await else { return };
    let plain = post_to("/orders-optional").json(&order("cup")).send(&f.router).await;
    assert_eq!(plain.status, StatusCode::CREATED);
    f.app.fail_next.store(1, Ordering::SeqCst);
    let failed = post_to("/orders-optional").json(&order("cup")).send(&f.router).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!((f.orders("cup").await, f.runs()), (1, 2));
}

async fn insert(app: &App, conn: &mut sqlx::PgConnection, order: &NewOrder) -> Response {
    let insert = format!("INSERT INTO {} (item) VALUES ($1) RETURNING id", app.orders);
    let id: i64 = sqlx::query_scalar(&insert).bind(&order.item).fetch_one(conn).await.unwrap();
    (StatusCode::CREATED, Json(serde_json::json!({ "id": id }))).into_response()
}

/// The transactional handler without idem: BEGIN, INSERT, COMMIT.
async fn plain_tx(State(app): State<App>, Json(order): Json<NewOrder>) -> Response {
    let mut tx = app.store.pool().begin().await.unwrap();
    let response = insert(&app, &mut tx, &order).await;
    tx.commit().await.unwrap();
    response
}

/// The same INSERT through idem's transaction.
#[idempotent(required)]
async fn insert_tx(State(app): State<App>, mut tx: Tx, Json(order): Json<NewOrder>) -> Response {
    insert(&app, &mut tx, &order).await
}

/// A store on one connection through a proxy that counts the statements sent: one connection,
/// so that warming up prepares every statement once.
async fn counted(f: &Fixture) -> (pg_common::CountingProxy, sqlx::PgPool, PgStore) {
    let proxy = pg_common::CountingProxy::start(&f.schema.url).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_with(proxy.options(&f.schema.url))
        .await
        .unwrap();
    let store = f.schema.builder(pool.clone()).sweep_every(None).build();
    (proxy, pool, store)
}

#[tokio::test]
async fn a_miss_costs_three_statements_more_than_the_plain_transaction_and_a_replay_no_commit() {
    let Some(f) = Fixture::new("tx_round_trips").await else { return };
    let (proxy, pool, store) = counted(&f).await;
    let app = App { store, ..f.app.clone() };
    let router = Router::new().route("/plain", post(plain_tx)).route("/orders", post(insert_tx)).with_state(app);
    let measure = |path: &'static str, key: &'static str| {
        let (proxy, router, pool) = (&proxy, &router, &pool);
        async move {
            let before = proxy.counts();
            let reply = post_to(path).key(key).json(&order(key)).send(router).await;
            assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
            // The one connection back in hand: whatever it had queued (a rollback) is sent.
            drop(pool.acquire().await.unwrap());
            let spent = proxy.counts() - before;
            (spent.statements, spent.prepares, reply.replayed())
        }
    };
    measure("/plain", "warm-up-plain").await;
    measure("/orders", "warm-up").await;
    measure("/orders", "warm-up").await;
    assert_eq!(measure("/plain", "p").await, (3, 0, false), "BEGIN, INSERT, COMMIT");
    assert_eq!(measure("/orders", "a").await, (6, 0, false), "BEGIN, claim, SAVEPOINT, INSERT, record, COMMIT");
    assert_eq!(measure("/orders", "a").await, (3, 0, true), "BEGIN, claim, ROLLBACK (after the response)");
}

#[tokio::test]
async fn a_replay_through_a_warm_local_tier_costs_the_database_nothing() {
    let Some(f) = Fixture::new("tx_warm_tier").await else { return };
    let (proxy, pool, store) = counted(&f).await;
    let app = App { store: store.clone(), ..f.app.clone() };
    let tiered = idem_runtime::Idempotency::new(idem_runtime::store::LocalTier::new(store));
    let router = Router::new().route("/orders", post(insert_tx)).layer(tiered).with_state(app);
    let measure = |key: &'static str| {
        let (proxy, router, pool) = (&proxy, &router, &pool);
        async move {
            let before = proxy.counts();
            let reply = post_to("/orders").key(key).json(&order(key)).send(router).await;
            assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
            drop(pool.acquire().await.unwrap());
            ((proxy.counts() - before).statements, reply.replayed())
        }
    };
    measure("warm-up").await;
    assert_eq!(measure("t").await, (6, false), "a miss, as without the tier");
    assert_eq!(measure("t").await, (0, true), "the committed record, from the tier: no transaction at all");
    assert_eq!(measure("t").await, (0, true));
    assert_eq!(f.orders("t").await, 1, "one order");
}
