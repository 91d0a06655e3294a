use axum::Json;
use idem_runtime::idempotent;

#[idempotent(fingerprint(ordr))]
async fn create(Json(order): Json<serde_json::Value>) -> String { order.to_string() }

fn main() {}
