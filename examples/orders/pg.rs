//! The demo's orders in PostgreSQL: through the request's transaction (`Tx`, with
//! `--store postgres://…`), or committed on their own with the records in another store
//! (`--orders-db`).

use std::sync::atomic::Ordering;

use axum::extract::{FromRef, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use idem_runtime::idempotent;
use idem_runtime::postgres::Tx;
use idem_runtime::store::PgStore;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::{problem, AppState, Caller, Db, NewOrder, Order, ORDERS};

/// Orders in PostgreSQL (`--store postgres://…` or `--orders-db`).
#[derive(Clone)]
pub(super) struct PgOrders {
    pub(super) db: AppState,
    pub(super) pool: PgPool,
}

/// Orders in the database of the idempotency store: written through `Tx`.
#[derive(Clone)]
pub(super) struct TxOrders {
    pub(super) orders: PgOrders,
    pub(super) store: PgStore,
}

impl FromRef<TxOrders> for PgStore {
    fn from_ref(state: &TxOrders) -> PgStore {
        state.store.clone()
    }
}

impl FromRef<TxOrders> for PgOrders {
    fn from_ref(state: &TxOrders) -> PgOrders {
        state.orders.clone()
    }
}

const ORDERS_TABLE: &str = "CREATE TABLE IF NOT EXISTS idem_demo_orders (
    id bigserial PRIMARY KEY,
    owner text NOT NULL,
    item text NOT NULL,
    qty integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)";

const INSERT_ORDER: &str = "INSERT INTO idem_demo_orders (owner, item, qty) VALUES ($1, $2, $3) RETURNING id";

/// The part of a create that follows the INSERT: the delay (a crash can be aimed at it), the
/// injected failures, and the 201.
async fn after_insert(db: &Db, id: i64, order: NewOrder) -> Response {
    tokio::time::sleep(db.handler_delay).await;
    if db.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return problem(StatusCode::INTERNAL_SERVER_ERROR, "injected failure (--fail-first); nothing was created");
    }
    let order = Order { id: format!("ord_{id}"), item: order.item, qty: order.qty };
    (StatusCode::CREATED, [(header::LOCATION, format!("/orders/{}", order.id))], Json(order)).into_response()
}

/// Inserts the caller's order on `conn` (the request's transaction, or the pool) and answers.
async fn insert_order<'c>(conn: impl sqlx::PgExecutor<'c>, db: &Db, caller: &Caller, order: NewOrder) -> Response {
    let inserted =
        sqlx::query_scalar(INSERT_ORDER).bind(&caller.0).bind(&order.item).bind(order.qty as i32).fetch_one(conn).await;
    match inserted {
        Ok(id) => after_insert(db, id, order).await,
        Err(error) => database_problem(error),
    }
}

pub(super) fn database_problem(error: sqlx::Error) -> Response {
    tracing::error!(%error, "the orders database failed");
    problem(StatusCode::SERVICE_UNAVAILABLE, "the orders database is unavailable; retry with the same key")
}

/// The order and the idempotency record commit together: a 500 (or a crash) rolls both back.
#[idempotent(defaults = ORDERS)]
pub(super) async fn create_order_in_tx(
    State(state): State<TxOrders>,
    Extension(caller): Extension<Caller>,
    mut tx: Tx,
    Json(order): Json<NewOrder>,
) -> Response {
    insert_order(&mut *tx, &state.orders.db, &caller, order).await
}

/// [`create_order_in_tx`], waiting for a duplicate still running.
#[idempotent(defaults = ORDERS, on_conflict = "wait")]
pub(super) async fn create_order_in_tx_waiting(
    State(state): State<TxOrders>,
    Extension(caller): Extension<Caller>,
    mut tx: Tx,
    Json(order): Json<NewOrder>,
) -> Response {
    insert_order(&mut *tx, &state.orders.db, &caller, order).await
}

/// The order commits at once; the record is written to the other store after the handler.
#[idempotent(defaults = ORDERS)]
pub(super) async fn create_order_autocommit(
    State(orders): State<PgOrders>,
    Extension(caller): Extension<Caller>,
    Json(order): Json<NewOrder>,
) -> Response {
    insert_order(&orders.pool, &orders.db, &caller, order).await
}

/// [`create_order_autocommit`], waiting for a duplicate still running.
#[idempotent(defaults = ORDERS, on_conflict = "wait")]
pub(super) async fn create_order_autocommit_waiting(
    State(orders): State<PgOrders>,
    Extension(caller): Extension<Caller>,
    Json(order): Json<NewOrder>,
) -> Response {
    insert_order(&orders.pool, &orders.db, &caller, order).await
}

pub(super) async fn list_orders_in_db(
    State(orders): State<PgOrders>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let rows: Result<Vec<(i64, String, i32)>, _> =
        sqlx::query_as("SELECT id, item, qty FROM idem_demo_orders WHERE owner = $1 ORDER BY id")
            .bind(&caller.0)
            .fetch_all(&orders.pool)
            .await;
    match rows {
        Ok(rows) => Json(
            rows.into_iter()
                .map(|(id, item, qty)| Order { id: format!("ord_{id}"), item, qty: qty as u32 })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(error) => database_problem(error),
    }
}

/// The orders table on `url`'s database, created if missing.
pub(super) async fn orders_db(url: &str) -> Result<PgPool, sqlx::Error> {
    let pool = PgPoolOptions::new().max_connections(10).connect(url).await?;
    sqlx::query(ORDERS_TABLE).execute(&pool).await?;
    Ok(pool)
}
