//! A runtime that served covered requests and was dropped leaves nothing of itself behind: a
//! process that starts and drops runtimes (a test suite with a runtime per test, a tool running
//! one per job) does not accumulate their drivers and file descriptors.

mod common;

use common::post_to;
use idem_runtime::store::MemoryStore;
use idem_runtime::{idempotent, Idempotency};

#[idempotent(required)]
async fn create() -> &'static str {
    "created"
}

#[cfg(target_os = "linux")]
fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[cfg(target_os = "linux")]
#[test]
fn a_dropped_runtime_that_held_leases_keeps_no_file_descriptor_open() {
    let store = MemoryStore::new();
    let app = axum::Router::new().route("/create", axum::routing::post(create)).layer(Idempotency::new(store));
    let serve = |n: usize| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let reply = runtime.block_on(post_to("/create").key(&format!("key-{n}")).send(&app));
        assert_eq!(reply.status, 200);
    };
    serve(0);
    let before = open_files();
    for n in 1..=200 {
        serve(n);
    }
    let after = open_files();
    assert!(after <= before + 2, "{before} open files before 200 runtimes, {after} after");
}
