use idem_runtime::idempotent;

#[idempotent(on_conflict = "retry")]
async fn create() -> &'static str { "created" }

fn main() {}
