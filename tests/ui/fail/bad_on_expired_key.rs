use idem_runtime::idempotent;

#[idempotent(on_expired_key = "off")]
async fn create() -> &'static str { "created" }

fn main() {}
