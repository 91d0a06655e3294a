use idem_runtime::idempotent;

#[derive(serde::Deserialize)]
struct NewOrder { item: String }

#[idempotent(required)]
async fn create(order: NewOrder) -> String { order.item }

fn main() {}
