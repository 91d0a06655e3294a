//! The demo's orders and notes kept in memory (the default store, and the Redis stores).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use idem_runtime::idempotent;

use super::{problem, AppState, Caller, NewNote, NewOrder, Note, Order, Problem, Refusals, ORDERS};

/// Place an order.
#[utoipa::path(post, path = "/orders", security(("bearer" = [])), responses(
    (status = 201, description = "The order", body = Order, headers(("Location" = String, description = "The order's URL"))),
    (status = 500, description = "An injected failure (`--fail-first`)", content_type = "application/problem+json", body = Problem),
    Refusals,
))]
#[idempotent(defaults = ORDERS)]
pub(super) async fn create_order(
    State(db): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(order): Json<NewOrder>,
) -> Response {
    place_order(&db, caller, order).await
}

/// Place an order; a duplicate sent while the first runs waits for its response (at most the
/// lease) instead of a 409.
#[utoipa::path(post, path = "/orders/wait", security(("bearer" = [])), responses(
    (status = 201, description = "The order", body = Order, headers(("Location" = String, description = "The order's URL"))),
    (status = 500, description = "An injected failure (`--fail-first`)", content_type = "application/problem+json", body = Problem),
    Refusals,
))]
#[idempotent(defaults = ORDERS, on_conflict = "wait")]
pub(super) async fn create_order_waiting(
    State(db): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(order): Json<NewOrder>,
) -> Response {
    place_order(&db, caller, order).await
}

pub(super) async fn place_order(db: &AppState, caller: Caller, order: NewOrder) -> Response {
    tokio::time::sleep(db.handler_delay).await;
    if db.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return problem(StatusCode::INTERNAL_SERVER_ERROR, "injected failure (--fail-first); nothing was created");
    }
    let id = format!("ord_{}", db.next_id.fetch_add(1, Ordering::SeqCst) + 1);
    let order = Order { id: id.clone(), item: order.item, qty: order.qty };
    db.orders.lock().expect("orders lock").entry(caller).or_default().push(order.clone());
    (StatusCode::CREATED, [(header::LOCATION, format!("/orders/{id}"))], Json(order)).into_response()
}

/// The caller's orders.
#[utoipa::path(get, path = "/orders", security(("bearer" = [])), responses(
    (status = 200, description = "The orders", body = Vec<Order>),
    (status = 401, description = "No `Authorization: Bearer <token>`", content_type = "application/problem+json", body = Problem),
))]
pub(super) async fn list_orders(State(db): State<AppState>, Extension(caller): Extension<Caller>) -> Json<Vec<Order>> {
    Json(db.orders.lock().expect("orders lock").get(&caller).cloned().unwrap_or_default())
}

/// Take a note.
#[utoipa::path(post, path = "/notes", security(("bearer" = [])), responses((status = 201, description = "The note", body = Note), Refusals))]
#[idempotent(optional, scope = "pat")]
pub(super) async fn create_note(
    State(db): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(note): Json<NewNote>,
) -> (StatusCode, Json<Note>) {
    tokio::time::sleep(db.handler_delay).await;
    let note = Note { id: format!("note_{}", db.next_id.fetch_add(1, Ordering::SeqCst) + 1), text: note.text };
    db.notes.lock().expect("notes lock").entry(caller).or_default().push(note.clone());
    (StatusCode::CREATED, Json(note))
}

/// The caller's notes.
#[utoipa::path(get, path = "/notes", security(("bearer" = [])), responses(
    (status = 200, description = "The notes", body = Vec<Note>),
    (status = 401, description = "No `Authorization: Bearer <token>`", content_type = "application/problem+json", body = Problem),
))]
pub(super) async fn list_notes(State(db): State<AppState>, Extension(caller): Extension<Caller>) -> Json<Vec<Note>> {
    Json(db.notes.lock().expect("notes lock").get(&caller).cloned().unwrap_or_default())
}
