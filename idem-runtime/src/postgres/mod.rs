//! Exactly once with the database: a handler's own PostgreSQL writes and its stored response
//! commit in one transaction (feature `postgres`).
//!
//! An idempotency record kept apart from the data leaves a window: the handler commits its
//! order, the process dies before the record is written, and the client's retry creates a
//! second order. A handler that takes [`Tx`] closes it. Its writes go through the transaction
//! idem opened for the request; idem writes the response record in the same transaction and
//! commits once. A crash at any instant leaves the writes and the record both committed or
//! both absent.
//!
//! ```
//! use axum::{extract::FromRef, http::StatusCode, routing::post, Json, Router};
//! use idem_runtime::{idempotent, postgres::Tx, store::PgStore};
//! use serde::Deserialize;
//!
//! #[derive(Clone)]
//! struct App { store: PgStore }
//!
//! // `Tx` finds the store in the router's state: without it, the route does not compile.
//! impl FromRef<App> for PgStore {
//!     fn from_ref(app: &App) -> PgStore { app.store.clone() }
//! }
//!
//! #[derive(Deserialize)]
//! struct NewOrder { item: String, qty: i32 }
//!
//! // No `State<App>` parameter: `state = App` names the router's state for the compile-time check.
//! #[idempotent(required, state = App)]
//! async fn create_order(mut tx: Tx, Json(order): Json<NewOrder>) -> Result<(StatusCode, String), StatusCode> {
//!     let id: i64 = sqlx::query_scalar("INSERT INTO orders (item, qty) VALUES ($1, $2) RETURNING id")
//!         .bind(&order.item)
//!         .bind(order.qty)
//!         .fetch_one(&mut *tx)
//!         .await
//!         .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
//!     // No commit here: idem commits the order with its stored response.
//!     Ok((StatusCode::CREATED, id.to_string()))
//! }
//!
//! fn app(store: PgStore) -> Router {
//!     Router::new().route("/orders", post(create_order)).with_state(App { store })
//! }
//! ```
//!
//! # The rules
//!
//! - **Commit or roll back, by status.** The transaction commits, with the record, when the
//!   response is one idem keeps (below 500 except 408, 409, 425 and 429, or the handler's
//!   `statuses`); otherwise it rolls back and the key is free for a retry. A handler that
//!   panics rolls back. A request without a key (an `optional` handler, a safe method) gets a
//!   transaction too, committed or rolled back by the same rule.
//! - **The response waits for the commit.** The body is read whole before the commit (a
//!   streaming body is not streamed), and the client receives it only once the commit
//!   succeeded; a failed commit answers 503 `store-unavailable` and nothing of the request is
//!   kept, so a retry runs it again.
//! - **No lease.** The claim is a row written in the transaction plus the key's advisory lock
//!   (`pg_try_advisory_xact_lock`), both held until the transaction ends. A concurrent
//!   duplicate answers 409 at once, or with `on_conflict = "wait"` waits on the lock
//!   (PostgreSQL wakes it when the first commits, and it replays the response; at most the
//!   handler's `lease`, then 409). When the owner's process dies, PostgreSQL rolls its
//!   transaction back as soon as the connection drops, and the next retry runs at once: it
//!   never waits for a lease to run out. (A host that vanishes without closing its sockets
//!   is noticed by TCP keepalive: set `tcp_keepalives_idle` on the server to bound it.)
//! - **The handler owns its answer.** A handler that catches a failed statement (a unique
//!   or check violation, a deadlock, a timeout, …) answers what it chooses: the client gets
//!   that answer, kept or released by the rule above, and none of the failed transaction's
//!   writes commit. For that, idem sets a savepoint after its claim (one statement per miss);
//!   when a failed statement left the transaction aborted, idem rolls back to it, undoing every
//!   write of the handler but keeping the claim and the key's lock (no duplicate runs
//!   meanwhile), and then stores the answer. A failure the handler contains in a savepoint of
//!   its own (`tx.begin()`) leaves the transaction usable: its other writes commit with the
//!   answer. A database error never becomes a 503 that every retry repeats: idem answers 503
//!   `store-unavailable` only when the database cannot keep the answer at all (the connection
//!   was lost; a SERIALIZABLE transaction chosen to fail, whose later statements fail too),
//!   with nothing kept, so the retry runs the handler again.
//! - **Fail-open does not apply**: with the database unreachable the handler could not write
//!   either; the answer is 503.
//! - **Isolation**: the transaction is a plain `BEGIN` at the database's default isolation
//!   (READ COMMITTED unless configured otherwise). Stricter defaults work, but the claim then
//!   meets serialization failures under contention, answered 503 and retried by the client.
//!   The claim is the transaction's first query, so `SET TRANSACTION ISOLATION LEVEL` in the
//!   handler fails (SQLSTATE 25001) unless it names the level already in effect: set a
//!   stricter level as the default of the store's connections (`default_transaction_isolation`).
//!
//! # Misuse
//!
//! The store comes from the router's state (`PgStore: FromRef<S>`), so a route whose state
//! has none does not compile (a handler without a `State<…>` parameter names the state with
//! `state = S` in the attribute, so that the check sees it). What only a request can show is answered 500
//! `transaction-unavailable`, nothing committed: a handler without `#[idempotent]`, two `Tx`
//! parameters, a `Tx` still held somewhere (a spawned task) when the handler returned, used or
//! not (a task that uses it afterwards panics), or a router whose
//! [`Idempotency`] layer configures a store other than the state's
//! `PgStore` (the records of one application live in one store; a
//! [`LocalTier`](crate::store::LocalTier) in front of that `PgStore` is the same store). Every
//! problem idem answers on these paths, with a key or without, goes through the layer's
//! [`shape_problems`](Idempotency::shape_problems) hook.

mod link;
mod run;

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, OnceLock};

use axum::extract::{FromRef, FromRequestParts};
use axum::response::Response;
use http::request::Parts;
use sqlx::postgres::{PgConnection, Postgres};

use self::link::Link;
use crate::mode::Plug;
use crate::problem::Problem;
use crate::store::PgStore;
use crate::Idempotency;

type Transaction = sqlx::Transaction<'static, Postgres>;

/// The handler's PostgreSQL transaction, opened by idem under the request's claim and
/// committed by idem together with the stored response (see the [module docs](self)).
///
/// Run queries on `&mut *tx` (it dereferences to [`PgConnection`], as a sqlx transaction
/// does; `tx.begin()` there opens a savepoint). Never commit it yourself: there is no way to,
/// and that is the point.
pub struct Tx {
    link: Arc<Link>,
    /// Taken from the link on first use; given back when dropped.
    held: OnceLock<Transaction>,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("in_use", &self.held.get().is_some()).finish()
    }
}

impl Tx {
    fn transaction(&self) -> &Transaction {
        self.held.get_or_init(|| self.link.lend())
    }
}

impl Deref for Tx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.transaction()
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.transaction();
        self.held.get_mut().expect("taken just above")
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        self.link.let_go(self.held.take());
    }
}

impl<S> FromRequestParts<S> for Tx
where
    S: Send + Sync,
    PgStore: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let layer = parts.extensions.get::<Idempotency>();
        let Some(plug) = parts.extensions.get::<Arc<Plug>>().cloned() else {
            let detail = "`Tx` is a parameter of `#[idempotent]` handlers only, and this handler has no such attribute";
            tracing::error!(target: "idem", path = parts.uri.path(), "{detail}");
            let problem = Problem::transaction_unavailable(detail);
            return Err(layer.map_or_else(|| problem.to_response(), |layer| layer.hooks.respond(&problem)));
        };
        // One link per request, plugged in by the first `Tx` parameter; a second one registers
        // in it too, and the request is refused.
        let (link, first) = match parts.extensions.get::<Arc<Link>>() {
            Some(link) => (link.clone(), false),
            None => (Arc::new(Link::default()), true),
        };
        link.register(PgStore::from_ref(state), layer.map(|layer| &layer.hooks));
        if first {
            parts.extensions.insert(link.clone());
            let plugged = plug.plug(link.clone());
            debug_assert!(plugged, "the transactional mode is the only one, and plugs in once");
        }
        Ok(Self { link, held: OnceLock::new() })
    }
}

/// A transaction is no input of the request: it adds nothing to the fingerprint.
impl crate::fingerprint::FingerprintSource for Tx {
    fn write(_: &crate::fingerprint::RequestInput<'_>, _: &mut crate::fingerprint::FingerprintWriter) {}
}
