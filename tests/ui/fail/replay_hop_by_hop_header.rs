use idem_runtime::idempotent;

#[idempotent(replay_headers("location", "Transfer-Encoding"))]
async fn create() -> &'static str { "created" }

fn main() {}
