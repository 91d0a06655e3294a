//! Keys past their lifetime with a transactional handler (`Tx`) against a real PostgreSQL
//! server (`IDEM_TEST_DATABASE_URL`): a late request whose record is gone is refused with
//! `key-expired` and commits nothing; one whose record is still there gets the replay.

mod common;
mod pg_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::{post_to, Reply};
use idem_runtime::postgres::Tx;
use idem_runtime::store::{Clock as _, PgStore};
use idem_runtime::testkit::ManualClock;
use idem_runtime::{idempotent, Idempotency};
use pg_common::TestSchema;
use sqlx::PgPool;

#[derive(Clone)]
struct App {
    store: PgStore,
    /// `"schema".orders`.
    orders: String,
    runs: Arc<AtomicUsize>,
}

impl FromRef<App> for PgStore {
    fn from_ref(app: &App) -> PgStore {
        app.store.clone()
    }
}

#[idempotent(required, ttl = "1h")]
async fn create(State(app): State<App>, mut tx: Tx, body: String) -> (StatusCode, String) {
    app.runs.fetch_add(1, Ordering::SeqCst);
    let insert = format!("INSERT INTO {} (item) VALUES ($1)", app.orders);
    sqlx::query(&insert).bind(&body).execute(&mut *tx).await.unwrap();
    (StatusCode::CREATED, body)
}

fn v7_at(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap();
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
    uuid::Uuid::new_v7(ts).hyphenated().to_string()
}

async fn rows(pool: &PgPool, orders: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {orders}")).fetch_one(pool).await.unwrap()
}

async fn send(router: &Router, key: &str) -> Reply {
    post_to("/orders").key(key).header("content-type", "text/plain").json("book").send(router).await
}

#[tokio::test]
async fn a_transactional_handler_refuses_a_late_key_and_commits_nothing() {
    let Some(schema) = TestSchema::create("a_transactional_handler_refuses_a_late_key_and_commits_nothing").await
    else {
        return;
    };
    let pool = schema.pool(2).await;
    let orders = format!("\"{}\".orders", schema.name);
    sqlx::query(&format!("CREATE TABLE {orders} (id bigserial PRIMARY KEY, item text NOT NULL)"))
        .execute(&pool)
        .await
        .unwrap();
    let clock = ManualClock::new();
    let store = schema.builder(schema.pool(4).await).clock(clock.clone()).build();
    let app = App { store: store.clone(), orders: orders.clone(), runs: Arc::default() };
    let router = Router::new().route("/orders", post(create)).layer(Idempotency::new(store)).with_state(app.clone());

    let stale = send(&router, &v7_at(clock.now() - Duration::from_secs(25 * 3600))).await;
    stale.assert_problem(412, "urn:idem:problem:key-expired");
    assert_eq!((app.runs.load(Ordering::SeqCst), rows(&pool, &orders).await), (0, 0));

    // A call that began 50 minutes before its first attempt: its record outlives its lifetime
    // by 50 minutes, and a retry then is replayed.
    let key = v7_at(clock.now());
    clock.advance(Duration::from_secs(50 * 60));
    assert_eq!(send(&router, &key).await.status, 201);
    clock.advance(Duration::from_secs(40 * 60));
    let late = send(&router, &key).await;
    assert!(late.replayed() && late.status == 201, "{late:?}");
    clock.advance(Duration::from_secs(21 * 60));
    send(&router, &key).await.assert_problem(412, "urn:idem:problem:key-expired");
    assert_eq!((app.runs.load(Ordering::SeqCst), rows(&pool, &orders).await), (1, 1));
}
