use idem_runtime::idempotent;

fn tenant(id: u64) -> Option<u64> { Some(id) }

#[idempotent(scope = with(tenant))]
async fn create() -> &'static str { "created" }

fn main() {}
