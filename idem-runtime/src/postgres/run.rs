//! A request whose handler takes [`Tx`](super::Tx): the transaction is opened, the key claimed
//! in it (with a key), the handler run, and its writes committed with the record or rolled
//! back, by the status of its answer.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use http_body_util::BodyExt as _;

use super::link::{Handed, Link};
use super::Transaction;
use crate::call::Call;
use crate::completion::RunToCompletion;
use crate::config::HandlerConfig;
use crate::fingerprint::Fingerprint;
use crate::layer::Idempotency;
use crate::mode::{self, Claimed, Handler, Mode};
use crate::observe::{self, HeldClaim, Operation};
use crate::outcome::{Answer, Outcome};
use crate::problem::Problem;
use crate::record::{body_with_trailers, replayable_trailers, trailers_len, Record, StoredBody};
use crate::store::{aborted_earlier, Claim, ClaimToken, LocalTier, PgStore, Store as _, StoreError};

const STILL_IN_USE: &str =
    "the handler returned while its `Tx` was still held elsewhere (moved into a task?); its transaction is rolled back";

/// A request whose handler takes `Tx` runs in the transaction the `Tx` parameter plugged in.
impl Mode for Link {
    fn run_covered(
        self: Arc<Self>,
        call: Call,
        fingerprint: Fingerprint,
        handler: Handler,
    ) -> BoxFuture<'static, Response> {
        let store = self.store().expect("a `Tx` parameter registers its store before it plugs the link in").clone();
        Box::pin(run_covered(call, fingerprint, self, store, handler))
    }

    fn run_uncovered(self: Arc<Self>, config: HandlerConfig, handler: Handler) -> BoxFuture<'static, Response> {
        let store = self.store().expect("a `Tx` parameter registers its store before it plugs the link in").clone();
        Box::pin(run_uncovered(self, store, config, handler))
    }

    /// Without a layer, the record goes to the state's `PgStore`: so do the steps.
    fn records_without_a_layer(&self, layer: &Idempotency) -> Option<Arc<dyn crate::store::DynStore>> {
        let store = self.store().filter(|_| layer.is_default())?;
        Some(Arc::new(store.clone()))
    }
}

/// A request without a key: the handler runs in a transaction committed or rolled back by the
/// status of its response, as a covered request's would be. A commit of a transaction that a
/// failed statement aborted commits nothing, and the handler's answer is sent as it is.
async fn run_uncovered<F>(link: Arc<Link>, store: PgStore, config: HandlerConfig, handler: F) -> Response
where
    F: Future<Output = Response> + Send + 'static,
{
    if let Some(detail) = link.refusal() {
        return refused(&link, detail);
    }
    match store.pool().begin().await {
        Ok(transaction) => link.open(transaction),
        Err(error) => {
            tracing::error!(target: "idem", %error, "cannot open the handler's transaction; answering 503");
            return link.answer(&Problem::store_unavailable());
        }
    }
    let response = match AssertUnwindSafe(handler).catch_unwind().await {
        Ok(response) => response,
        Err(_panic) => {
            roll_back(link.close().into_transaction()).await;
            return link.answer(&Problem::handler_panicked());
        }
    };
    let handed = link.close();
    if !config.stores(response.status()) {
        roll_back(handed.into_transaction()).await;
        return response;
    }
    let transaction = match handed {
        Handed::Back(transaction) => transaction,
        Handed::StillHeld(transaction) => {
            roll_back(transaction).await;
            return refused(&link, STILL_IN_USE);
        }
    };
    match transaction.commit().await {
        Ok(()) => response,
        Err(error) => {
            tracing::error!(target: "idem", %error, "the handler's transaction did not commit; answering 503");
            link.answer(&Problem::store_unavailable())
        }
    }
}

/// A request without a key refused for a mistake in the application (`detail`).
fn refused(link: &Link, detail: &'static str) -> Response {
    tracing::error!(target: "idem", "{detail}; answering 500 `transaction-unavailable`");
    link.answer(&Problem::transaction_unavailable(detail))
}

async fn roll_back(transaction: Option<Transaction>) {
    if let Some(transaction) = transaction {
        if let Err(error) = transaction.rollback().await {
            tracing::warn!(target: "idem", %error, "rolling back the handler's transaction failed; the server rolls it back when the connection closes");
        }
    }
}

/// A covered request whose handler takes [`Tx`](super::Tx): claim in a new transaction, then
/// replay, refuse, or run the handler in it and commit its writes with the record.
async fn run_covered<F>(
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
    if let Some(detail) = link.refusal() {
        return misused(&call, detail);
    }
    if !call.idempotency.is_default() && !call.idempotency.uses(&store) {
        return misused(
            &call,
            "the router's `Idempotency` layer configures a store other than the `PgStore` in its state, where `Tx` keeps its records; give both the same store",
        );
    }
    // A replay a warm local tier in front of the same store already holds costs the database
    // nothing: no transaction is opened for it.
    let tier = call.idempotency.store.as_any().downcast_ref::<LocalTier<PgStore>>().cloned();
    match tier.as_ref().and_then(|tier| tier.cached(&call.key, &fingerprint)) {
        Some(Claim::Completed(record)) => return call.replay(record),
        Some(Claim::Mismatch) => return call.ended(Answer::Mismatch),
        _ => {}
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
                if let Some(tier) = &tier {
                    tier.remember(&call.key, &record);
                }
                return call.replay(record);
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
                    Err(error) => return failed(&call, transaction, &error).await,
                }
            }
            Ok(None) => return call.ended(Answer::Conflict),
            Err(error) => return failed(&call, transaction, &error).await,
        }
    };
    // A late request found no record: nothing of it is kept, and it is refused, never run.
    if let Some(late) = call.late {
        roll_back(Some(transaction)).await;
        return call.ended(Answer::KeyExpired(late));
    }
    // The handler's writes begin here: whatever it leaves behind can be undone without
    // giving up the claim.
    if let Err(error) = store.mark_handler_start(&mut transaction).await {
        return failed(&call, transaction, &error).await;
    }
    link.open(transaction);
    let claim = call.held_claim();
    let owner = Owner { call, token, fingerprint, link, store, tier, _claim: claim };
    // A client that disconnects drops this future; the handler then finishes in a task of its
    // own and commits for the retry.
    RunToCompletion::new(mode::execute(owner, handler)).await
}

/// A covered request refused for a mistake in the application (`detail`).
fn misused(call: &Call, detail: &'static str) -> Response {
    tracing::error!(target: "idem", route = call.route.label(), "{detail}; answering 500 `transaction-unavailable`");
    call.ended(Answer::TransactionUnavailable(detail))
}

fn unavailable(call: &Call, error: &dyn std::fmt::Display) -> Response {
    tracing::error!(target: "idem", route = call.route.label(), %error, "the handler's database is unavailable; answering 503");
    call.ended(Answer::StoreUnavailable)
}

/// [`unavailable`], once the transaction, which may hold the key's lock, is rolled back: a
/// transaction only dropped is rolled back when its connection is next used, after the answer,
/// and a retry in between would find the key still taken (409).
async fn failed(call: &Call, transaction: Transaction, error: &(dyn std::fmt::Display + Sync)) -> Response {
    roll_back(Some(transaction)).await;
    unavailable(call, error)
}

/// A request that claimed its key in the transaction it lends the handler.
struct Owner {
    call: Call,
    token: ClaimToken,
    fingerprint: Fingerprint,
    link: Arc<Link>,
    store: PgStore,
    /// The layer's local tier in front of `store`, if any: it keeps a copy of the committed record.
    tier: Option<LocalTier<PgStore>>,
    _claim: HeldClaim,
}

/// The transaction's owner of a claim runs the handler once: a kept answer commits with the
/// handler's writes, any other rolls them back.
impl Claimed for Owner {
    fn call(&mut self) -> &mut Call {
        &mut self.call
    }

    async fn panicked(self) -> Response {
        Owner::panicked(self).await
    }

    async fn give_up(self, response: Response) -> Response {
        roll_back(self.link.close().into_transaction()).await;
        self.call.report(Outcome::ExecutedNotStored(response.status()));
        response
    }

    async fn keep(mut self, response: Response) -> Response {
        let status = response.status();
        // The whole body (and its trailers) before the commit: the client must not see a
        // response whose writes may still roll back.
        let (parts, body) = response.into_parts();
        self.call.watch.pause();
        let (kept, body) = match AssertUnwindSafe(body.collect()).catch_unwind().await {
            Err(_panic) => return self.panicked().await,
            Ok(Ok(collected)) => {
                // The client gets the trailers the handler sent; the record, those a replay
                // repeats, counted toward the limit with the body.
                let trailers = collected.trailers().cloned();
                let bytes = collected.to_bytes();
                let kept_trailers = trailers.as_ref().map(replayable_trailers).unwrap_or_default();
                let kept = if bytes.len() + trailers_len(&kept_trailers) <= self.store.max_body_bytes() {
                    StoredBody::kept(bytes.clone(), kept_trailers)
                } else {
                    StoredBody::TooLarge
                };
                (kept, body_with_trailers(bytes, trailers))
            }
            // Stored as status and headers with a problem body, as on every store; the client
            // sees the body fail, as the handler made it.
            Ok(Err(_)) => (StoredBody::Failed, failed_body()),
        };
        self.call.watch.resume();
        let mut transaction = match self.link.close() {
            Handed::Back(transaction) => transaction,
            Handed::StillHeld(transaction) => {
                roll_back(transaction).await;
                return misused(&self.call, STILL_IN_USE);
            }
        };
        let now = self.store.now();
        let record = self.call.record(now, self.fingerprint, status, &parts.headers, kept);
        let committed = observe::time_operation(Operation::Complete, || async {
            if let Err(error) = self.complete(&mut transaction, &record).await {
                // Rolled back before the 503, as in `failed`.
                roll_back(Some(transaction)).await;
                return Err(error);
            }
            transaction.commit().await.map_err(|error| StoreError::Unavailable(Box::new(error)))
        });
        match committed.await {
            Ok(()) => {
                if let Some(tier) = &self.tier {
                    tier.remember(&self.call.key, &record);
                }
                self.call.report(Outcome::Executed(status));
                Response::from_parts(parts, body)
            }
            Err(error) => unavailable(&self.call, &error),
        }
    }
}

impl Owner {
    /// Writes the record in the transaction. When a statement of the handler failed (and the
    /// handler answered anyway), the transaction refuses it: every write of the handler is
    /// undone, back to the savepoint taken after the claim, and the record written then.
    async fn complete(&self, transaction: &mut Transaction, record: &Record) -> Result<(), StoreError> {
        let (key, token) = (&self.call.key, self.token);
        match self.store.complete_in(transaction, key, token, record).await {
            Err(error) if aborted_earlier(&error) => {
                let status = record.status.as_u16();
                if record.status.is_success() {
                    tracing::warn!(target: "idem", route = self.call.route.label(), status, "the handler answered a success although one of its statements failed: none of its writes commit, and its answer is stored");
                } else {
                    tracing::debug!(target: "idem", route = self.call.route.label(), status, "one of the handler's statements failed: its writes are rolled back and its answer is stored");
                }
                self.store.undo_handler(transaction).await?;
                self.store.complete_in(transaction, key, token, record).await
            }
            done => done,
        }
    }

    /// The handler or its body panicked: its writes roll back, and a retry runs it again.
    async fn panicked(self) -> Response {
        roll_back(self.link.close().into_transaction()).await;
        self.call.ended(Answer::Panicked)
    }
}

/// A body that fails at once, as the handler's did.
fn failed_body() -> Body {
    Body::from_stream(futures_util::stream::once(async {
        Err::<Bytes, _>(std::io::Error::other("the response body failed while it was produced"))
    }))
}
