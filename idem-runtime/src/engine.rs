//! The state machine behind every covered request: claim the key, then replay, refuse, or run
//! the handler as the claim's owner and store (or release) what it answered. Each path ends in
//! one outcome, reported in one place. A mode a handler's parameter plugged in (the
//! transactional one) runs the request instead.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::response::Response;
use tracing::Instrument as _;

use crate::call::Call;
use crate::capture;
use crate::completion::{within, ClaimInFlight, RunToCompletion};
use crate::config::HandlerSpec;
use crate::extract::{Covered, IdempotencyContext};
use crate::fingerprint::Fingerprint;
use crate::lifetime::Late;
use crate::mode::{self, Claimed};
use crate::outcome::{Answer, Outcome};
use crate::owner::Owner;
use crate::steps::Kept;
use crate::store::{Claim, ClaimToken, StoreError};
use crate::wake::{self, Slot, Waiting};

impl<C: HandlerSpec> IdempotencyContext<C> {
    /// Runs `handler` under the idempotency contract, given the digests of the selected
    /// parameters (in parameter order).
    pub async fn run<F>(self, params: &[Option<[u8; 32]>], handler: F) -> Response
    where
        F: Future<Output = Response> + Send + 'static,
    {
        let mode = self.plug.as_deref().and_then(|plug| plug.mode());
        let covered = self.covered.map(|covered| {
            let Covered { call, fingerprint, steps } = *covered;
            let fingerprint = fingerprint.finish(params);
            if let Some(steps) = steps {
                // Kept where the request's record goes: the layer's store, or a mode's own.
                let store = mode.and_then(|mode| mode.records_without_a_layer(&call.idempotency));
                let store = store.unwrap_or_else(|| call.idempotency.store.clone());
                let (key, lease, ttl) = (call.key, call.config.lease, call.config.ttl);
                steps.fill(Kept { store, key, fingerprint, lease, ttl });
            }
            (call, fingerprint)
        });
        if let Some(mode) = mode {
            let (mode, handler) = (mode.clone(), Box::pin(handler));
            return match covered {
                None => mode.run_uncovered(C::CONFIG, handler).await,
                Some((call, fingerprint)) => mode.run_covered(call, fingerprint, handler).await,
            };
        }
        match covered {
            None => handler.await,
            Some((call, fingerprint)) => {
                let span = call.span.clone();
                run(call, fingerprint, handler).instrument(span).await
            }
        }
    }
}

/// A covered request on the store: claim its key, then replay, refuse, or run the handler as
/// the claim's owner.
async fn run<F>(mut call: Call, fingerprint: Fingerprint, handler: F) -> Response
where
    F: Future<Output = Response> + Send + 'static,
{
    call.watch.resume();
    let lease = call.config.lease;
    let give_up = Instant::now() + lease;
    let mut pause = Duration::from_millis(5);
    // Registered once the key is found in flight: the owner wakes the wait as soon as it is done,
    // directly when it is in this process, through the store when the store can tell; polling
    // the store is the fallback.
    let mut waiting: Option<Waiting> = None;
    let token = loop {
        let woken = waiting.as_ref().map(Waiting::next);
        let attempt = ClaimInFlight::new(&call.idempotency.store, call.key, fingerprint, lease);
        match attempt.await {
            Ok(Claim::Acquired(token)) => break token,
            Ok(Claim::Completed(record)) => return call.replay(record),
            Ok(Claim::Mismatch) => return call.ended(Answer::Mismatch),
            Ok(Claim::InFlight { .. }) if call.config.wait && Instant::now() < give_up => {
                let Some(woken) = woken else {
                    // Listening from now on, the key is looked at once more: an owner that was
                    // done in between is not missed.
                    let store = &call.idempotency.store;
                    waiting = Some(Waiting::new(Slot::of(store, call.key), &**store).await);
                    continue;
                };
                let slot = Slot::of(&call.idempotency.store, call.key);
                woken.or_poll(&slot, &mut pause, give_up.saturating_duration_since(Instant::now())).await;
            }
            Ok(Claim::InFlight { .. }) => return call.ended(Answer::Conflict),
            // Never run without idempotency here, fail-open or not: the store is reachable but
            // may have lost claims of handlers still running.
            Err(StoreError::Recovering { retry_after }) => {
                tracing::warn!(target: "idem", route = call.route.label(), ?retry_after, "the store lost in-flight claims; answering 503 until every lease that may be running has run out");
                return call.ended(Answer::StoreRecovering { retry_after });
            }
            // A late request is never run without idempotency: its record may be there.
            Err(error) if call.idempotency.fail_open && call.late.is_none() => {
                tracing::warn!(target: "idem", route = call.route.label(), %error, "store unavailable; running the handler without idempotency (fail-open)");
                call.watch.pause();
                let response = handler.await;
                call.watch.resume();
                call.report(Outcome::ExecutedFailOpen(response.status()));
                return response;
            }
            Err(error) => {
                tracing::error!(target: "idem", route = call.route.label(), %error, "store unavailable; answering 503");
                return call.ended(Answer::StoreUnavailable);
            }
        }
    };
    if let Some(late) = call.late {
        return refuse_late(call, token, late).await;
    }
    let owner = Owner::hold(call, token, fingerprint);
    // A client that disconnects drops this future; the handler then finishes in a task of
    // its own and its response is stored for the retry.
    RunToCompletion::new(mode::execute(owner, handler)).await
}

/// A late request found no record (its claim was acquired): the claim is released at once,
/// and the request refused without running the handler.
async fn refuse_late(call: Call, token: ClaimToken, late: Late) -> Response {
    // Runs to completion: a request dropped here still releases the claim it took.
    RunToCompletion::new(async move {
        let release = call.idempotency.store.release(&call.key, token);
        match within(call.config.lease, release).await {
            Ok(()) => wake::wake(&Slot::of(&call.idempotency.store, call.key)),
            Err(error) => {
                tracing::warn!(target: "idem", route = call.route.label(), %error, "could not release the claim of a request refused as past its lifetime; retries get 409 until its lease expires");
            }
        }
        call.ended(Answer::KeyExpired(late))
    })
    .await
}

/// The store's owner of a claim runs the handler once: a kept answer is stored (as its body is
/// produced), any other releases the key.
impl Claimed for Owner {
    fn call(&mut self) -> &mut Call {
        &mut self.call
    }

    // The futures of the owner's own methods are returned as they are, not wrapped in another
    // `async` block that would move the owner (and the response) once more.
    fn panicked(self) -> impl Future<Output = Response> + Send {
        Owner::panicked(self)
    }

    async fn give_up(self, response: Response) -> Response {
        self.release(response.status()).await;
        response
    }

    fn keep(self, response: Response) -> impl Future<Output = Response> + Send {
        capture::respond(self, response)
    }
}
