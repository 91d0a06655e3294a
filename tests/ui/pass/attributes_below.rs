//! Attributes written below `#[idempotent]` apply to the handler as written: an attribute that
//! names parameters (`#[tracing::instrument(skip(db))]`) sees the handler's own parameters,
//! while doc comments, `cfg` and lint levels stay on the routable function (`missing_docs`
//! would fire if the doc comment left it).
#![deny(warnings, missing_docs)]

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use idem_runtime::idempotent;

#[derive(Clone)]
struct Db;

#[derive(Debug, serde::Deserialize)]
struct NewOrder {
    item: String,
}

/// Creates an order.
#[idempotent(required)]
#[tracing::instrument(skip(db), fields(item = %order.item))]
#[allow(clippy::unused_async)]
pub async fn create_order(State(db): State<Db>, Json(order): Json<NewOrder>) -> (StatusCode, String) {
    let Db = db;
    (StatusCode::CREATED, order.item)
}

/// Ships an order.
#[idempotent]
#[cfg_attr(all(), doc = "Once.", tracing::instrument(skip(db)))]
#[cfg(all())]
pub async fn ship(State(db): State<Db>, Path(id): Path<u64>) -> String {
    let Db = db;
    id.to_string()
}

fn main() {
    let _app: Router =
        Router::new().route("/orders", post(create_order)).route("/orders/{id}/ship", post(ship)).with_state(Db);
}
