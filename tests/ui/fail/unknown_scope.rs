use idem_runtime::idempotent;

#[idempotent(scope = "tenant")]
async fn create() -> &'static str { "created" }

fn main() {}
