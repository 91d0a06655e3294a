//! One server, one trivial handler three ways: `POST /plain` as it is, `POST /idem` under
//! `#[idempotent(required, ttl = "24h")]` with idem's default embedded store, and `POST /peer`
//! behind the `idempotent` crate's `IdempotencyLayer` over its memory store, keeping completed
//! responses for 24 hours too. The handlers are those of idem's `examples/bench_server.rs`.
//!
//! ```text
//! cargo run --release --manifest-path bench/peers/Cargo.toml -- [--addr 127.0.0.1:3100]
//! ```
//!
//! `scripts/peers.sh` drives it with wrk.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use idem_runtime::idempotent;
use idem_runtime::store::MemoryStore;
use idem_runtime::Idempotency;
use serde::{Deserialize, Serialize};

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
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    (StatusCode::CREATED, Json(Order { id, item: order.item, qty: order.qty }))
}

async fn plain(Json(order): Json<NewOrder>) -> (StatusCode, Json<Order>) {
    create(order)
}

#[idempotent(required, ttl = "24h")]
async fn idem(Json(order): Json<NewOrder>) -> (StatusCode, Json<Order>) {
    create(order)
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut addr: SocketAddr = "127.0.0.1:3100".parse().expect("an address");
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--addr", Some(value)) => match value.parse() {
                Ok(value) => addr = value,
                Err(error) => {
                    eprintln!("--addr {value}: {error}");
                    return ExitCode::FAILURE;
                }
            },
            _ => {
                eprintln!("usage: idem-peers-bench [--addr HOST:PORT]");
                return ExitCode::FAILURE;
            }
        }
    }
    let peer_store = match idempotent::memory::MemoryStore::builder().try_build() {
        Ok(store) => store,
        Err(error) => {
            eprintln!("the peer's memory store: {error}");
            return ExitCode::FAILURE;
        }
    };
    let peer = idempotent::middleware::IdempotencyLayer::new(peer_store)
        .completed_ttl(Duration::from_secs(24 * 60 * 60))
        .require_key(true);
    let app = Router::new()
        .route("/plain", post(plain))
        .route("/idem", post(idem))
        .layer(Idempotency::new(MemoryStore::new()))
        .merge(Router::new().route("/peer", post(plain)).layer(peer));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on {addr}: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {addr}: /plain, /idem (idem), /peer (idempotent {})", "2.0.0");
    if let Err(error) = axum::serve(listener, app).await {
        eprintln!("server error: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
