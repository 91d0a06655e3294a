use idem_runtime::idempotent;

#[idempotent(lease = "2d")]
async fn create() -> &'static str { "created" }

fn main() {}
