use idem_runtime::idempotent;

#[idempotent(required)]
#[utoipa::path(post, path = "/orders", responses((status = 201, description = "created")))]
async fn create_order() -> &'static str {
    "created"
}

fn main() {}
