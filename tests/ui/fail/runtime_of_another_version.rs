//! The expansion reaches the runtime through a module named after the macro's version: with a
//! runtime of another version (here a stand-in), the error names the version the macro needs.
use idem_runtime::idempotent;

mod runtime_0_0_9 {
    pub mod __private_0_0_9 {}
}

#[idempotent(crate = "runtime_0_0_9")]
async fn create() -> &'static str { "created" }

fn main() {}
