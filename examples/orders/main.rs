//! The orders demo: an axum service whose create endpoints are idempotent.
//!
//! ```text
//! cargo run --example orders -- [--addr 127.0.0.1:3000]
//!                                [--store memory|redis://HOST:PORT|redis-cluster://HOST:PORT[,HOST:PORT…]
//!                                         |postgres://USER@HOST:PORT/DB]
//!                                [--orders-db postgres://USER@HOST:PORT/DB]
//!                                [--handler-delay-ms N] [--fail-first N] [--provider http://HOST:PORT]
//! ```
//!
//! Every request needs `Authorization: Bearer <token>`; orders and notes are kept per token. The
//! OpenAPI document is at `GET /openapi.json`, and idem's metrics as Prometheus text at
//! `GET /metrics`, both without authorization.
//!
//! `POST /orders/wait` places an order as `POST /orders` does, except that a duplicate sent
//! while the first runs waits for its response instead of getting 409 (`on_conflict = "wait"`):
//! with `--handler-delay-ms 300`, a retry sent 100 ms after the first returns the replay right
//! after the first's 201.
//!
//! `POST /payments {"amount": N}` pays through a payment provider: the demo serves a simulated
//! one (`POST /provider/charges`, one charge per `Idempotency-Key`; `GET /provider/charges` lists
//! each charge with its key, amount and the requests received for it), or the one at
//! `--provider`. The charge is a step (`idem_runtime::steps::Steps`) sent under a key derived
//! from the payment's (`idem_runtime::downstream::DownstreamKeys`); `--handler-delay-ms` sleeps
//! between the charge and the payment's write. A retry after a crash gets the kept charge, or the
//! provider's replay of it: one charge per payment. `GET /payments` lists the caller's payments.
//!
//! With `--store postgres://…` the orders live in that database's table `idem_demo_orders`,
//! written through the request's transaction (`idem_runtime::postgres::Tx`) together with the
//! idempotency record: a crash at any instant leaves both or neither. `--orders-db` keeps the
//! orders in PostgreSQL with another store (each INSERT commits on its own, as in a service
//! whose idempotency records live elsewhere): the comparison the crash test draws. Payments and
//! the provider's charges are in that database with `--store postgres://…` (payments through
//! `Tx`), in memory otherwise.

mod memory;
mod options;
mod payments;
mod pg;
mod provider;

use self::memory::{create_note, create_order, create_order_waiting, list_notes, list_orders};
use self::options::{parse_options, Options};
use self::payments::Payer;
use self::pg::{
    create_order_autocommit, create_order_autocommit_waiting, create_order_in_tx, create_order_in_tx_waiting,
    list_orders_in_db, orders_db, PgOrders, TxOrders,
};
use self::provider::Charges;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use idem_runtime::store::{LocalTier, MemoryStore, PgStore, RedisStore};
use idem_runtime::Idempotency;
use idem_runtime::{defaults, openapi, Defaults};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPool;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::HttpMethod;
use utoipa::OpenApi;

/// The caller, identified by its bearer token.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Caller(String);

#[derive(Clone, Serialize, utoipa::ToSchema)]
struct Order {
    id: String,
    item: String,
    qty: u32,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct NewOrder {
    item: String,
    qty: u32,
}

#[derive(Clone, Serialize, utoipa::ToSchema)]
struct Note {
    id: String,
    text: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
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

/// An RFC 9457 problem, as the demo answers with it.
#[derive(Serialize, utoipa::ToSchema)]
struct Problem {
    r#type: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
}

fn problem(status: StatusCode, detail: &str) -> Response {
    let body = Problem {
        r#type: "about:blank",
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail: detail.to_owned(),
    };
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}

/// What every route may answer before its handler runs: no token, or a body axum's `Json`
/// rejects (in plain text).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum Refusals {
    /// No `Authorization: Bearer <token>`.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The body is not JSON.
    #[response(status = 400)]
    NotJson(String),
    /// The body is larger than the router accepts.
    #[response(status = 413)]
    TooLarge(String),
    /// The body is not sent as `application/json`.
    #[response(status = 415)]
    NotSentAsJson(String),
    /// The JSON does not have the expected fields.
    #[response(status = 422)]
    WrongFields(String),
}

/// What every way of creating an order shares. A 5 s lease: a crashed instance's claim frees its
/// key after 5 s; a handler that runs longer keeps its claim alive (idem renews it).
const ORDERS: Defaults = defaults!(required, ttl = "24h", scope = "pat", lease = "5s");

#[derive(OpenApi)]
#[openapi(
    info(title = "orders demo"),
    paths(
        memory::create_order,
        memory::create_order_waiting,
        memory::list_orders,
        memory::create_note,
        memory::list_notes,
        payments::create_payment,
        payments::list_payments,
        provider::create_charge,
        provider::list_charges,
    )
)]
struct ApiDoc;

/// The document: what utoipa reads from the handlers, plus what idem does on each annotated one.
fn api_doc() -> utoipa::openapi::OpenApi {
    let mut api = ApiDoc::openapi();
    let bearer = SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer));
    api.components.get_or_insert_with(Default::default).add_security_scheme("bearer", bearer);
    openapi::document(&mut api, "/orders", HttpMethod::Post, create_order).expect("documented");
    openapi::document(&mut api, "/orders/wait", HttpMethod::Post, create_order_waiting).expect("documented");
    openapi::document(&mut api, "/notes", HttpMethod::Post, create_note).expect("documented");
    openapi::document(&mut api, "/payments", HttpMethod::Post, payments::create_payment).expect("documented");
    api
}

/// Where the orders live.
enum OrdersIn {
    Memory,
    /// PostgreSQL: through `Tx` when `store` is set, else committed on their own.
    Db {
        pool: PgPool,
        store: Option<PgStore>,
    },
}

/// Prometheus text of every metric recorded so far.
async fn metrics(State(prometheus): State<PrometheusHandle>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], prometheus.render())
}

/// The routes of payments and of the provider they charge.
struct Paying {
    payments: Router,
    charges: Charges,
}

impl Paying {
    /// Payments and charges in the store's database with the PostgreSQL store, else in memory;
    /// the provider at `provider`.
    async fn new(options: &Options, provider: String, orders_in: &OrdersIn) -> Result<Self, sqlx::Error> {
        let payer = Payer::new(provider, options.handler_delay);
        Ok(match orders_in {
            OrdersIn::Db { pool, store: Some(store) } => Self {
                payments: payments::in_db(payer, pool.clone(), store.clone()).await?,
                charges: Charges::in_db(pool.clone()).await?,
            },
            _ => Self { payments: payments::in_memory(payer), charges: Charges::Memory(Arc::default()) },
        })
    }
}

fn app(
    options: &Options,
    idempotency: Idempotency,
    orders_in: OrdersIn,
    paying: Paying,
    prometheus: PrometheusHandle,
) -> Router {
    let db = Arc::new(Db {
        failures_left: AtomicU64::new(options.fail_first),
        handler_delay: options.handler_delay,
        ..Db::default()
    });
    let orders = match orders_in {
        OrdersIn::Memory => Router::new()
            .route("/orders", post(create_order).get(list_orders))
            .route("/orders/wait", post(create_order_waiting))
            .with_state(db.clone()),
        OrdersIn::Db { pool, store: Some(store) } => Router::new()
            .route("/orders", post(create_order_in_tx).get(list_orders_in_db))
            .route("/orders/wait", post(create_order_in_tx_waiting))
            .with_state(TxOrders { orders: PgOrders { db: db.clone(), pool }, store }),
        OrdersIn::Db { pool, store: None } => Router::new()
            .route("/orders", post(create_order_autocommit).get(list_orders_in_db))
            .route("/orders/wait", post(create_order_autocommit_waiting))
            .with_state(PgOrders { db: db.clone(), pool }),
    };
    Router::new()
        .route("/notes", post(create_note).get(list_notes))
        .with_state(db)
        .merge(orders)
        .merge(paying.payments)
        .merge(provider::routes(paying.charges))
        .layer(idempotency)
        .layer(middleware::from_fn(authenticate))
        .route("/openapi.json", get(Json(api_doc())))
        // Added after the authentication layer: a scraper needs no token.
        .merge(Router::new().route("/metrics", get(metrics)).with_state(prometheus))
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
    let (idempotency, orders_in) = match options.store.as_str() {
        "memory" => (Idempotency::new(MemoryStore::new()), OrdersIn::Memory),
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let connected = async {
                let store = PgStore::connect(url).await.map_err(|e| e.to_string())?;
                let pool = orders_db(url).await.map_err(|e| e.to_string())?;
                Ok::<_, String>((store, pool))
            };
            match connected.await {
                Ok((store, pool)) => (Idempotency::new(store.clone()), OrdersIn::Db { pool, store: Some(store) }),
                Err(e) => {
                    eprintln!("--store {url}: cannot use PostgreSQL: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        store => {
            let builder = if store.starts_with("redis://") || store.starts_with("rediss://") {
                RedisStore::builder(store)
            } else if let Some(nodes) = store.strip_prefix("redis-cluster://") {
                RedisStore::cluster_builder(nodes.split(',').map(|node| format!("redis://{node}")))
            } else {
                eprintln!(
                    "--store {store}: expected `memory`, `redis://HOST:PORT`, `redis-cluster://HOST:PORT[,HOST:PORT…]` or `postgres://USER@HOST:PORT/DB`"
                );
                return ExitCode::from(2);
            };
            match builder.connect().await {
                // Completed records are cached in process too: a replay on a warm instance
                // costs no round trip.
                Ok(store) => (Idempotency::new(LocalTier::new(store)), OrdersIn::Memory),
                Err(e) => {
                    eprintln!("--store {store}: cannot reach Redis: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let orders_in = match (&options.orders_db, orders_in) {
        (None, orders_in) => orders_in,
        (Some(_), OrdersIn::Db { .. }) => {
            eprintln!("--orders-db: with a PostgreSQL store the orders are in its database already");
            return ExitCode::from(2);
        }
        (Some(url), OrdersIn::Memory) => match orders_db(url).await {
            Ok(pool) => OrdersIn::Db { pool, store: None },
            Err(e) => {
                eprintln!("--orders-db {url}: cannot use PostgreSQL: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    // The recorder and its text rendering only: `GET /metrics` is served by the demo's own router.
    let prometheus = match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("cannot install the metrics recorder: {e}");
            return ExitCode::FAILURE;
        }
    };
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        // Folds recorded histogram samples into their summaries, so memory stays bounded
        // between scrapes.
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let listener = match tokio::net::TcpListener::bind(options.addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", options.addr);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().expect("bound address");
    let provider = options.provider.clone().unwrap_or_else(|| format!("http://{addr}"));
    let paying = match Paying::new(&options, provider, &orders_in).await {
        Ok(paying) => paying,
        Err(e) => {
            eprintln!("--store {}: cannot keep payments: {e}", options.store);
            return ExitCode::FAILURE;
        }
    };
    println!("orders demo listening on http://{addr} (store: {})", options.store);
    if let Err(e) = axum::serve(listener, app(&options, idempotency, orders_in, paying, prometheus)).await {
        eprintln!("server error: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
