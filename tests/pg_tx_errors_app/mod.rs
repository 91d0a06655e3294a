//! The application of the error matrix: a handler taking `Tx` that writes an order, provokes
//! the failed statement its request names, catches it and answers the status the request names;
//! and the fixture that serves it on a schema of its own.

use std::str::FromStr as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use idem_runtime::idempotent;
use idem_runtime::postgres::Tx;
use idem_runtime::store::PgStore;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::{mpsc, Semaphore};

use crate::common::{post_to, Reply};
use crate::pg_common::TestSchema;

#[derive(Clone)]
pub(crate) struct App {
    pub(crate) store: PgStore,
    /// The test's schema, quoted.
    pub(crate) schema: String,
    pub(crate) runs: Arc<AtomicUsize>,
    /// Each run sends its backend's pid here before the statement that may block or fail.
    pub(crate) reached: mpsc::UnboundedSender<i32>,
    /// A run told to hold waits here for a permit.
    pub(crate) gate: Arc<Semaphore>,
}

impl FromRef<App> for PgStore {
    fn from_ref(app: &App) -> PgStore {
        app.store.clone()
    }
}

/// The failed statement a run provokes after writing its order.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Failure {
    /// Inserts the SKU `taken`, which exists (23505).
    UniqueViolation,
    /// Inserts a SKU with a negative stock (23514).
    CheckViolation,
    /// Sets SERIALIZABLE first, then decrements the stock of item 1 (40001 when a concurrent
    /// run decremented it and committed first).
    Serialization,
    /// Locks the stock of item `first`, holds, then locks the other item (40P01 for one of two
    /// runs taking them in opposite orders).
    Deadlock,
    /// `SET LOCAL statement_timeout`, then a statement that outlasts it (57014).
    StatementTimeout,
    /// Holds; the test terminates the run's backend before letting it go on.
    ConnectionKilled,
    /// `SET TRANSACTION ISOLATION LEVEL SERIALIZABLE` in a transaction whose level is not
    /// SERIALIZABLE already (25001: idem's claim is the transaction's first query).
    IsolationChange,
}

#[derive(Deserialize, Serialize)]
pub(crate) struct Attempt {
    pub(crate) item: String,
    pub(crate) failure: Failure,
    /// The status the handler answers when it catches the failure.
    pub(crate) answer: u16,
    /// Whether to wait for a permit (after the first lock, for a deadlock or a serialization).
    #[serde(default)]
    pub(crate) hold: bool,
    /// The stock row a deadlock's run locks first (1 or 2).
    #[serde(default)]
    pub(crate) first: i32,
}

/// Runs the attempt; a failed statement is caught and answered with the attempt's status.
async fn attempt(app: &App, tx: &mut Tx, attempt: &Attempt) -> Response {
    app.runs.fetch_add(1, Ordering::SeqCst);
    match provoke(app, tx, attempt).await {
        Ok(()) => (StatusCode::CREATED, Json(serde_json::json!({ "item": attempt.item }))).into_response(),
        Err(error) => {
            let code = error.as_database_error().and_then(|e| e.code()).map_or("none".to_owned(), |c| c.into_owned());
            let status = StatusCode::from_u16(attempt.answer).unwrap();
            (status, Json(serde_json::json!({ "caught": code, "item": attempt.item }))).into_response()
        }
    }
}

async fn provoke(app: &App, tx: &mut Tx, attempt: &Attempt) -> Result<(), sqlx::Error> {
    let s = &app.schema;
    if matches!(attempt.failure, Failure::Serialization | Failure::IsolationChange) {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").execute(&mut **tx).await?;
    }
    // The write that must not commit when the transaction fails.
    sqlx::query(&format!("INSERT INTO {s}.orders (item) VALUES ($1)")).bind(&attempt.item).execute(&mut **tx).await?;
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut **tx).await?;
    let hold = || async {
        if attempt.hold {
            app.gate.acquire().await.unwrap().forget();
        }
    };
    match attempt.failure {
        Failure::UniqueViolation => {
            sqlx::query(&format!("INSERT INTO {s}.skus (sku, qty) VALUES ('taken', 1)")).execute(&mut **tx).await?;
        }
        Failure::CheckViolation => {
            let insert = format!("INSERT INTO {s}.skus (sku, qty) VALUES ($1, -1)");
            sqlx::query(&insert).bind(&attempt.item).execute(&mut **tx).await?;
        }
        Failure::Serialization => {
            let update = format!("UPDATE {s}.stock SET n = n - 1 WHERE id = 1");
            if attempt.hold {
                // The first run takes the row, says so, and holds it.
                sqlx::query(&update).execute(&mut **tx).await?;
                app.reached.send(pid).unwrap();
                hold().await;
            } else {
                // The second says so, then waits for the row.
                app.reached.send(pid).unwrap();
                sqlx::query(&update).execute(&mut **tx).await?;
            }
        }
        Failure::Deadlock => {
            let update = format!("UPDATE {s}.stock SET n = n - 1 WHERE id = $1");
            sqlx::query(&update).bind(attempt.first).execute(&mut **tx).await?;
            app.reached.send(pid).unwrap();
            hold().await;
            sqlx::query(&update).bind(3 - attempt.first).execute(&mut **tx).await?;
        }
        Failure::StatementTimeout => {
            sqlx::query("SET LOCAL statement_timeout = '50ms'").execute(&mut **tx).await?;
            sqlx::query("SELECT pg_sleep(5)").execute(&mut **tx).await?;
        }
        Failure::ConnectionKilled => {
            app.reached.send(pid).unwrap();
            app.gate.acquire().await.unwrap().forget();
            sqlx::query("SELECT 1").execute(&mut **tx).await?;
        }
        Failure::IsolationChange => {}
    }
    Ok(())
}

#[idempotent(required)]
async fn attempts(State(app): State<App>, mut tx: Tx, Json(body): Json<Attempt>) -> Response {
    attempt(&app, &mut tx, &body).await
}

/// A handler whose service keeps its 409 answers (a unique violation answered "already exists").
#[idempotent(required, keep_status(409))]
async fn attempts_keeping_409(State(app): State<App>, mut tx: Tx, Json(body): Json<Attempt>) -> Response {
    attempt(&app, &mut tx, &body).await
}

/// The same without a key: no record, and a transaction committed or rolled back by status.
#[idempotent(optional)]
async fn attempts_optional(State(app): State<App>, mut tx: Tx, Json(body): Json<Attempt>) -> Response {
    attempt(&app, &mut tx, &body).await
}

pub(crate) struct Fixture {
    pub(crate) schema: TestSchema,
    pub(crate) app: App,
    pub(crate) router: Router,
    pub(crate) reached: mpsc::UnboundedReceiver<i32>,
    /// The test's own connections, outside the handlers'.
    pub(crate) pool: PgPool,
}

impl Fixture {
    /// The app on a store whose connections start their transactions at the database's
    /// default level, or, with `serializable`, at SERIALIZABLE.
    pub(crate) async fn new(test: &str, serializable: bool) -> Option<Self> {
        Self::with(test, serializable, false).await
    }

    /// As [`Fixture::new`]; with `slow_release`, a connection given back to the store's pool
    /// waits 300 ms there before sqlx flushes what it queued (a dropped transaction's
    /// ROLLBACK), as a busy pool may.
    pub(crate) async fn with(test: &str, serializable: bool, slow_release: bool) -> Option<Self> {
        let schema = TestSchema::create(test).await?;
        let pool = schema.pool(4).await;
        let s = format!("\"{}\"", schema.name);
        let setup = format!(
            "CREATE TABLE {s}.orders (id bigserial PRIMARY KEY, item text NOT NULL);
             CREATE TABLE {s}.skus (sku text PRIMARY KEY, qty int NOT NULL CHECK (qty >= 0));
             INSERT INTO {s}.skus VALUES ('taken', 1);
             CREATE TABLE {s}.stock (id int PRIMARY KEY, n int NOT NULL);
             INSERT INTO {s}.stock VALUES (1, 100), (2, 100);"
        );
        sqlx::raw_sql(&setup).execute(&pool).await.unwrap();
        let mut options = PgConnectOptions::from_str(&schema.url).unwrap().application_name("idem-test-errors");
        if serializable {
            options = options.options([("default_transaction_isolation", "serializable")]);
        }
        let mut store_pool = PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(10));
        if slow_release {
            store_pool = store_pool.after_release(|_, _| {
                Box::pin(async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok(true)
                })
            });
        }
        let store_pool = store_pool.connect_with(options).await.unwrap();
        let store = schema.builder(store_pool).build();
        let (sender, reached) = mpsc::unbounded_channel();
        let app = App { store, schema: s, runs: Arc::default(), reached: sender, gate: Arc::new(Semaphore::new(0)) };
        let router = Router::new()
            .route("/attempts", post(attempts))
            .route("/attempts-keeping-409", post(attempts_keeping_409))
            .route("/attempts-optional", post(attempts_optional))
            .with_state(app.clone());
        Some(Self { schema, app, router, reached, pool })
    }

    pub(crate) async fn orders(&self, item: &str) -> i64 {
        let count = format!("SELECT count(*) FROM {}.orders WHERE item = $1", self.app.schema);
        sqlx::query_scalar(&count).bind(item).fetch_one(&self.pool).await.unwrap()
    }

    pub(crate) async fn stock(&self, id: i32) -> i32 {
        let n = format!("SELECT n FROM {}.stock WHERE id = $1", self.app.schema);
        sqlx::query_scalar(&n).bind(id).fetch_one(&self.pool).await.unwrap()
    }

    pub(crate) fn runs(&self) -> usize {
        self.app.runs.load(Ordering::SeqCst)
    }

    pub(crate) async fn send(&self, path: &str, key: &str, attempt: &Attempt) -> Reply {
        post_to(path).key(key).json(&serde_json::to_string(attempt).unwrap()).send(&self.router).await
    }

    pub(crate) async fn send_without_key(&self, path: &str, attempt: &Attempt) -> Reply {
        post_to(path).json(&serde_json::to_string(attempt).unwrap()).send(&self.router).await
    }

    pub(crate) fn spawn(
        &self,
        path: &'static str,
        key: &'static str,
        attempt: Attempt,
    ) -> tokio::task::JoinHandle<Reply> {
        let router = self.router.clone();
        let body = serde_json::to_string(&attempt).unwrap();
        tokio::spawn(async move { post_to(path).key(key).json(&body).send(&router).await })
    }

    /// Whether the backend `pid` is still in a transaction (one a failed statement aborted,
    /// included).
    pub(crate) async fn in_transaction(&self, pid: i32) -> bool {
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_optional(&self.pool)
            .await
            .unwrap();
        state.is_some_and(|state| state.starts_with("idle in transaction"))
    }

    /// Waits until the backend `pid` waits for a lock.
    pub(crate) async fn until_blocked(&self, pid: i32) {
        self.until_one_blocked(&[pid]).await;
    }

    /// Waits until one of the backends `pids` waits for a lock.
    pub(crate) async fn until_one_blocked(&self, pids: &[i32]) {
        for _ in 0..2000 {
            let waiting: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = ANY ($1) AND wait_event_type = 'Lock')",
            )
            .bind(pids)
            .fetch_one(&self.pool)
            .await
            .unwrap();
            if waiting {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("none of the backends {pids:?} waited for a lock");
    }
}

pub(crate) fn failing(item: &str, failure: Failure, answer: u16) -> Attempt {
    Attempt { item: item.to_owned(), failure, answer, hold: false, first: 0 }
}
