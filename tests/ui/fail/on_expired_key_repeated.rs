use idem_runtime::idempotent;

#[idempotent(on_expired_key = "run", on_expired_key = "refuse")]
async fn create() -> &'static str { "created" }

fn main() {}
