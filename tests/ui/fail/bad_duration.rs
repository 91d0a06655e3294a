use idem_runtime::idempotent;

#[idempotent(ttl = "24 hourz")]
async fn create() -> &'static str { "created" }

fn main() {}
