use axum::{extract::Path, Json};
use idem_runtime::idempotent;

#[idempotent(fingerprint(id), skip(body))]
async fn create(Path(id): Path<u64>, Json(body): Json<serde_json::Value>) -> String { format!("{id}{body}") }

fn main() {}
