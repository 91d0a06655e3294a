// A handler that writes through `Tx` on a router whose state holds no `PgStore`: `Tx` finds
// its store in the state, so the route cannot be built.
use axum::extract::State;
use idem_runtime::idempotent;
use idem_runtime::postgres::Tx;

#[derive(Clone)]
struct AppState {
    name: String,
}

#[idempotent(required)]
async fn create(State(state): State<AppState>, tx: Tx) -> String {
    drop(tx);
    state.name
}

fn main() {}
