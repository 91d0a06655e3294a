use idem_runtime::idempotent;

#[idempotent(required = true)]
async fn create() -> &'static str { "created" }

fn main() {}
