//! What the engine adds per request, through a real `Router`: the same handler plain and
//! under `#[idempotent]`, for a miss (into a store with room, and into a full default store
//! where each miss evicts the oldest record), a replay, a mismatch and an in-flight conflict on
//! the embedded store, and a miss and a replay of a 4 KiB JSON body (whose plain figure is
//! `plain_handler_4k_body`). The engine's cost is each idem figure minus its plain one.
//!
//! `cargo bench -p idem-runtime --bench engine`
//!
//! What the `metrics` feature costs: the same with `--features metrics` (no recorder installed,
//! metrics go nowhere), and with `IDEM_BENCH_RECORDER=prometheus` set too (a Prometheus
//! recorder, as a service that exports its metrics installs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use divan::Bencher;
use http_body_util::BodyExt as _;
use idem_runtime::fingerprint::Fingerprint;
use idem_runtime::idempotent;
use idem_runtime::record::{Record, StoredBody};
use idem_runtime::store::{Claim, MemoryStore, RecordKey, Store};
use idem_runtime::Idempotency;
use serde::{Deserialize, Serialize};
use tower::ServiceExt as _;

fn main() {
    #[cfg(feature = "metrics")]
    if std::env::var_os("IDEM_BENCH_RECORDER").is_some_and(|r| r == "prometheus") {
        let handle =
            metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().expect("no other recorder");
        // Recorded samples are folded into their summaries every few seconds, as a service does.
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            handle.run_upkeep();
        });
    }
    divan::main();
}

#[derive(Deserialize)]
struct NewOrder {
    item: String,
    qty: u32,
}

#[derive(Serialize)]
struct Order {
    id: u64,
    item: String,
    qty: u32,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn create(order: NewOrder) -> (StatusCode, Json<Order>) {
    (StatusCode::CREATED, Json(Order { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), item: order.item, qty: order.qty }))
}

async fn plain(Json(order): Json<NewOrder>) -> (StatusCode, Json<Order>) {
    create(order)
}

#[idempotent(required, ttl = "24h")]
async fn idem(Json(order): Json<NewOrder>) -> (StatusCode, Json<Order>) {
    create(order)
}

#[idempotent(required, ttl = "24h")]
async fn never_finishes(Json(order): Json<NewOrder>) -> (StatusCode, Json<Order>) {
    std::future::pending::<()>().await;
    create(order)
}

const BODY: &str = r#"{"item":"book","qty":1}"#;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    app: Router,
}

impl Fixture {
    fn new() -> Self {
        Self::with_store(MemoryStore::new())
    }

    fn with_store(store: MemoryStore) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let app = Router::new()
            .route("/plain", post(plain))
            .route("/idem", post(idem))
            .route("/held", post(never_finishes))
            .layer(Idempotency::new(store));
        Self { runtime, app }
    }

    /// A default store already holding its 100 000 records: every new record evicts the oldest,
    /// as on a server that has run at full load for a while.
    fn full() -> Self {
        let store = MemoryStore::new();
        let f = Self::with_store(store.clone());
        f.runtime.block_on(async {
            for i in 0..100_000u64 {
                let mut digest = [0u8; 32];
                digest[..8].copy_from_slice(&i.to_le_bytes());
                let (key, fingerprint) = (RecordKey::from_digest(digest), Fingerprint::from_bytes([1; 32]));
                let Ok(Claim::Acquired(token)) = store.claim(&key, &fingerprint, Duration::from_secs(30)).await else {
                    panic!("a fresh key is acquired")
                };
                let record = Record {
                    fingerprint,
                    status: StatusCode::CREATED,
                    headers: Default::default(),
                    body: StoredBody::Kept(Bytes::from_static(b"{\"id\":1,\"item\":\"book\",\"qty\":1}")),
                    expires_at: SystemTime::now() + Duration::from_secs(86_400),
                };
                store.complete(&key, token, record).await.unwrap();
            }
        });
        f
    }

    fn send(&self, path: &str, key: &str, body: impl Into<Body>) -> StatusCode {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body.into())
            .unwrap();
        self.runtime.block_on(async {
            let response = self.app.clone().oneshot(request).await.unwrap();
            let status = response.status();
            response.into_body().collect().await.unwrap();
            status
        })
    }
}

#[divan::bench]
fn plain_handler(bencher: Bencher<'_, '_>) {
    let f = Fixture::new();
    bencher.bench_local(|| assert_eq!(f.send("/plain", "k", BODY), StatusCode::CREATED));
}

/// A 4 KiB body: the order with a long note, its keys out of order and spaced as a client may
/// send them.
fn large_body() -> Bytes {
    Bytes::from(format!(r#"{{ "qty": 1, "note": "{}", "item": "book" }}"#, "n".repeat(4096 - 40)))
}

/// Requests with a fresh key each.
fn misses(bencher: Bencher<'_, '_>, f: &Fixture, body: Bytes) {
    let mut n = 0u64;
    bencher
        .with_inputs(|| {
            n += 1;
            format!("miss-{n}")
        })
        .bench_local_refs(|key| assert_eq!(f.send("/idem", key, body.clone()), StatusCode::CREATED));
}

#[divan::bench]
fn miss(bencher: Bencher<'_, '_>) {
    misses(bencher, &Fixture::new(), Bytes::from_static(BODY.as_bytes()));
}

#[divan::bench]
fn miss_full_store(bencher: Bencher<'_, '_>) {
    misses(bencher, &Fixture::full(), Bytes::from_static(BODY.as_bytes()));
}

#[divan::bench]
fn miss_4k_body(bencher: Bencher<'_, '_>) {
    misses(bencher, &Fixture::new(), large_body());
}

fn replays(bencher: Bencher<'_, '_>, body: Bytes) {
    let f = Fixture::new();
    f.send("/idem", "replayed", body.clone());
    bencher.bench_local(|| assert_eq!(f.send("/idem", "replayed", body.clone()), StatusCode::CREATED));
}

#[divan::bench]
fn replay(bencher: Bencher<'_, '_>) {
    replays(bencher, Bytes::from_static(BODY.as_bytes()));
}

#[divan::bench]
fn replay_4k_body(bencher: Bencher<'_, '_>) {
    replays(bencher, large_body());
}

#[divan::bench]
fn plain_handler_4k_body(bencher: Bencher<'_, '_>) {
    let f = Fixture::new();
    let body = large_body();
    bencher.bench_local(|| assert_eq!(f.send("/plain", "k", body.clone()), StatusCode::CREATED));
}

#[divan::bench]
fn mismatch(bencher: Bencher<'_, '_>) {
    let f = Fixture::new();
    f.send("/idem", "used", BODY);
    bencher.bench_local(|| {
        assert_eq!(f.send("/idem", "used", r#"{"item":"pen","qty":2}"#), StatusCode::UNPROCESSABLE_ENTITY)
    });
}

#[divan::bench]
fn in_flight_conflict(bencher: Bencher<'_, '_>) {
    let f = Fixture::new();
    let request = Request::post("/held")
        .header("content-type", "application/json")
        .header("idempotency-key", "held")
        .body(Body::from(BODY))
        .unwrap();
    let app = f.app.clone();
    f.runtime.spawn(async move { app.oneshot(request).await });
    // Let the first request claim the key.
    f.runtime.block_on(async { tokio::time::sleep(std::time::Duration::from_millis(20)).await });
    bencher.bench_local(|| assert_eq!(f.send("/held", "held", BODY), StatusCode::CONFLICT));
}
