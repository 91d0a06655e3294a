//! The driver `scripts/callgrind.sh` runs under `valgrind --tool=callgrind`: N requests of one
//! kind through a real `Router` (the same handler plain and under `#[idempotent]`, as in the
//! `engine` bench), after a warm-up, all inside `measured_requests` so that callgrind can count
//! that function's instructions and allocations alone (`--dump-before`). The engine's cost per request of a
//! kind is its count per request minus the plain handler's.
//!
//! ```text
//! instructions <plain|miss|miss-full|replay|mismatch|conflict|sha256-block> [requests]
//! ```
//!
//! `sha256-block` compresses one SHA-256 block per "request": valgrind runs SHA-256 in software
//! (it hides the CPU's SHA extensions), so the script reports the blocks each kind hashes apart
//! from the rest of its instructions.
//!
//! Outside the script it just runs the requests (`cargo bench --bench instructions` runs each
//! kind once, as a smoke test).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::BodyExt as _;
use idem_runtime::fingerprint::Fingerprint;
use idem_runtime::idempotent;
use idem_runtime::record::{Record, StoredBody};
use idem_runtime::store::{Claim, MemoryStore, RecordKey, Store};
use idem_runtime::Idempotency;
use serde::{Deserialize, Serialize};
use tower::ServiceExt as _;

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
const OTHER_BODY: &str = r#"{"item":"pen","qty":2}"#;
const WARM_UP: u64 = 200;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Miss,
    MissFull,
    Replay,
    Mismatch,
    Conflict,
    Sha256Block,
}

impl Kind {
    const ALL: [(&'static str, Kind); 7] = [
        ("plain", Kind::Plain),
        ("miss", Kind::Miss),
        ("miss-full", Kind::MissFull),
        ("replay", Kind::Replay),
        ("mismatch", Kind::Mismatch),
        ("conflict", Kind::Conflict),
        ("sha256-block", Kind::Sha256Block),
    ];
}

struct Driver {
    runtime: tokio::runtime::Runtime,
    app: Router,
    kind: Kind,
    /// Keys for misses, made before the measured requests, and the next one to use.
    fresh_keys: Vec<String>,
    next_key: usize,
    sha256: sha2::Sha256,
}

impl Driver {
    fn new(kind: Kind) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let store = MemoryStore::new();
        if kind == Kind::MissFull {
            runtime.block_on(fill(&store));
        }
        let app = Router::new()
            .route("/plain", post(plain))
            .route("/idem", post(idem))
            .route("/held", post(never_finishes))
            .layer(Idempotency::new(store));
        let driver = Self { runtime, app, kind, fresh_keys: Vec::new(), next_key: 0, sha256: Default::default() };
        match kind {
            Kind::Replay | Kind::Mismatch => assert_eq!(driver.send("/idem", "used", BODY), StatusCode::CREATED),
            Kind::Conflict => {
                let request = request("/held", "held", BODY);
                let app = driver.app.clone();
                driver.runtime.spawn(async move { app.oneshot(request).await });
                // Let the first request claim the key.
                driver.runtime.block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
            }
            Kind::Plain | Kind::Miss | Kind::MissFull | Kind::Sha256Block => {}
        }
        driver
    }

    fn send(&self, path: &str, key: &str, body: &'static str) -> StatusCode {
        self.runtime.block_on(async {
            let response = self.app.clone().oneshot(request(path, key, body)).await.unwrap();
            let status = response.status();
            response.into_body().collect().await.unwrap();
            status
        })
    }

    /// Makes the keys of the next `n` misses.
    fn prepare(&mut self, n: u64) {
        let start = self.fresh_keys.len() as u64;
        self.fresh_keys.extend((start..start + n).map(|i| format!("miss-{i}")));
    }

    fn one(&mut self) {
        if self.kind == Kind::Sha256Block {
            // A whole block into an empty buffer: compressed at once.
            sha2::Digest::update(&mut self.sha256, std::hint::black_box([7u8; 64]));
            return;
        }
        let (path, key, body, expected) = match self.kind {
            Kind::Plain => ("/plain", "k", BODY, StatusCode::CREATED),
            Kind::Miss | Kind::MissFull => {
                self.next_key += 1;
                ("/idem", self.fresh_keys[self.next_key - 1].as_str(), BODY, StatusCode::CREATED)
            }
            Kind::Replay => ("/idem", "used", BODY, StatusCode::CREATED),
            Kind::Mismatch => ("/idem", "used", OTHER_BODY, StatusCode::UNPROCESSABLE_ENTITY),
            Kind::Conflict => ("/held", "held", BODY, StatusCode::CONFLICT),
            Kind::Sha256Block => unreachable!("no request"),
        };
        assert_eq!(self.send(path, key, body), expected);
    }
}

fn request(path: &str, key: &str, body: &'static str) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body))
        .unwrap()
}

/// A default store already holding its 100 000 records: every new record evicts the oldest.
async fn fill(store: &MemoryStore) {
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
}

/// The requests callgrind counts: `--dump-before` names this function.
#[inline(never)]
fn measured_requests(driver: &mut Driver, n: u64) {
    for _ in 0..n {
        driver.one();
    }
}

fn main() {
    // `cargo bench` and `cargo test --benches` pass options only (`--bench`, `--test`, …).
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let Some(name) = args.next() else {
        // A smoke run of every kind.
        for (_, kind) in Kind::ALL {
            let mut driver = Driver::new(kind);
            driver.prepare(10);
            measured_requests(&mut driver, 10);
        }
        return;
    };
    let Some(&(_, kind)) = Kind::ALL.iter().find(|(n, _)| *n == name) else {
        eprintln!("unknown kind {name}: one of plain, miss, miss-full, replay, mismatch, conflict, sha256-block");
        std::process::exit(2);
    };
    let n: u64 = args.next().map_or(1000, |n| n.parse().expect("a number of requests"));
    let mut driver = Driver::new(kind);
    driver.prepare(WARM_UP + n);
    for _ in 0..WARM_UP {
        driver.one();
    }
    measured_requests(&mut driver, n);
}
