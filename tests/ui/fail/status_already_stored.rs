use idem_runtime::idempotent;

#[idempotent(keep_status(201, 409), release_status(500))]
async fn create() -> &'static str { "created" }

fn main() {}
