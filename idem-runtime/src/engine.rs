//! The state machine behind every covered request: claim the key, then replay, refuse, or run
//! the handler as the claim's owner and store (or release) what it answered. Each path ends in
//! one [`Outcome`], reported in one place.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::response::Response;
use futures_util::FutureExt as _;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use tracing::Instrument as _;

use crate::capture;
use crate::config::{HandlerConfig, HandlerSpec};
use crate::extract::{Covered, IdempotencyContext, Route};
use crate::fingerprint::Fingerprint;
use crate::layer::Idempotency;
use crate::lease::{self, HeldLease};
use crate::lifetime::Late;
use crate::observe::{self, HeldClaim, Stopwatch};
use crate::outcome::{self, Answer, Outcome, Seen};
use crate::record::{replayable_headers_only, Record, StoredBody};
use crate::store::{Claim, ClaimToken, RecordKey, StoreError};

mod completion;

pub(crate) use completion::RunToCompletion;
use completion::{within, ClaimInFlight};

/// The request id header that tower-http's `SetRequestId` and most proxies use.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every step of a covered request needs to know about it.
pub(crate) struct Call {
    pub(crate) idempotency: Idempotency,
    pub(crate) key: RecordKey,
    method: Method,
    pub(crate) route: Route,
    pub(crate) config: HandlerConfig,
    started: Instant,
    /// The request's `X-Request-Id`, kept in the record so that a replay names the request that
    /// did the work.
    request_id: Option<HeaderValue>,
    span: tracing::Span,
    /// The time idem itself spends on the request; paused while the handler runs.
    pub(crate) watch: Stopwatch,
    /// Set when the request's logical call began longer ago than the handler keeps responses:
    /// a record is replayed as usual, but without one the request is refused, never run.
    pub(crate) late: Option<Late>,
}

impl<C: HandlerSpec> IdempotencyContext<C> {
    /// Runs `handler` under the idempotency contract, given the digests of the selected
    /// parameters (in parameter order).
    pub async fn run<F>(self, params: &[Option<[u8; 32]>], handler: F) -> Response
    where
        F: Future<Output = Response> + Send + 'static,
    {
        #[cfg(feature = "postgres")]
        if let Some(store) = self.transaction.store() {
            let store = store.clone();
            return match self.covered {
                None => crate::postgres::run_uncovered(self.transaction, store, C::CONFIG, handler).await,
                Some(covered) => {
                    let Covered { call, fingerprint } = *covered;
                    let fingerprint = fingerprint.finish(params);
                    crate::postgres::run_covered(call, fingerprint, self.transaction, store, handler).await
                }
            };
        }
        match self.covered {
            None => handler.await,
            Some(covered) => {
                let Covered { call, fingerprint } = *covered;
                let span = call.span.clone();
                call.run(fingerprint.finish(params), handler).instrument(span).await
            }
        }
    }
}

impl Call {
    pub(crate) fn new(
        idempotency: Idempotency,
        key: RecordKey,
        method: Method,
        route: Route,
        config: HandlerConfig,
        started: Instant,
        request_id: Option<HeaderValue>,
    ) -> Self {
        let span = observe::span(&method, route.label());
        let watch = Stopwatch::new(started);
        Self { idempotency, key, method, route, config, started, request_id, span, watch, late: None }
    }

    /// What the report of its outcome may say about this request.
    fn seen(&self) -> Seen<'_> {
        Seen {
            method: &self.method,
            route: self.route.label(),
            request_id: self.request_id.as_ref(),
            started: self.started,
            span: &self.span,
            hooks: &self.idempotency.hooks,
            watch: &self.watch,
        }
    }

    /// The record of the handler's response, dated `now` on the store's clock: status, the
    /// headers a replay repeats (and the request's id), and what was kept of the body.
    pub(crate) fn record(
        &self,
        now: SystemTime,
        fingerprint: Fingerprint,
        status: StatusCode,
        headers: &http::HeaderMap,
        body: StoredBody,
    ) -> Record {
        // An absurd ttl saturates instead of overflowing the clock.
        let expires_at = now.checked_add(self.config.ttl).unwrap_or(now + Duration::from_secs(1 << 40));
        let mut kept = replayable_headers_only(headers, self.config.replay_headers);
        if let Some(id) = &self.request_id {
            kept.insert(X_REQUEST_ID, id.clone());
        }
        Record { fingerprint, status, headers: kept, body, expires_at }
    }

    /// The claim of this request's key, counted as held by this process until it is dropped.
    pub(crate) fn held_claim(&self) -> HeldClaim {
        HeldClaim::new(&self.method, self.route.label())
    }

    /// Reports an outcome idem answers itself, and gives its response.
    pub(crate) fn ended(&self, answer: Answer) -> Response {
        outcome::answer(&self.seen(), answer)
    }

    /// Reports an outcome whose response is the handler's or a replay's.
    pub(crate) fn report(&self, outcome: Outcome) {
        outcome::report(&self.seen(), outcome);
    }

    async fn run<F>(mut self, fingerprint: Fingerprint, handler: F) -> Response
    where
        F: Future<Output = Response> + Send + 'static,
    {
        self.watch.resume();
        let lease = self.config.lease;
        let give_up = Instant::now() + lease;
        let mut pause = Duration::from_millis(5);
        let token = loop {
            let attempt = ClaimInFlight::new(&self.idempotency.store, self.key, fingerprint, lease);
            match attempt.await {
                Ok(Claim::Acquired(token)) => break token,
                Ok(Claim::Completed(record)) => {
                    self.report(Outcome::Replayed(record.status));
                    return Arc::try_unwrap(record).map_or_else(|shared| shared.replay(), Record::into_replay);
                }
                Ok(Claim::Mismatch) => return self.ended(Answer::Mismatch),
                Ok(Claim::InFlight { .. }) if self.config.wait && Instant::now() < give_up => {
                    tokio::time::sleep(pause.min(give_up.saturating_duration_since(Instant::now()))).await;
                    pause = (pause * 2).min(Duration::from_millis(250));
                }
                Ok(Claim::InFlight { .. }) => return self.ended(Answer::Conflict),
                // Never run without idempotency here, fail-open or not: the store is reachable but
                // may have lost claims of handlers still running.
                Err(StoreError::Recovering { retry_after }) => {
                    tracing::warn!(target: "idem", route = self.route.label(), ?retry_after, "the store lost in-flight claims; answering 503 until every lease that may be running has run out");
                    return self.ended(Answer::StoreRecovering { retry_after });
                }
                // A late request is never run without idempotency: its record may be there.
                Err(error) if self.idempotency.fail_open && self.late.is_none() => {
                    tracing::warn!(target: "idem", route = self.route.label(), %error, "store unavailable; running the handler without idempotency (fail-open)");
                    self.watch.pause();
                    let response = handler.await;
                    self.watch.resume();
                    self.report(Outcome::ExecutedFailOpen(response.status()));
                    return response;
                }
                Err(error) => {
                    tracing::error!(target: "idem", route = self.route.label(), %error, "store unavailable; answering 503");
                    return self.ended(Answer::StoreUnavailable);
                }
            }
        };
        if let Some(late) = self.late {
            return self.refuse_late(token, late).await;
        }
        let held = lease::hold(&self.idempotency.store, self.key, token, lease);
        let claim = self.held_claim();
        let owner = Owner { call: self, token, fingerprint, _lease: held, _claim: claim };
        // A client that disconnects drops this future; the handler then finishes in a task of
        // its own and its response is stored for the retry.
        RunToCompletion::new(owner.execute(handler)).await
    }

    /// A late request found no record (its claim was acquired): the claim is released at once,
    /// and the request refused without running the handler.
    async fn refuse_late(self, token: ClaimToken, late: Late) -> Response {
        // Runs to completion: a request dropped here still releases the claim it took.
        RunToCompletion::new(async move {
            let release = self.idempotency.store.release(&self.key, token);
            if let Err(error) = within(self.config.lease, release).await {
                tracing::warn!(target: "idem", route = self.route.label(), %error, "could not release the claim of a request refused as past its lifetime; retries get 409 until its lease expires");
            }
            self.ended(Answer::KeyExpired(late))
        })
        .await
    }
}

/// A request that holds the claim of its key: it runs the handler, then either stores the
/// response or releases the key. Its lease is renewed for as long as it exists.
pub(crate) struct Owner {
    pub(crate) call: Call,
    token: ClaimToken,
    fingerprint: Fingerprint,
    _lease: HeldLease,
    _claim: HeldClaim,
}

impl Owner {
    async fn execute<F>(mut self, handler: F) -> Response
    where
        F: Future<Output = Response> + Send + 'static,
    {
        self.call.watch.pause();
        let ran = AssertUnwindSafe(handler).catch_unwind().await;
        self.call.watch.resume();
        let response = match ran {
            Ok(response) => response,
            Err(_panic) => return self.panicked().await,
        };
        let status = response.status();
        if !self.call.config.stores(status) {
            self.release(status).await;
            return response;
        }
        capture::respond(self, response).await
    }

    /// The handler, or the body it returned, panicked: the key is released so that a retry
    /// runs the handler again.
    pub(crate) async fn panicked(self) -> Response {
        self.release_quietly().await.ended(Answer::Panicked)
    }

    /// The response is not stored: the key is released so that a retry runs the handler again.
    async fn release(self, status: StatusCode) {
        self.release_quietly().await.report(Outcome::ExecutedNotStored(status));
    }

    async fn release_quietly(self) -> Call {
        let Owner { call, token, _lease: lease, .. } = self;
        // Renewal stops first, so that none crosses the release; a release that fails or never
        // answers leaves the claim to lapse after one lease.
        drop(lease);
        let release = call.idempotency.store.release(&call.key, token);
        match within(call.config.lease, release).await {
            Ok(()) => {}
            Err(error) => {
                tracing::error!(target: "idem", route = call.route.label(), %error, "could not release a claim; retries get 409 until its lease expires");
            }
        }
        call
    }

    /// Stores the response: status, the headers a replay repeats, and what was kept of the body.
    pub(crate) async fn complete(mut self, status: StatusCode, headers: &http::HeaderMap, body: StoredBody) {
        // A streamed body paused the watch while it was produced.
        self.call.watch.resume();
        let now = self.call.idempotency.store.now();
        // A body is shared, not copied; the record is made again in the rare case it must be kept
        // for a later write.
        let record = self.call.record(now, self.fingerprint, status, headers, body.clone());
        let store = &self.call.idempotency.store;
        match within(self.call.config.lease, store.complete(&self.call.key, self.token, record)).await {
            Ok(()) => self.call.report(Outcome::Executed(status)),
            Err(StoreError::LeaseLost) => {
                tracing::error!(target: "idem", route = self.call.route.label(), "the handler ran but its lease was taken over; its response is not stored");
                self.call.report(Outcome::ExecutedNotStored(status));
            }
            Err(error) => {
                tracing::warn!(target: "idem", route = self.call.route.label(), %error, "the handler ran but the store is unreachable; storing its response once the store is back");
                self.call.report(Outcome::ExecutedStorePending(status));
                let record = self.call.record(now, self.fingerprint, status, headers, body);
                tokio::spawn(self.complete_later(record));
            }
        }
    }

    /// Stores a response whose first `complete` found the store unreachable: retries with
    /// backoff until it is stored, the claim was taken over, or the record would already have
    /// expired. The lease is renewed all the while, so an outage never lets a retry run the
    /// handler a second time while this owner still holds its response.
    async fn complete_later(self, record: Record) {
        let route = self.call.route.label();
        let mut pause = Duration::from_millis(100);
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
            if record.is_expired_at(self.call.idempotency.store.now()) {
                tracing::error!(target: "idem", route, "the store stayed unreachable for the record's whole ttl; it was never stored");
                return;
            }
            let complete = self.call.idempotency.store.complete(&self.call.key, self.token, record.clone());
            match within(self.call.config.lease, complete).await {
                Ok(()) => {
                    tracing::info!(target: "idem", route, "stored a response after the store came back");
                    return;
                }
                Err(StoreError::LeaseLost) => {
                    tracing::error!(target: "idem", route, "the store came back with the claim taken over; the response is not stored");
                    return;
                }
                Err(_) => {}
            }
        }
    }
}
