use idem_runtime::idempotent;

#[idempotent(ttl = "0s")]
async fn create() -> &'static str { "created" }

fn main() {}
