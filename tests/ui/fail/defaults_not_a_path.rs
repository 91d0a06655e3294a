use idem_runtime::idempotent;

#[idempotent(defaults = "IDEM")]
async fn create() -> &'static str { "created" }

fn main() {}
