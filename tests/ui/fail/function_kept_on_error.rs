//! On an argument error the function is still emitted: only the argument error is reported,
//! and callers of the function compile.
use idem_runtime::idempotent;

#[idempotent(ttl = "soon")]
async fn create() -> &'static str { "created" }

async fn caller() -> &'static str { create().await }

fn main() { let _ = caller(); }
