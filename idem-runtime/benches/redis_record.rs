//! The Redis store's cost per record and per request, on a private `redis-server` this
//! benchmark starts on a free loopback port (nothing else writes to it):
//!
//! - memory: 10 000 completed requests of the orders demo's `POST /orders` (201, `Location`,
//!   the 36-byte JSON body `{"id":"ord_1","item":"book","qty":1}`) through a real `Router`;
//!   `MEMORY USAGE` of every record key (min / median / max) and `used_memory` per record;
//! - round trips: a miss (claim + complete), a replay (claim of a completed key) and a bare
//!   `SET` of a value as large as the record, on connections of the same kind, interleaved one
//!   by one in the same run; the median of each and their ratios, and the server's own time
//!   per `SET` and per script (`INFO commandstats`).
//!
//! `cargo bench -p idem-runtime --features redis --bench redis_record`

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use idem_runtime::idempotent;
use idem_runtime::store::{Claim, RedisStore, Store};
use idem_runtime::testkit::{fingerprint, fresh_key, record};
use idem_runtime::Idempotency;
use redis::aio::ConnectionManager;
use tower::ServiceExt as _;

const RECORDS: usize = 10_000;
const OPERATIONS: usize = 20_000;
const BODY: &str = r#"{"id":"ord_1","item":"book","qty":1}"#;

/// The demo's answer to a new order, byte for byte (its id fixed, so every body is 36 bytes).
#[idempotent(required, ttl = "24h")]
async fn create_order() -> Response {
    let mut response = (StatusCode::CREATED, [(header::LOCATION, "/orders/ord_1")], BODY).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

struct Server {
    child: std::process::Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Option<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let server = Server { child, url: format!("redis://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis::Client::open(server.url.as_str())
        .and_then(|c| c.get_connection())
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_err()
    {
        assert!(Instant::now() < deadline, "redis-server did not answer");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(server)
}

fn used_memory(conn: &mut redis::Connection) -> i64 {
    let info: String = redis::cmd("INFO").arg("memory").query(conn).unwrap();
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let Some(server) = start_server() else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut sync = redis::Client::open(server.url.as_str()).unwrap().get_connection().unwrap();
    let store = rt.block_on(RedisStore::builder(server.url.as_str()).new_key_space().connect()).unwrap();

    // Memory per record.
    let app = Router::new().route("/orders", post(create_order)).layer(Idempotency::new(store.clone()));
    let before = used_memory(&mut sync);
    rt.block_on(async {
        for i in 0..RECORDS {
            let request = Request::post("/orders")
                .header("idempotency-key", format!("order-{i}"))
                .header("content-type", "application/json")
                .body(Body::from(r#"{"item":"book","qty":1}"#))
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
        }
    });
    let after = used_memory(&mut sync);
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut sync).unwrap();
    let records: Vec<&Vec<u8>> = keys.iter().filter(|k| !k.ends_with(b"epoch")).collect();
    assert_eq!(records.len(), RECORDS, "one key per record");
    let mut usage: Vec<f64> = records
        .iter()
        .map(|k| redis::cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0).query::<i64>(&mut sync).unwrap() as f64)
        .collect();
    usage.sort_by(f64::total_cmp);
    let kind: String = redis::cmd("TYPE").arg(records[0]).query(&mut sync).unwrap();
    println!(
        "records: {RECORDS} of the demo's order (36-byte body), key type {kind}, key name {} bytes",
        records[0].len()
    );
    println!(
        "MEMORY USAGE per record: min {} B, median {} B, max {} B",
        usage[0],
        median(usage.clone()),
        usage[usage.len() - 1]
    );
    println!("used_memory per record: {:.0} B", (after - before) as f64 / RECORDS as f64);

    // Round trips, in interleaved rounds.
    let value = vec![b'x'; 167];
    let mut conn: ConnectionManager =
        rt.block_on(ConnectionManager::new(redis::Client::open(server.url.as_str()).unwrap())).unwrap();
    let replayed = fresh_key();
    rt.block_on(async {
        let Claim::Acquired(token) = store.claim(&replayed, &fingerprint(1), Duration::from_secs(30)).await.unwrap()
        else {
            panic!("a fresh key is acquired")
        };
        let body = Some(Bytes::from_static(BODY.as_bytes()));
        store.complete(&replayed, token, record(fingerprint(1), Duration::from_secs(3600), body)).await.unwrap();
    });
    let (mut set, mut miss, mut replay) = (Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        for i in 0..OPERATIONS {
            let started = Instant::now();
            let () = redis::cmd("SET")
                .arg(format!("set:{i}"))
                .arg(&value)
                .arg("PX")
                .arg(3_600_000)
                .query_async(&mut conn)
                .await
                .unwrap();
            set.push(started.elapsed().as_secs_f64() * 1e6);

            let key = fresh_key();
            let body = Some(Bytes::from_static(BODY.as_bytes()));
            let stored = record(fingerprint(1), Duration::from_secs(3600), body);
            let started = Instant::now();
            let Claim::Acquired(token) = store.claim(&key, &fingerprint(1), Duration::from_secs(30)).await.unwrap()
            else {
                panic!("a fresh key is acquired")
            };
            store.complete(&key, token, stored).await.unwrap();
            miss.push(started.elapsed().as_secs_f64() * 1e6);

            let started = Instant::now();
            let claim = store.claim(&replayed, &fingerprint(1), Duration::from_secs(30)).await.unwrap();
            replay.push(started.elapsed().as_secs_f64() * 1e6);
            assert!(matches!(claim, Claim::Completed(_)));
        }
    });
    let (set, miss, replay) = (median(set), median(miss), median(replay));
    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut sync).unwrap();
    let server_time = |command: &str| -> f64 {
        let line = stats.lines().find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:"))).unwrap_or_default();
        line.split(',').find_map(|kv| kv.strip_prefix("usec_per_call=")).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    };
    println!("median of {OPERATIONS} of each, interleaved one by one:");
    println!("  bare SET (167-byte value)  {set:7.1} µs");
    println!("  miss (claim + complete)    {miss:7.1} µs  {:.2}× SET", miss / set);
    println!("  replay (claim)             {replay:7.1} µs  {:.2}× SET", replay / set);
    println!(
        "server time per command (INFO commandstats): SET {:.2} µs, EVALSHA {:.2} µs",
        server_time("set"),
        server_time("evalsha")
    );
}
