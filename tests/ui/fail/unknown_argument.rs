use idem_runtime::idempotent;

#[idempotent(required, retries = 3)]
async fn create() -> &'static str { "created" }

fn main() {}
