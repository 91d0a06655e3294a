//! `Tx` where the application is built wrong, against a real PostgreSQL server
//! (`IDEM_TEST_DATABASE_URL`): a transaction kept past its handler (used or not), `Tx` without
//! the attribute or twice, a layer whose store is another (or the same one behind a
//! `LocalTier`), and the layer's hooks on every one of these paths, with a key or without.

mod common;
mod pg_common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use common::{post_to, Reply};
use idem_runtime::hooks::OutcomeKind;
use idem_runtime::postgres::Tx;
use idem_runtime::problem::Problem;
use idem_runtime::store::{LocalTier, MemoryStore, PgStore};
use idem_runtime::{idempotent, Idempotency};
use pg_common::TestSchema;
use serde::Deserialize;
use sqlx::PgPool;
use tokio::task::JoinHandle;

#[derive(Clone)]
struct App {
    store: PgStore,
    /// `"schema".orders`.
    orders: String,
    /// The tasks handlers spawned, to wait for.
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl FromRef<App> for PgStore {
    fn from_ref(app: &App) -> PgStore {
        app.store.clone()
    }
}

#[derive(Deserialize)]
struct NewOrder {
    item: String,
}

async fn insert(app: &App, tx: &mut Tx, item: &str) {
    let insert = format!("INSERT INTO {} (item) VALUES ($1)", app.orders);
    sqlx::query(&insert).bind(item).execute(&mut **tx).await.unwrap();
}

#[idempotent(required)]
async fn create(State(app): State<App>, mut tx: Tx, Json(order): Json<NewOrder>) -> Response {
    insert(&app, &mut tx, &order.item).await;
    StatusCode::CREATED.into_response()
}

/// Writes through its transaction, then moves it into a task that outlives the handler.
#[idempotent(required)]
async fn escapes(State(app): State<App>, mut tx: Tx, Json(order): Json<NewOrder>) -> Response {
    insert(&app, &mut tx, &order.item).await;
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(tx);
    });
    StatusCode::CREATED.into_response()
}

/// Moves its transaction, unused, into a task that writes through it later.
#[idempotent(optional)]
async fn escapes_unused(State(app): State<App>, mut tx: Tx, Json(order): Json<NewOrder>) -> Response {
    let task = app.clone();
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        insert(&task, &mut tx, &order.item).await;
    });
    app.tasks.lock().unwrap().push(later);
    StatusCode::CREATED.into_response()
}

/// Takes `Tx` without the attribute.
async fn not_annotated(State(app): State<App>, mut tx: Tx) -> Response {
    insert(&app, &mut tx, "unannotated").await;
    StatusCode::CREATED.into_response()
}

/// Takes `Tx` twice.
#[idempotent(optional)]
async fn twice(State(app): State<App>, mut tx: Tx, _again: Tx, Json(order): Json<NewOrder>) -> Response {
    insert(&app, &mut tx, &order.item).await;
    StatusCode::CREATED.into_response()
}

/// Panics after its insert.
#[idempotent(optional)]
async fn panics(State(app): State<App>, mut tx: Tx, Json(order): Json<NewOrder>) -> Response {
    insert(&app, &mut tx, &order.item).await;
    panic!("the handler panics after its insert");
}

struct Fixture {
    schema: TestSchema,
    app: App,
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
        let store = schema.builder(schema.pool(8).await).build();
        let app = App { store, orders, tasks: Arc::default() };
        Some(Self { schema, app, pool })
    }

    /// Every route, behind `layer` when given.
    fn router(&self, layer: Option<Idempotency>) -> Router {
        let router = Router::new()
            .route("/orders", post(create))
            .route("/escapes", post(escapes))
            .route("/escapes-unused", post(escapes_unused))
            .route("/not-annotated", post(not_annotated))
            .route("/twice", post(twice))
            .route("/panics", post(panics));
        match layer {
            Some(layer) => router.layer(layer),
            None => router,
        }
        .with_state(self.app.clone())
    }

    async fn orders(&self, item: &str) -> i64 {
        let count = format!("SELECT count(*) FROM {} WHERE item = $1", self.app.orders);
        sqlx::query_scalar(&count).bind(item).fetch_one(&self.pool).await.unwrap()
    }
}

fn order(item: &str) -> String {
    format!(r#"{{"item":"{item}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_kept_past_the_handler_commits_nothing() {
    let Some(f) = Fixture::new("tx_escapes").await else { return };
    let router = f.router(None);
    let reply = post_to("/escapes").key("k10").json(&order("kite")).send(&router).await;
    reply.assert_problem(500, "urn:idem:problem:transaction-unavailable");
    // The task lets go of it later, which rolls it back: nothing of it is ever committed, and
    // the key is free again (409 until then, as for any request still holding it).
    let retry = loop {
        let retry = post_to("/escapes").key("k10").json(&order("kite")).send(&router).await;
        if retry.status != StatusCode::CONFLICT {
            break retry;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    retry.assert_problem(500, "urn:idem:problem:transaction-unavailable");
    assert_eq!(f.orders("kite").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unused_transaction_kept_past_the_handler_is_refused_and_the_task_cannot_write_through_it() {
    let Some(f) = Fixture::new("tx_escapes_unused").await else { return };
    let router = f.router(None);
    let reply = post_to("/escapes-unused").key("k13").json(&order("yoyo")).send(&router).await;
    reply.assert_problem(500, "urn:idem:problem:transaction-unavailable");
    let task = f.app.tasks.lock().unwrap().pop().expect("the handler spawned its task");
    let used_late = task.await.expect_err("the task's write through the transaction must fail");
    assert!(used_late.is_panic());
    assert_eq!(f.orders("yoyo").await, 0);
    // Its transaction was rolled back when the handler returned: the key is free at once.
    let retry = post_to("/escapes-unused").key("k13").json(&order("yoyo")).send(&router).await;
    retry.assert_problem(500, "urn:idem:problem:transaction-unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tx_without_the_attribute_is_refused_and_writes_nothing() {
    let Some(f) = Fixture::new("tx_not_annotated").await else { return };
    let reply = post_to("/not-annotated").send(&f.router(None)).await;
    let problem = reply.assert_problem(500, "urn:idem:problem:transaction-unavailable");
    assert!(problem["detail"].as_str().unwrap().contains("#[idempotent]"), "{problem}");
    assert_eq!(f.orders("unannotated").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_layer_with_another_store_is_refused_before_anything_runs() {
    let Some(f) = Fixture::new("tx_other_store").await else { return };
    let router = f.router(Some(Idempotency::new(MemoryStore::new())));
    let reply = post_to("/orders").key("k11").json(&order("fan")).send(&router).await;
    let problem = reply.assert_problem(500, "urn:idem:problem:transaction-unavailable");
    assert!(problem["detail"].as_str().unwrap().contains("PgStore"), "{problem}");
    assert_eq!(f.orders("fan").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_layer_with_the_same_store_is_accepted() {
    // A store built apart on the same table of the same database is the same store.
    let Some(f) = Fixture::new("tx_same_store").await else { return };
    let same = f.schema.builder(f.schema.pool(2).await).build();
    let router = f.router(Some(Idempotency::new(same)));
    let first = post_to("/orders").key("k12").json(&order("bin")).send(&router).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(f.orders("bin").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_layer_with_the_same_store_behind_a_local_tier_is_accepted() {
    let Some(f) = Fixture::new("tx_local_tier").await else { return };
    let router = f.router(Some(Idempotency::new(LocalTier::new(f.app.store.clone()))));
    let first = post_to("/orders").key("k14").json(&order("cap")).send(&router).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let retry = post_to("/orders").key("k14").json(&order("cap")).send(&router).await;
    assert!(retry.replayed(), "{:?}", retry.body);
    assert_eq!(f.orders("cap").await, 1);
}

/// A layer on the app's store whose hooks answer every problem as `{"shaped": <type>}` and
/// record each outcome's kind.
fn shaping_layer(store: PgStore) -> (Idempotency, Arc<Mutex<Vec<OutcomeKind>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let outcomes = seen.clone();
    let layer = Idempotency::new(store)
        .shape_problems(|problem: &Problem| {
            let body = serde_json::json!({ "shaped": problem.kind().type_uri() });
            Some((problem.status(), Json(body)).into_response())
        })
        .on_outcome(move |outcome| outcomes.lock().unwrap().push(outcome.kind()));
    (layer, seen)
}

fn assert_shaped(reply: &Reply, status: u16, type_uri: &str) {
    assert_eq!(reply.status.as_u16(), status, "{:?}", reply.body);
    assert_eq!(reply.json()["shaped"], type_uri, "the layer's hook did not shape it: {:?}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_without_a_key_is_answered_through_the_layers_hook() {
    let Some(f) = Fixture::new("tx_hooks_panic").await else { return };
    let (layer, _) = shaping_layer(f.app.store.clone());
    let reply = post_to("/panics").json(&order("egg")).send(&f.router(Some(layer))).await;
    assert_shaped(&reply, 500, "urn:idem:problem:handler-panicked");
    assert_eq!(f.orders("egg").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_refusal_of_tx_goes_through_the_layers_hooks() {
    let Some(f) = Fixture::new("tx_hooks_refusals").await else { return };
    let (layer, seen) = shaping_layer(f.app.store.clone());
    let router = f.router(Some(layer));
    let unavailable = "urn:idem:problem:transaction-unavailable";
    let not_annotated = post_to("/not-annotated").send(&router).await;
    assert_shaped(&not_annotated, 500, unavailable);
    let twice_keyless = post_to("/twice").json(&order("oar")).send(&router).await;
    assert_shaped(&twice_keyless, 500, unavailable);
    let twice_keyed = post_to("/twice").key("k15").json(&order("oar")).send(&router).await;
    assert_shaped(&twice_keyed, 500, unavailable);
    // A covered request refused reports its outcome, as every covered request does.
    assert_eq!(*seen.lock().unwrap(), [OutcomeKind::TransactionUnavailable]);
    let escaped = post_to("/escapes-unused").key("k16").json(&order("oar")).send(&router).await;
    assert_shaped(&escaped, 500, unavailable);
    let escaped_keyless = post_to("/escapes-unused").json(&order("oar")).send(&router).await;
    assert_shaped(&escaped_keyless, 500, unavailable);
    assert_eq!(f.orders("unannotated").await + f.orders("oar").await, 0);
}
