use idem_runtime::idempotent;

#[idempotent(required, optional)]
async fn create() -> &'static str { "created" }

fn main() {}
