//! A handler whose future is not `Send` (a `std::sync::MutexGuard` held across an `.await`):
//! the error points at the handler and names the cause.
use std::sync::Mutex;

use idem_runtime::idempotent;

static ORDERS: Mutex<u32> = Mutex::new(0);

async fn audit() {}

#[idempotent]
async fn create() -> String {
    let orders = ORDERS.lock().unwrap();
    audit().await;
    orders.to_string()
}

fn main() {}
