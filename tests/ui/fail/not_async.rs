use idem_runtime::idempotent;

#[idempotent(required)]
fn create() -> &'static str { "created" }

fn main() {}
