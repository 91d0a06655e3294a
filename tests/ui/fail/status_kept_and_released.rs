use idem_runtime::idempotent;

#[idempotent(keep_status(409, 500..=503), release_status(400..=410))]
async fn create() -> &'static str { "created" }

fn main() {}
