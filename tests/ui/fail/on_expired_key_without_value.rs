use idem_runtime::idempotent;

#[idempotent(required, on_expired_key)]
async fn create() -> &'static str { "created" }

fn main() {}
