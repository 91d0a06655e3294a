use idem_runtime::idempotent;

#[idempotent(ttl = "1m", lease = "2m")]
async fn create() -> &'static str { "created" }

fn main() {}
