use axum::http::HeaderMap;
use idem_runtime::idempotent;

#[idempotent(required)]
async fn create(headers: HeaderMap) -> String { headers.len().to_string() }

fn main() {}
