//! The orders demo: an axum service whose create endpoints are idempotent.
//!
//! ```text
//! cargo run --example orders -- [--addr 127.0.0.1:3000]
//!                                [--store memory|redis://HOST:PORT|redis-cluster://HOST:PORT[,HOST:PORT…]]
//!                                [--handler-delay-ms N] [--fail-first N]
//! ```
//!
//! Every request needs `Authorization: Bearer <token>`; orders and notes are kept per token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use idem_runtime::idempotent;
use idem_runtime::store::{LocalTier, MemoryStore, RedisStore};
use idem_runtime::Idempotency;
use serde::{Deserialize, Serialize};

#[derive(Debug)]
struct Options {
    addr: SocketAddr,
    store: String,
    handler_delay: Duration,
    fail_first: u64,
}

const USAGE: &str =
    "usage: orders [--addr 127.0.0.1:3000] [--store memory|redis://HOST:PORT|redis-cluster://HOST:PORT[,HOST:PORT…]] \
     [--handler-delay-ms N] [--fail-first N]";

fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        addr: "127.0.0.1:3000".parse().expect("valid address"),
        store: "memory".to_owned(),
        handler_delay: Duration::ZERO,
        fail_first: 0,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--addr" => options.addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--store" => options.store = value()?,
            "--handler-delay-ms" => {
                options.handler_delay =
                    Duration::from_millis(value()?.parse().map_err(|e| format!("--handler-delay-ms: {e}"))?)
            }
            "--fail-first" => options.fail_first = value()?.parse().map_err(|e| format!("--fail-first: {e}"))?,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(options)
}

/// The caller, identified by its bearer token.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Caller(String);

#[derive(Clone, Serialize)]
struct Order {
    id: String,
    item: String,
    qty: u32,
}

#[derive(Deserialize)]
struct NewOrder {
    item: String,
    qty: u32,
}

#[derive(Clone, Serialize)]
struct Note {
    id: String,
    text: String,
}

#[derive(Deserialize)]
struct NewNote {
    text: String,
}

#[derive(Default)]
struct Db {
    orders: Mutex<HashMap<Caller, Vec<Order>>>,
    notes: Mutex<HashMap<Caller, Vec<Note>>>,
    next_id: AtomicU64,
    failures_left: AtomicU64,
    handler_delay: Duration,
}

type AppState = Arc<Db>;

/// Rejects requests without `Authorization: Bearer <token>` and hands the token to handlers.
async fn authenticate(mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match token {
        Some(token) => {
            let caller = Caller(token.to_owned());
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        None => problem(StatusCode::UNAUTHORIZED, "send Authorization: Bearer <token>"),
    }
}

fn problem(status: StatusCode, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}

#[idempotent(required, ttl = "24h", scope = "pat")]
async fn create_order(
    State(db): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(order): Json<NewOrder>,
) -> Response {
    tokio::time::sleep(db.handler_delay).await;
    if db.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return problem(StatusCode::INTERNAL_SERVER_ERROR, "injected failure (--fail-first); nothing was created");
    }
    let id = format!("ord_{}", db.next_id.fetch_add(1, Ordering::SeqCst) + 1);
    let order = Order { id: id.clone(), item: order.item, qty: order.qty };
    db.orders.lock().expect("orders lock").entry(caller).or_default().push(order.clone());
    (StatusCode::CREATED, [(header::LOCATION, format!("/orders/{id}"))], Json(order)).into_response()
}

async fn list_orders(State(db): State<AppState>, Extension(caller): Extension<Caller>) -> Json<Vec<Order>> {
    Json(db.orders.lock().expect("orders lock").get(&caller).cloned().unwrap_or_default())
}

#[idempotent(optional, scope = "pat")]
async fn create_note(
    State(db): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(note): Json<NewNote>,
) -> (StatusCode, Json<Note>) {
    tokio::time::sleep(db.handler_delay).await;
    let note = Note { id: format!("note_{}", db.next_id.fetch_add(1, Ordering::SeqCst) + 1), text: note.text };
    db.notes.lock().expect("notes lock").entry(caller).or_default().push(note.clone());
    (StatusCode::CREATED, Json(note))
}

async fn list_notes(State(db): State<AppState>, Extension(caller): Extension<Caller>) -> Json<Vec<Note>> {
    Json(db.notes.lock().expect("notes lock").get(&caller).cloned().unwrap_or_default())
}

fn app(options: &Options, idempotency: Idempotency) -> Router {
    let db = Arc::new(Db {
        failures_left: AtomicU64::new(options.fail_first),
        handler_delay: options.handler_delay,
        ..Db::default()
    });
    Router::new()
        .route("/orders", post(create_order).get(list_orders))
        .route("/notes", post(create_note).get(list_notes))
        .layer(idempotency)
        .layer(middleware::from_fn(authenticate))
        .with_state(db)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let options = match parse_options(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let idempotency = match options.store.as_str() {
        "memory" => Idempotency::new(MemoryStore::new()),
        store => {
            let builder = if store.starts_with("redis://") || store.starts_with("rediss://") {
                RedisStore::builder(store)
            } else if let Some(nodes) = store.strip_prefix("redis-cluster://") {
                RedisStore::cluster_builder(nodes.split(',').map(|node| format!("redis://{node}")))
            } else {
                eprintln!("--store {store}: expected `memory`, `redis://HOST:PORT` or `redis-cluster://HOST:PORT[,HOST:PORT…]`");
                return ExitCode::from(2);
            };
            match builder.connect().await {
                // Completed records are cached in process too: a replay on a warm instance
                // costs no round trip.
                Ok(store) => Idempotency::new(LocalTier::new(store)),
                Err(e) => {
                    eprintln!("--store {store}: cannot reach Redis: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let listener = match tokio::net::TcpListener::bind(options.addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", options.addr);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().expect("bound address");
    println!("orders demo listening on http://{addr} (store: {})", options.store);
    if let Err(e) = axum::serve(listener, app(&options, idempotency)).await {
        eprintln!("server error: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
