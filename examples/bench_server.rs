//! The load benchmark's server: `POST /plain` and `POST /idem` run identical handlers, the
//! second under `#[idempotent(required, ttl = "24h")]`. With `--store postgres://…`,
//! `POST /plain-tx` and `POST /idem-tx` insert the order in PostgreSQL in a transaction of
//! their own: the first opens and commits it itself, the second is handed it by idem (`Tx`),
//! which commits the response record with it; `POST /idem-tx-tiered` is `/idem-tx` behind a
//! `LocalTier` over the same store, whose replays on a warm instance open no transaction.
//!
//! ```text
//! cargo run --release --example bench_server -- [--addr 127.0.0.1:3100]
//!     [--store memory|redis://HOST:PORT|postgres://USER@HOST:PORT/DB]
//! ```
//!
//! `scripts/load.sh` drives it with wrk.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::post;
use axum::{Json, Router};
use idem_runtime::idempotent;
use idem_runtime::postgres::Tx;
use idem_runtime::store::{LocalTier, MemoryStore, PgStore, RedisStore};
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

const TABLE: &str =
    "CREATE TABLE IF NOT EXISTS idem_bench_orders (id bigserial PRIMARY KEY, item text NOT NULL, qty integer NOT NULL)";
const INSERT: &str = "INSERT INTO idem_bench_orders (item, qty) VALUES ($1, $2) RETURNING id";

fn created(id: i64, order: NewOrder) -> Response {
    (StatusCode::CREATED, Json(Order { id: id as u64, item: order.item, qty: order.qty })).into_response()
}

fn failed(error: sqlx::Error) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response()
}

/// The transactional handler without idem: BEGIN, INSERT, COMMIT.
async fn plain_tx(State(store): State<PgStore>, Json(order): Json<NewOrder>) -> Response {
    let inserted = async {
        let mut tx = store.pool().begin().await?;
        let id: i64 = sqlx::query_scalar(INSERT).bind(&order.item).bind(order.qty as i32).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(id)
    };
    match inserted.await {
        Ok(id) => created(id, order),
        Err(error) => failed(error),
    }
}

/// The same INSERT through idem's transaction, committed with the record.
#[idempotent(required, ttl = "24h", state = PgStore)]
async fn idem_tx(mut tx: Tx, Json(order): Json<NewOrder>) -> Response {
    match sqlx::query_scalar(INSERT).bind(&order.item).bind(order.qty as i32).fetch_one(&mut *tx).await {
        Ok(id) => created(id, order),
        Err(error) => failed(error),
    }
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
                eprintln!(
                    "usage: bench_server [--addr 127.0.0.1:3100] [--store memory|redis://HOST:PORT|postgres://USER@HOST:PORT/DB]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let app = Router::new().route("/plain", post(plain)).route("/idem", post(idem));
    let app: Router = if store == "memory" {
        app.layer(Idempotency::new(MemoryStore::new()))
    } else if store.starts_with("postgres://") || store.starts_with("postgresql://") {
        let connected = async {
            let pg = PgStore::connect(&store).await.map_err(|e| e.to_string())?;
            sqlx::query(TABLE).execute(pg.pool()).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(pg)
        };
        match connected.await {
            Ok(pg) => {
                let transactional = Router::new()
                    .route("/plain-tx", post(plain_tx))
                    .route("/idem-tx", post(idem_tx))
                    .with_state(pg.clone());
                // The same handler behind a layer whose store keeps completed records in process
                // too: a replay on a warm instance opens no transaction.
                let tiered = Router::new()
                    .route("/idem-tx-tiered", post(idem_tx))
                    .with_state(pg.clone())
                    .layer(Idempotency::new(LocalTier::new(pg.clone())));
                app.merge(transactional).layer(Idempotency::new(pg)).merge(tiered)
            }
            Err(e) => {
                eprintln!("--store {store}: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        match RedisStore::connect(store.as_str()).await {
            Ok(redis) => app.layer(Idempotency::new(LocalTier::new(redis))),
            Err(e) => {
                eprintln!("--store {store}: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
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
