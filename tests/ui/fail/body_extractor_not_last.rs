use axum::{extract::Path, Json};
use idem_runtime::idempotent;

#[idempotent(required)]
async fn create(Json(body): Json<serde_json::Value>, Path(id): Path<u64>) -> String { format!("{id}{body}") }

fn main() {}
