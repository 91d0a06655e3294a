//! The parts of a covered request that must outlive the request's future: a claim on its way
//! to the store, the owner's work once it holds the claim, and the owner's store calls, each
//! bounded so that a dropped request or a silent store never leaves a claim without an owner.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::Response;
use tracing::Instrument as _;

use crate::fingerprint::Fingerprint;
use crate::store::{BoxFuture, Claim, DynStore, RecordKey, StoreError};

/// A store operation of the claim's owner, bounded by the lease: a store that never answers is
/// an unavailable one (a completion is then retried in the background, a release left to lapse),
/// never a claim held for as long as the call hangs.
pub(crate) async fn within<T>(
    lease: Duration,
    operation: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(lease, operation)
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("the store did not answer within the lease".into())))
}

/// A claim on its way to the store. Dropped before the store answered (the client went away, a
/// timeout layer gave up, the server shuts down), it finishes in a task of its own, which
/// releases the claim if it was acquired: no claim is left in the store without an owner to run,
/// renew or release it.
pub(crate) struct ClaimInFlight {
    attempt: Option<BoxFuture<'static, Result<Claim, StoreError>>>,
    store: Arc<dyn DynStore>,
    key: RecordKey,
}

impl ClaimInFlight {
    pub(crate) fn new(store: &Arc<dyn DynStore>, key: RecordKey, fingerprint: Fingerprint, lease: Duration) -> Self {
        Self { attempt: Some(store.clone().claim_owned(key, fingerprint, lease)), store: store.clone(), key }
    }
}

impl Future for ClaimInFlight {
    type Output = Result<Claim, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let attempt = self.attempt.as_mut().expect("polled after completion");
        let claim = std::task::ready!(attempt.as_mut().poll(cx));
        self.attempt = None;
        Poll::Ready(claim)
    }
}

impl Drop for ClaimInFlight {
    fn drop(&mut self) {
        let Some(attempt) = self.attempt.take() else { return };
        let (store, key) = (self.store.clone(), self.key);
        let undo = async move {
            if let Ok(Claim::Acquired(token)) = attempt.await {
                match store.release(&key, token).await {
                    Ok(()) => crate::wake::wake(&crate::wake::Slot::of(&store, key)),
                    Err(error) => {
                        tracing::error!(target: "idem", %error, "could not release the claim of a request dropped while claiming; retries get 409 until its lease expires");
                    }
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(undo.in_current_span())),
            Err(_) => tracing::error!(
                target: "idem",
                "a request was dropped while claiming its key outside a Tokio runtime; a claim it took is held until the lease expires"
            ),
        }
    }
}

/// Polls the handler (and the storing of its response) in place, and when dropped before it
/// finished (the client went away), hands it to a task of its own to run to completion. The
/// common path costs no task spawn.
pub(crate) struct RunToCompletion(Option<Pin<Box<dyn Future<Output = Response> + Send>>>);

impl RunToCompletion {
    pub(crate) fn new(work: impl Future<Output = Response> + Send + 'static) -> Self {
        Self(Some(Box::pin(work.in_current_span())))
    }
}

impl Future for RunToCompletion {
    type Output = Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let inner = self.0.as_mut().expect("polled after completion");
        let response = std::task::ready!(inner.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(response)
    }
}

impl Drop for RunToCompletion {
    fn drop(&mut self) {
        if let Some(unfinished) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(unfinished)),
                Err(_) => tracing::error!(
                    target: "idem",
                    "a handler was cancelled outside a Tokio runtime; its claim is held until the lease expires"
                ),
            }
        }
    }
}
