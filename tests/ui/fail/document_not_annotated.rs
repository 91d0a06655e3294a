use utoipa::openapi::{HttpMethod, OpenApi};

async fn list_orders() -> &'static str {
    "[]"
}

fn main() {
    let mut api = OpenApi::default();
    let _ = idem_runtime::openapi::document(&mut api, "/orders", HttpMethod::Post, list_orders);
}
