//! The owner of a claim in the store: while it exists its lease is renewed; it stores the
//! handler's response (later, when the store is unreachable), or releases the key.

use std::time::Duration;

use axum::response::Response;
use http::StatusCode;

use crate::call::Call;
use crate::completion::within;
use crate::fingerprint::Fingerprint;
use crate::lease::{self, HeldLease};
use crate::observe::HeldClaim;
use crate::outcome::{Answer, Outcome};
use crate::record::{Record, StoredBody};
use crate::store::{ClaimToken, StoreError};
use crate::wake;

/// A request that holds the claim of its key: it runs the handler, then either stores the
/// response or releases the key. Its lease is renewed for as long as it exists.
pub(crate) struct Owner {
    pub(crate) call: Call,
    token: ClaimToken,
    fingerprint: Fingerprint,
    _lease: HeldLease,
    _claim: HeldClaim,
    /// Dropped last (fields drop in order): the store has the outcome when waiting requests of
    /// this process are woken.
    _owning: wake::Owning,
}

impl Owner {
    /// `call`, whose claim `token` was just acquired: its lease is renewed from now on, and the
    /// claim counted as held by this process.
    pub(crate) fn hold(call: Call, token: ClaimToken, fingerprint: Fingerprint) -> Self {
        let lease = lease::hold(&call.idempotency.store, call.key, token, call.config.lease);
        let claim = call.held_claim();
        let owning = wake::Owning::new(wake::Slot::of(&call.idempotency.store, call.key));
        Self { call, token, fingerprint, _lease: lease, _claim: claim, _owning: owning }
    }

    /// The handler, or the body it returned, panicked: the key is released so that a retry
    /// runs the handler again.
    pub(crate) async fn panicked(self) -> Response {
        self.release_quietly().await.ended(Answer::Panicked)
    }

    /// The response is not stored: the key is released so that a retry runs the handler again.
    pub(crate) async fn release(self, status: StatusCode) {
        self.release_quietly().await.report(Outcome::ExecutedNotStored(status));
    }

    async fn release_quietly(self) -> Call {
        let Owner { call, token, _lease: lease, _owning: owning, .. } = self;
        // Renewal stops first, so that none crosses the release; a release that fails or never
        // answers leaves the claim to lapse after one lease.
        drop(lease);
        let release = call.idempotency.store.release(&call.key, token);
        if let Err(error) = within(call.config.lease, release).await {
            tracing::error!(target: "idem", route = call.route.label(), %error, "could not release a claim; retries get 409 until its lease expires");
        }
        // The key is free: the requests of this process waiting for it look again.
        drop(owning);
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
