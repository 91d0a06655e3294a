use idem_runtime::{defaults, idempotent, Defaults};

const IDEM: Defaults = defaults!(ttl = "1m");

#[idempotent(defaults = IDEM, lease = "2m")]
async fn create() -> &'static str { "created" }

fn main() {}
