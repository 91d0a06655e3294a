use idem_runtime::idempotent;

const IDEM: u32 = 7;

#[idempotent(defaults = IDEM)]
async fn create() -> &'static str { "created" }

fn main() {}
