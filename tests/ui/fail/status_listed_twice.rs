use idem_runtime::idempotent;

#[idempotent(release_status(404, 400..=404))]
async fn create() -> &'static str { "created" }

fn main() {}
