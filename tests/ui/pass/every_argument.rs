//! Every argument of the attribute at once, on a handler returning `Result` with `?`.
#![deny(warnings)]

use axum::extract::{Path, Query, State};
use axum::http::{request::Parts, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use idem_runtime::idempotent;

#[derive(Clone)]
struct AppState;

#[derive(serde::Deserialize)]
struct Filter {
    verbose: Option<bool>,
}

fn tenant(parts: &Parts) -> Result<String, StatusCode> {
    parts.headers.get("x-tenant").and_then(|v| v.to_str().ok()).map(str::to_owned).ok_or(StatusCode::FORBIDDEN)
}

/// Docs stay on the handler.
#[idempotent(
    optional,
    ttl = "7d",
    scope = with(tenant),
    fingerprint(id, body),
    lease = "45s",
    on_conflict = "wait",
    on_expired_key = "run",
    header = "Request-Id",
    keep_status(409),
    release_status(404, 410..=418),
    replay_headers("location", "set-cookie"),
    crate = "idem_runtime",
)]
pub async fn update(
    State(_state): State<AppState>,
    Path(id): Path<u64>,
    Query(filter): Query<Filter>,
    Json(body): Json<serde_json::Value>,
) -> Result<Json<serde_json::Value>, StatusCode> {
    let n: u64 = body.get("n").and_then(|n| n.as_u64()).ok_or(StatusCode::BAD_REQUEST)?;
    Ok(Json(serde_json::json!({ "id": id, "n": n, "verbose": filter.verbose })))
}

#[idempotent(scope = header("X-Tenant"), skip(_state))]
async fn header_scope(State(_state): State<AppState>) -> StatusCode {
    StatusCode::NO_CONTENT
}

#[idempotent(scope = "global", on_conflict = "reject")]
async fn global_scope(body: String) -> String {
    body
}

fn main() {
    let _app: Router = Router::new()
        .route("/items/{id}", post(update))
        .route("/header", post(header_scope))
        .route("/global", post(global_scope))
        .with_state(AppState);
}
