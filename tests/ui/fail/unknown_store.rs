use idem_runtime::idempotent;

#[idempotent(store = "redis")]
async fn create() -> &'static str { "created" }

fn main() {}
