use idem_runtime::idempotent;

#[idempotent(header = "Request Id")]
async fn create() -> &'static str { "created" }

fn main() {}
