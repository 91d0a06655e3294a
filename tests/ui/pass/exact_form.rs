//! The attribute exactly as the README's first example writes it.
#![deny(warnings)]

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use idem_runtime::idempotent;

#[derive(Clone)]
struct Db;

#[derive(serde::Deserialize)]
struct NewOrder {
    item: String,
}

#[idempotent(required, ttl = "24h", scope = "pat")]
async fn create_order(State(db): State<Db>, Json(order): Json<NewOrder>) -> impl IntoResponse {
    let Db = db;
    order.item
}

fn main() {
    let _app: Router = Router::new().route("/orders", post(create_order)).with_state(Db);
}
