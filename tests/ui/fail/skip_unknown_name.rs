use axum::extract::State;
use idem_runtime::idempotent;

#[idempotent(skip(db))]
async fn create(State(state): State<()>) -> &'static str { let () = state; "created" }

fn main() {}
