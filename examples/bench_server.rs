//! The load benchmark's server: `POST /plain` and `POST /idem` run identical handlers, the
//! second under `#[idempotent(required, ttl = "24h")]`.
//!
//! ```text
//! cargo run --release --example bench_server -- [--addr 127.0.0.1:3100] [--store memory|redis://HOST:PORT]
//! ```
//!
//! `scripts/load.sh` drives it with wrk.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use idem_runtime::idempotent;
use idem_runtime::store::{LocalTier, MemoryStore, RedisStore};
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
    let mut addr: SocketAddr = "127.0.0.1:3100".parse().expect("valid address");
    let mut store = "memory".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next();
        match (flag.as_str(), value) {
            ("--addr", Some(v)) => match v.parse() {
                Ok(a) => addr = a,
                Err(e) => {
                    eprintln!("--addr {v}: {e}");
                    return ExitCode::from(2);
                }
            },
            ("--store", Some(v)) => store = v,
            _ => {
                eprintln!("usage: bench_server [--addr 127.0.0.1:3100] [--store memory|redis://HOST:PORT]");
                return ExitCode::from(2);
            }
        }
    }
    let idempotency = if store == "memory" {
        Idempotency::new(MemoryStore::new())
    } else {
        match RedisStore::connect(store.as_str()).await {
            Ok(redis) => Idempotency::new(LocalTier::new(redis)),
            Err(e) => {
                eprintln!("--store {store}: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let app = Router::new().route("/plain", post(plain)).route("/idem", post(idem)).layer(idempotency);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("bench_server listening on http://{} (store: {store})", listener.local_addr().expect("bound"));
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}
