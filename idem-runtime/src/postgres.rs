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
//! - **Fail-open does not apply**: with the database unreachable the handler could not write
//!   either; the answer is 503.
//! - **Isolation**: the transaction is a plain `BEGIN` at the database's default isolation
//!   (READ COMMITTED unless configured otherwise). Stricter defaults work, but the claim then
//!   meets serialization failures under contention, answered 503 and retried by the client.
//!
//! # Misuse
//!
//! The store comes from the router's state (`PgStore: FromRef<S>`), so a route whose state
//! has none does not compile (a handler without a `State<…>` parameter names the state with
//! `state = S` in the attribute, so that the check sees it). What only a request can show is answered 500
//! `transaction-unavailable`, nothing committed: a handler without `#[idempotent]`, two `Tx`
//! parameters, a `Tx` still held somewhere (a spawned task) when the handler returned, or a
//! router whose [`Idempotency`](crate::Idempotency) layer configures a store other than the
//! state's `PgStore` (the records of one application live in one store; a
//! [`LocalTier`](crate::store::LocalTier) in front of that `PgStore` is the same store).

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRef, FromRequestParts};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use futures_util::FutureExt as _;
use http::request::Parts;
use http_body_util::BodyExt as _;
use sqlx::postgres::{PgConnection, Postgres};

use crate::config::HandlerConfig;
use crate::engine::{Call, RunToCompletion};
use crate::fingerprint::Fingerprint;
use crate::observe::{self, HeldClaim, Operation};
use crate::outcome::{Answer, Outcome};
use crate::problem::Problem;
use crate::record::{Record, StoredBody};
use crate::store::{Claim, ClaimToken, PgStore, Store as _, StoreError};

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
        if let Some(transaction) = self.held.take() {
            self.link.give_back(transaction);
        }
    }
}

impl<S> FromRequestParts<S> for Tx
where
    S: Send + Sync,
    PgStore: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let refuse = |detail: &'static str| {
            tracing::error!(target: "idem", path = parts.uri.path(), "{detail}");
            Err(Problem::transaction_unavailable(detail).into_response())
        };
        let Some(link) = parts.extensions.get::<Arc<Link>>().cloned() else {
            return refuse(
                "`Tx` is a parameter of `#[idempotent]` handlers only, and this handler has no such attribute",
            );
        };
        if link.store.set(PgStore::from_ref(state)).is_err() {
            return refuse("this handler takes `Tx` twice; one transaction per request");
        }
        Ok(Self { link, held: OnceLock::new() })
    }
}

/// A transaction is no input of the request: it adds nothing to the fingerprint.
impl crate::fingerprint::FingerprintSource for Tx {
    fn write(_: &crate::fingerprint::RequestInput<'_>, _: &mut crate::fingerprint::FingerprintWriter) {}
}

/// Where a request's [`Tx`] and the engine meet: every request of an annotated handler has
/// one; a `Tx` parameter registers its store in it, and the engine lends it the transaction.
#[derive(Default)]
pub(crate) struct Link {
    store: OnceLock<PgStore>,
    slot: Mutex<Slot>,
}

#[derive(Default)]
enum Slot {
    /// The engine has not opened the transaction yet.
    #[default]
    Unopened,
    /// Open, and not held by the handler.
    Ready(Transaction),
    /// Held by the handler's `Tx`.
    Lent,
    /// The engine is done with the request: a transaction given back now is rolled back.
    Closed,
}

impl Link {
    /// A new link, in the request's extensions for a `Tx` parameter to find.
    pub(crate) fn offer(parts: &mut Parts) -> Arc<Self> {
        let link = Arc::new(Self::default());
        parts.extensions.insert(link.clone());
        link
    }

    /// The store of the handler's `Tx` parameter; `None` when it has none.
    pub(crate) fn store(&self) -> Option<&PgStore> {
        self.store.get()
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self, transaction: Transaction) {
        *self.slot() = Slot::Ready(transaction);
    }

    fn lend(&self) -> Transaction {
        match std::mem::replace(&mut *self.slot(), Slot::Lent) {
            Slot::Ready(transaction) => transaction,
            // Only the handler's body uses its `Tx`, and the engine opens the transaction
            // before it polls the handler: nothing else can get here.
            _ => panic!("idem: a `Tx` was used outside the run of its handler"),
        }
    }

    fn give_back(&self, transaction: Transaction) {
        let mut slot = self.slot();
        if matches!(*slot, Slot::Lent) {
            *slot = Slot::Ready(transaction);
        }
        // Closed: dropped here, which rolls it back.
    }

    /// Ends the handler's use of the transaction: `None` when the handler's `Tx` still holds
    /// it (moved somewhere that outlived the handler); it is rolled back whenever that lets go.
    fn close(&self) -> Option<Transaction> {
        match std::mem::replace(&mut *self.slot(), Slot::Closed) {
            Slot::Ready(transaction) => Some(transaction),
            Slot::Unopened | Slot::Lent | Slot::Closed => None,
        }
    }
}

const STILL_IN_USE: &str =
    "the handler returned while its `Tx` was still held elsewhere (moved into a task?); it is rolled back when dropped";

/// A request without a key: the handler runs in a transaction committed or rolled back by the
/// status of its response, as a covered request's would be.
pub(crate) async fn run_uncovered<F>(link: Arc<Link>, store: PgStore, config: HandlerConfig, handler: F) -> Response
where
    F: Future<Output = Response> + Send + 'static,
{
    match store.pool().begin().await {
        Ok(transaction) => link.open(transaction),
        Err(error) => {
            tracing::error!(target: "idem", %error, "cannot open the handler's transaction; answering 503");
            return Problem::store_unavailable().into_response();
        }
    }
    let response = match AssertUnwindSafe(handler).catch_unwind().await {
        Ok(response) => response,
        Err(_panic) => {
            roll_back(link.close()).await;
            return Problem::handler_panicked().into_response();
        }
    };
    let transaction = link.close();
    if !config.stores(response.status()) {
        roll_back(transaction).await;
        return response;
    }
    let Some(transaction) = transaction else {
        return Problem::transaction_unavailable(STILL_IN_USE).into_response();
    };
    match transaction.commit().await {
        Ok(()) => response,
        Err(error) => {
            tracing::error!(target: "idem", %error, "the handler's transaction did not commit; answering 503");
            Problem::store_unavailable().into_response()
        }
    }
}

async fn roll_back(transaction: Option<Transaction>) {
    if let Some(transaction) = transaction {
        if let Err(error) = transaction.rollback().await {
            tracing::warn!(target: "idem", %error, "rolling back the handler's transaction failed; the server rolls it back when the connection closes");
        }
    }
}

/// A covered request whose handler takes [`Tx`]: claim in a new transaction, then replay,
/// refuse, or run the handler in it and commit its writes with the record.
pub(crate) async fn run_covered<F>(
    mut call: Call,
    fingerprint: Fingerprint,
    link: Arc<Link>,
    store: PgStore,
    handler: F,
) -> Response
where
    F: Future<Output = Response> + Send + 'static,
{
    call.watch.resume();
    if !call.idempotency.is_default() && !call.idempotency.uses(&store) {
        return call.ended(Answer::TransactionUnavailable(
            "the router's `Idempotency` layer configures a store other than the `PgStore` in its state, where `Tx` keeps its records; give both the same store",
        ));
    }
    let mut transaction = match store.pool().begin().await {
        Ok(transaction) => transaction,
        Err(error) => return unavailable(&call, &error),
    };
    let lease = call.config.lease;
    let give_up = Instant::now() + lease;
    let mut pause = Duration::from_millis(5);
    let token = loop {
        let claim = observe::time_operation(Operation::Claim, || {
            store.claim_in(&mut transaction, &call.key, &fingerprint, lease)
        });
        match claim.await {
            Ok(Some(Claim::Acquired(token))) => break token,
            Ok(Some(Claim::Completed(record))) => {
                call.report(Outcome::Replayed(record.status));
                return Arc::try_unwrap(record).map_or_else(|shared| shared.replay(), Record::into_replay);
            }
            Ok(Some(Claim::Mismatch)) => return call.ended(Answer::Mismatch),
            // Claimed outside a transaction (by a handler without `Tx`): wait as on any store.
            Ok(Some(Claim::InFlight { .. })) if call.config.wait && Instant::now() < give_up => {
                tokio::time::sleep(pause.min(give_up.saturating_duration_since(Instant::now()))).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
            Ok(Some(Claim::InFlight { .. })) => return call.ended(Answer::Conflict),
            // Another transaction holds the key: PostgreSQL wakes this one when it ends.
            Ok(None) if call.config.wait && Instant::now() < give_up => {
                let left = give_up.saturating_duration_since(Instant::now());
                match store.wait_for_key(&mut transaction, &call.key, left).await {
                    Ok(true) => {}
                    Ok(false) => return call.ended(Answer::Conflict),
                    Err(error) => return unavailable(&call, &error),
                }
            }
            Ok(None) => return call.ended(Answer::Conflict),
            Err(error) => return unavailable(&call, &error),
        }
    };
    link.open(transaction);
    let claim = call.held_claim();
    let owner = Owner { call, token, fingerprint, link, store, _claim: claim };
    // A client that disconnects drops this future; the handler then finishes in a task of its
    // own and commits for the retry.
    RunToCompletion::new(owner.execute(handler)).await
}

fn unavailable(call: &Call, error: &dyn std::fmt::Display) -> Response {
    tracing::error!(target: "idem", route = call.route.as_str(), %error, "the handler's database is unavailable; answering 503");
    call.ended(Answer::StoreUnavailable)
}

/// A request that claimed its key in the transaction it lends the handler.
struct Owner {
    call: Call,
    token: ClaimToken,
    fingerprint: Fingerprint,
    link: Arc<Link>,
    store: PgStore,
    _claim: HeldClaim,
}

impl Owner {
    async fn execute<F>(mut self, handler: F) -> Response
    where
        F: Future<Output = Response> + Send + 'static,
    {
        // The handler and the production of its body are its own time, not idem's.
        self.call.watch.pause();
        let response = match AssertUnwindSafe(handler).catch_unwind().await {
            Ok(response) => response,
            Err(_panic) => return self.panicked().await,
        };
        self.call.watch.resume();
        let status = response.status();
        if !self.call.config.stores(status) {
            roll_back(self.link.close()).await;
            self.call.report(Outcome::ExecutedNotStored(status));
            return response;
        }
        // The whole body before the commit: the client must not see a response whose writes
        // may still roll back.
        let (parts, body) = response.into_parts();
        self.call.watch.pause();
        let (kept, body) = match AssertUnwindSafe(body.collect()).catch_unwind().await {
            Err(_panic) => return self.panicked().await,
            Ok(Ok(collected)) => {
                let bytes = collected.to_bytes();
                let kept = if bytes.len() <= self.store.max_body_bytes() {
                    StoredBody::Kept(bytes.clone())
                } else {
                    StoredBody::TooLarge
                };
                (kept, Body::from(bytes))
            }
            // Stored as status and headers with a problem body, as on every store; the client
            // sees the body fail, as the handler made it.
            Ok(Err(_)) => (StoredBody::Failed, failed_body()),
        };
        self.call.watch.resume();
        let Some(mut transaction) = self.link.close() else {
            return self.call.ended(Answer::TransactionUnavailable(STILL_IN_USE));
        };
        let now = self.store.now();
        let record = self.call.record(now, self.fingerprint, status, &parts.headers, kept);
        let committed = observe::time_operation(Operation::Complete, || async {
            self.store.complete_in(&mut transaction, &self.call.key, self.token, record).await?;
            transaction.commit().await.map_err(|error| StoreError::Unavailable(Box::new(error)))
        });
        let committed = committed.await;
        match committed {
            Ok(()) => {
                self.call.report(Outcome::Executed(status));
                Response::from_parts(parts, body)
            }
            Err(error) => unavailable(&self.call, &error),
        }
    }

    /// The handler or its body panicked: its writes roll back, and a retry runs it again.
    async fn panicked(self) -> Response {
        roll_back(self.link.close()).await;
        self.call.ended(Answer::Panicked)
    }
}

/// A body that fails at once, as the handler's did.
fn failed_body() -> Body {
    Body::from_stream(futures_util::stream::once(async {
        Err::<Bytes, _>(std::io::Error::other("the response body failed while it was produced"))
    }))
}
