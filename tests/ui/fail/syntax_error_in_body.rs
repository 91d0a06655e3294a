//! A syntax error in the handler's body is reported by rustc where it is, next to any
//! argument error; the attribute does not claim the item is no function.
use idem_runtime::idempotent;

#[idempotent(ttl = "soon")]
async fn create() -> &'static str {
    let count = ;
    "created"
}

fn main() {}
