//! Duplicates under load (short version for CI; set IDEM_RELIABILITY_REQUESTS for a long run):
//! many requests with a share of duplicate keys at high concurrency over real sockets, against
//! the embedded store and against two servers sharing one Redis. Handler executions must equal
//! the distinct keys, and every answer must be the first execution, a replay of it, or an
//! in-flight 409.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use idem_runtime::store::{MemoryStore, RedisStore};
use idem_runtime::{idempotent, Idempotency};

#[derive(Default)]
struct Executions(AtomicUsize);

/// Status, body and whether it was a replay.
type Answer = (u16, String, bool);
/// Every answer, by key.
type Answers = HashMap<String, Vec<Answer>>;

#[idempotent(required)]
async fn create(
    State(runs): State<Arc<Executions>>,
    Json(body): Json<serde_json::Value>,
) -> (StatusCode, Json<serde_json::Value>) {
    let run = runs.0.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(2)).await;
    (StatusCode::CREATED, Json(serde_json::json!({ "run": run, "key": body["key"] })))
}

async fn serve(idempotency: Idempotency, runs: Arc<Executions>) -> SocketAddr {
    let app = Router::new().route("/orders", post(create)).layer(idempotency).with_state(runs);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn requests() -> usize {
    std::env::var("IDEM_RELIABILITY_REQUESTS").ok().and_then(|n| n.parse().ok()).unwrap_or(3000)
}

/// Sends `total` requests, 10 % of them repeating an earlier key, at concurrency `concurrency`,
/// spread round-robin over `servers`. Returns the number of distinct keys and every answer.
async fn load(servers: &[SocketAddr], total: usize, concurrency: usize) -> (usize, Answers) {
    // Every tenth request repeats a key: half of them the previous request's (so the two run
    // concurrently), half one from long before (a late retry).
    let keys: Vec<String> = (0..total)
        .map(|i| match i % 20 {
            9 => format!("k{}", i - 1),
            19 => format!("k{}", i / 2 / 20 * 20),
            _ => format!("k{i}"),
        })
        .collect();
    let distinct = keys.iter().collect::<std::collections::HashSet<_>>().len();
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
    let answers: Arc<Mutex<Answers>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let keys = Arc::new(keys);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, answers, next, keys) = (http.clone(), answers.clone(), next.clone(), keys.clone());
            let servers = servers.to_vec();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(key) = keys.get(i) else { return };
                    let addr = servers[i % servers.len()];
                    let response = http
                        .post(format!("http://{addr}/orders"))
                        .header("idempotency-key", key)
                        .json(&serde_json::json!({ "key": key }))
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    let replayed = idem_runtime::client::is_replayed(response.headers());
                    let body = response.text().await.unwrap();
                    answers.lock().unwrap().entry(key.clone()).or_default().push((status, body, replayed));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let answers = Arc::try_unwrap(answers).unwrap().into_inner().unwrap();
    (distinct, answers)
}

fn check(distinct: usize, executions: usize, answers: &Answers) {
    let all = answers.values().flatten();
    let (replays, conflicts) =
        all.fold((0, 0), |(r, c), (status, _, replayed)| (r + usize::from(*replayed), c + usize::from(*status == 409)));
    println!("executions: {executions}, replays: {replays}, in-flight 409: {conflicts}");
    assert_eq!(executions, distinct, "handler executions equal the distinct keys");
    assert_eq!(answers.len(), distinct);
    for (key, replies) in answers {
        let first: Vec<_> = replies.iter().filter(|(s, _, replayed)| *s == 201 && !replayed).collect();
        assert_eq!(first.len(), 1, "{key}: exactly one executing answer: {replies:?}");
        for (status, body, replayed) in replies {
            match status {
                201 if *replayed => assert_eq!(body, &first[0].1, "{key}: a replay repeats the first answer"),
                201 => {}
                409 => assert!(body.contains("urn:idem:problem:in-flight"), "{key}: {body}"),
                other => panic!("{key}: unexpected status {other}: {body}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_under_load_on_the_embedded_store() {
    let runs = Arc::new(Executions::default());
    let addr = serve(Idempotency::new(MemoryStore::new()), runs.clone()).await;
    let started = Instant::now();
    let (distinct, answers) = load(&[addr], requests(), 256).await;
    check(distinct, runs.0.load(Ordering::SeqCst), &answers);
    println!("embedded store: {} requests, {distinct} distinct keys, {:?}", requests(), started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_under_load_on_two_servers_sharing_redis() {
    let Some(url) = common::redis_url("duplicates_under_load_on_two_servers_sharing_redis") else { return };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let prefix = format!("idem-test:reliability:{}:{nanos}:", std::process::id());
    let runs = Arc::new(Executions::default());
    let mut servers = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::builder(url.clone()).prefix(prefix.clone()).connect().await.unwrap();
        servers.push(serve(Idempotency::new(store), runs.clone()).await);
    }
    let started = Instant::now();
    let (distinct, answers) = load(&servers, requests(), 256).await;
    check(distinct, runs.0.load(Ordering::SeqCst), &answers);
    println!("two servers on Redis: {} requests, {distinct} distinct keys, {:?}", requests(), started.elapsed());
}
