use idem_runtime::idempotent;

#[idempotent(required)]
struct Handler;

fn main() {}
