use idem_runtime::{defaults, idempotent, Defaults};

const IDEM: Defaults = defaults!(lease = "1m");

#[idempotent(defaults = IDEM, ttl = "30s")]
async fn create() -> &'static str { "created" }

fn main() {}
