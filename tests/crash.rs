//! Crashes with real processes sharing a real Redis: a server killed with `kill -9`
//! mid-handler leaves a claim that expires after its lease, and the retry runs the handler
//! exactly once more; a server frozen past its lease (SIGSTOP) that comes back cannot
//! overwrite the result of the server that took over.
//!
//! The servers are this test binary run again as a child (`child_server`, ignored otherwise).

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use common::{eventually, wire};
use idem_runtime::store::RedisStore;
use idem_runtime::{idempotent, Idempotency};
use redis::AsyncCommands as _;

#[derive(Clone)]
struct ChildState {
    redis: redis::aio::ConnectionManager,
    counter: String,
    instance: String,
}

#[idempotent(required, lease = "1s", ttl = "1m")]
async fn slow(State(state): State<ChildState>) -> (StatusCode, Json<serde_json::Value>) {
    let mut redis = state.redis.clone();
    let run: i64 = redis.incr(&state.counter, 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    (StatusCode::CREATED, Json(serde_json::json!({ "run": run, "instance": state.instance })))
}

/// The child server: run only when the crash tests start this binary as a server.
#[test]
#[ignore = "the crash tests' child server; run by them"]
fn child_server() {
    let (Ok(url), Ok(prefix), Ok(instance)) =
        (std::env::var("CRASH_REDIS_URL"), std::env::var("CRASH_PREFIX"), std::env::var("CRASH_INSTANCE"))
    else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let store = RedisStore::builder(url.clone()).prefix(prefix.clone()).connect().await.unwrap();
        let redis = redis::aio::ConnectionManager::new(redis::Client::open(url).unwrap()).await.unwrap();
        let state = ChildState { redis, counter: format!("{prefix}executions"), instance };
        let app = Router::new().route("/slow", post(slow)).layer(Idempotency::new(store)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("ADDR {}", listener.local_addr().unwrap());
        axum::serve(listener, app).await.unwrap();
    });
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(url: &str, prefix: &str, instance: &str) -> Server {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_server", "--nocapture", "--test-threads", "1"])
        .env("CRASH_REDIS_URL", url)
        .env("CRASH_PREFIX", prefix)
        .env("CRASH_INSTANCE", instance)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("the child prints its address").unwrap();
        // libtest prints "test child_server ... " before it, on the same line.
        if let Some(addr) = line.split("ADDR ").nth(1) {
            break addr.trim().parse().unwrap();
        }
    };
    Server { child, addr }
}

fn signal(server: &Server, signal: &str) {
    let status = Command::new("kill").args([signal, &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

fn executions(url: &str, prefix: &str) -> i64 {
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    redis::cmd("GET").arg(format!("{prefix}executions")).query::<Option<i64>>(&mut conn).unwrap().unwrap_or(0)
}

fn send(server: &Server, key: &str) -> common::Wire {
    wire(server.addr, "POST", "/slow", &[("Idempotency-Key", key)], "")
}

fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("idem-test:crash:{name}:{}:{nanos}:", std::process::id())
}

#[tokio::test]
async fn a_killed_server_s_claim_expires_and_the_retry_runs_the_handler_once() {
    let Some(url) = common::redis_url("a_killed_server_s_claim_expires_and_the_retry_runs_the_handler_once") else {
        return;
    };
    let prefix = unique_prefix("kill");
    let a = spawn_server(&url, &prefix, "a");
    let b = spawn_server(&url, &prefix, "b");
    let a_addr = a.addr;
    let first = std::thread::spawn(move || {
        std::panic::catch_unwind(|| wire(a_addr, "POST", "/slow", &[("Idempotency-Key", "k")], "")).is_ok()
    });
    // The handler has started on a.
    eventually(Duration::from_secs(10), || executions(&url, &prefix) == 1).await;
    signal(&a, "-KILL");
    drop(a);
    let _ = first.join();

    // The dead server's claim holds until its lease (1 s) expires.
    let during = send(&b, "k");
    assert_eq!(during.status, 409, "{during:?}");
    std::thread::sleep(Duration::from_millis(1100));
    let retry = send(&b, "k");
    assert_eq!(retry.status, 201, "{retry:?}");
    assert!(!retry.replayed());
    assert_eq!(retry.json()["instance"], "b");
    assert!(send(&b, "k").replayed());
    assert_eq!(executions(&url, &prefix), 2, "the crashed run and exactly one retry");
}

#[tokio::test]
async fn a_stale_owner_that_comes_back_cannot_overwrite_the_new_result() {
    let Some(url) = common::redis_url("a_stale_owner_that_comes_back_cannot_overwrite_the_new_result") else {
        return;
    };
    let prefix = unique_prefix("stale");
    let a = spawn_server(&url, &prefix, "a");
    let b = spawn_server(&url, &prefix, "b");
    let a_addr = a.addr;
    let stale = std::thread::spawn(move || wire(a_addr, "POST", "/slow", &[("Idempotency-Key", "k")], ""));
    // The handler has started on a.
    eventually(Duration::from_secs(10), || executions(&url, &prefix) == 1).await;
    // Freeze a past its lease: no renewal, no completion.
    signal(&a, "-STOP");
    std::thread::sleep(Duration::from_millis(1200));
    let taken_over = send(&b, "k");
    assert_eq!(taken_over.status, 201, "{taken_over:?}");
    assert_eq!(taken_over.json()["instance"], "b");

    // a comes back, finishes its handler and tries to store its response: fenced off.
    signal(&a, "-CONT");
    let stale = stale.join().unwrap();
    assert_eq!(stale.status, 201, "a still answers its own (stale) client");
    assert_eq!(stale.json()["instance"], "a");
    for server in [&a, &b] {
        let replay = send(server, "k");
        assert!(replay.replayed(), "{replay:?}");
        assert_eq!(replay.json()["instance"], "b", "the new owner's result stands");
    }
    assert_eq!(executions(&url, &prefix), 2);
}
