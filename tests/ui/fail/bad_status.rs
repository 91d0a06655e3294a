use idem_runtime::idempotent;

#[idempotent(release_status(404, 600))]
async fn create() -> &'static str { "created" }

fn main() {}
