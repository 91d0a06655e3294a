//! Steps: side effects inside a handler whose results are kept, so that an attempt that runs
//! the handler again (its first attempt crashed, answered a status that is not kept, or rolled
//! back its `Tx`) gets each completed step's result back instead of running it twice.
//!
//! ```
//! use axum::{http::StatusCode, routing::post, Router};
//! use idem_runtime::{idempotent, steps::Steps};
//!
//! #[idempotent(required)]
//! async fn pay(steps: Steps) -> Result<String, StatusCode> {
//!     let charge: String = steps
//!         .run("charge", || async { Ok::<_, std::io::Error>("ch_1".to_owned()) /* call the provider */ })
//!         .await
//!         .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
//!     // … record the payment; if this fails, the retry gets "ch_1" from the step, not a second charge.
//!     Ok(charge)
//! }
//!
//! let app: Router = Router::new().route("/payments", post(pay));
//! ```
//!
//! - **Where a result is kept**: in the handler's store, as a record of its own under an address
//!   derived from the request's record, its fingerprint and the step's name: a step's result is
//!   returned only to an attempt of the same request. Another request that takes the key later
//!   (the first one's answer was not kept, so the key was free) runs steps of its own. A kept
//!   step expires with the request's `ttl`, never after the request's stored response.
//! - **Every store**: it uses the store's own claim and completion, so memory, Redis, Redis
//!   Cluster and PostgreSQL keep steps alike. With `Tx`, a step is kept by the store outside the
//!   request's transaction: it survives the transaction's rollback, which is the point.
//! - **When a step runs**: when no attempt of the request has completed it. A step that fails
//!   (returns `Err`) keeps nothing and runs again on the next attempt. A step another attempt of
//!   the same request is running right now (an earlier attempt still alive after its lease ran
//!   out) is not run twice: `run` answers [`StepError::Busy`].
//! - **Names**: a step's name is where its result is kept; the attribute refuses a literal name
//!   given to two `run` calls in one handler, and `run` refuses a name the attempt has run
//!   already ([`StepError::Repeated`]: a name built at run time, a call in a loop). A name
//!   must be the same on every attempt: built from the request, never from the time or a
//!   fresh id.
//! - **A result that cannot be kept** (larger than the store keeps, or JSON that does not read
//!   back as `T`, such as a NaN): the step ran, so what is kept says so, and every attempt gets
//!   [`StepError::Unkept`] instead of running it again. A result the store failed to write is
//!   returned all the same and written in the background while the step's lease lasts. Every
//!   result is returned as replays read it back.
//! - **Without a key** (an `optional` handler, a safe method), steps simply run: there is no
//!   request to keep them for.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse as _, Response};
use http::request::Parts;
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::fingerprint::{Fingerprint, FingerprintSource, FingerprintWriter, RequestInput};
use crate::problem::{Problem, ProblemKind};
use crate::record::{Record, StoredBody};
use crate::store::{Claim, ClaimToken, DynStore, RecordKey, StoreError};

/// Where a covered request's steps are kept, filled when its handler is called (the
/// fingerprint is known then), and the names the attempt has run.
#[derive(Default)]
pub(crate) struct StepsSlot(OnceLock<Kept>, Mutex<HashSet<String>>);

/// What a covered request's steps need to keep their results.
pub(crate) struct Kept {
    pub(crate) store: Arc<dyn DynStore>,
    pub(crate) key: RecordKey,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) lease: Duration,
    pub(crate) ttl: Duration,
}

impl StepsSlot {
    pub(crate) fn fill(&self, kept: Kept) {
        // Filled once, by the engine, before the handler runs.
        let _ = self.0.set(kept);
    }
}

/// The steps of a request (see the [module docs](self)).
#[derive(Clone)]
pub struct Steps {
    slot: Arc<StepsSlot>,
}

impl std::fmt::Debug for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steps").field("kept", &self.slot.0.get().is_some()).finish()
    }
}

/// Why [`Steps::run`] gave no result.
#[derive(Debug)]
#[non_exhaustive]
pub enum StepError<E> {
    /// The step ran and failed; nothing is kept, and the next attempt runs it again.
    Step(E),
    /// Another attempt of the same request is running this step right now.
    Busy,
    /// The store could not be used; the step did not run.
    Store(StoreError),
    /// A step of this name ran already in this attempt (a name built at run time, or a call in
    /// a loop): the second would get the first one's result. Each step needs a name of its own.
    Repeated(String),
    /// The step's result is larger than the store keeps, or could not be written or read back as
    /// JSON; this attempt or an earlier one ran the step, and it is not run again.
    Unkept(String),
}

impl<E: std::fmt::Display> std::fmt::Display for StepError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Step(error) => write!(f, "the step failed: {error}"),
            Self::Busy => f.write_str("another attempt of this request is running the step"),
            Self::Store(error) => write!(f, "the store could not keep the step: {error}"),
            Self::Unkept(why) => write!(f, "the step's result cannot be kept: {why}"),
            Self::Repeated(name) => {
                write!(f, "the step {name:?} ran already in this attempt: each step needs a name of its own")
            }
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for StepError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Step(error) => Some(error),
            Self::Store(error) => Some(error),
            Self::Busy | Self::Unkept(_) | Self::Repeated(_) => None,
        }
    }
}

impl Steps {
    /// Runs `step` under `name`, or returns the result an earlier attempt of this request kept
    /// for it. The result is kept (as JSON) before it is returned.
    ///
    /// # Errors
    ///
    /// [`StepError`]: the step's own error (nothing kept), another attempt running it, the store,
    /// or a result that cannot be kept.
    pub async fn run<T, E, F, Fut>(&self, name: &str, step: F) -> Result<T, StepError<E>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let first = self.slot.1.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(name.to_owned());
        if !first {
            return Err(StepError::Repeated(name.to_owned()));
        }
        let Some(kept) = self.slot.0.get() else {
            return step().await.map_err(StepError::Step);
        };
        let key = step_key(&kept.key, &kept.fingerprint, name);
        let token = match kept.store.clone().claim_owned(key, kept.fingerprint, kept.lease).await {
            Ok(Claim::Acquired(token)) => token,
            Ok(Claim::Completed(record)) => {
                let bytes = record.body.bytes().ok_or_else(|| StepError::Unkept("kept without its bytes".into()))?;
                if record.status != StatusCode::OK {
                    let why = String::from_utf8_lossy(bytes);
                    return Err(StepError::Unkept(format!(
                        "an earlier attempt ran this step, and its result could not be kept: {why}"
                    )));
                }
                return serde_json::from_slice(bytes).map_err(|e| StepError::Unkept(e.to_string()));
            }
            Ok(Claim::InFlight { .. }) => return Err(StepError::Busy),
            Ok(Claim::Mismatch) => return Err(StepError::Unkept("kept for another request".into())),
            Err(error) => return Err(StepError::Store(error)),
        };
        // Renewed while the step runs and until its result is kept, as the request's own claim is.
        let held = crate::lease::hold(&kept.store, key, token, kept.lease);
        let value = match step().await {
            Ok(value) => value,
            Err(error) => {
                drop(held);
                if let Err(release) = kept.store.release(&key, token).await {
                    tracing::warn!(target: "idem", %release, "could not release a failed step; it can run again once its lease expires");
                }
                return Err(StepError::Step(error));
            }
        };
        // The result is returned as replays will read it back, or not at all.
        let readable = serde_json::to_vec(&value).map_err(|e| e.to_string()).and_then(|bytes| {
            if bytes.len() > kept.store.max_body_bytes() {
                return Err(format!("{} bytes, more than the store keeps", bytes.len()));
            }
            let read: T = serde_json::from_slice(&bytes).map_err(|e| format!("its JSON does not read back: {e}"))?;
            Ok((bytes, read))
        });
        let (status, body, result) = match readable {
            Ok((bytes, read)) => (StatusCode::OK, bytes, Ok(read)),
            // The step ran: what is kept says so, and no later attempt runs it again.
            Err(why) => (StatusCode::INTERNAL_SERVER_ERROR, why.clone().into_bytes(), Err(StepError::Unkept(why))),
        };
        let now = kept.store.now();
        let record = Record {
            fingerprint: kept.fingerprint,
            status,
            headers: HeaderMap::new(),
            body: StoredBody::Kept(body.into()),
            expires_at: now.checked_add(kept.ttl).unwrap_or(now),
        };
        if let Err(error) = kept.store.complete(&key, token, record.clone()).await {
            // The step ran, and its result is in hand: returned, and kept once the store answers.
            tracing::warn!(target: "idem", %error, "could not keep a step's result; retrying in the background");
            keep_later(kept.store.clone(), key, token, record, kept.lease, held);
        }
        result
    }
}

/// Keeps a step's record once the store answers again, within the step's lease (renewed
/// meanwhile by `held`); past it, a later attempt may run the step again, and the log says so.
fn keep_later(
    store: Arc<dyn DynStore>,
    key: RecordKey,
    token: ClaimToken,
    record: Record,
    lease: Duration,
    held: crate::lease::HeldLease,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        let _held = held;
        let (started, mut pause) = (tokio::time::Instant::now(), Duration::from_millis(50));
        loop {
            tokio::time::sleep(pause).await;
            match store.complete(&key, token, record.clone()).await {
                Ok(()) => return,
                Err(error) if matches!(error, StoreError::LeaseLost) || started.elapsed() + pause >= lease => {
                    tracing::error!(target: "idem", %error, "a step's result could not be kept: a later attempt of its request runs it again");
                    return;
                }
                Err(_) => pause = (pause * 2).min(lease / 4),
            }
        }
    });
}

/// Where the step `name` of the request with `fingerprint` at `record` is kept: another request
/// that takes the same key later (the first one's answer was not kept) has steps of its own.
fn step_key(record: &RecordKey, fingerprint: &Fingerprint, name: &str) -> RecordKey {
    let mut digest = Sha256::new();
    digest.update(b"idem-step-v2\0");
    digest.update(record.as_bytes());
    digest.update(fingerprint.as_bytes());
    digest.update(name.as_bytes());
    RecordKey::from_digest(digest.finalize().into())
}

impl<S: Send + Sync> FromRequestParts<S> for Steps {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        match parts.extensions.get::<Arc<StepsSlot>>() {
            Some(slot) => Ok(Self { slot: slot.clone() }),
            None => {
                let detail = "this handler's steps cannot be kept: `Steps` is a parameter of `#[idempotent]` handlers \
                              only, written `Steps` in the signature (the attribute sees it by that name)";
                tracing::error!(target: "idem", path = parts.uri.path(), "{detail}");
                Err(Problem::new(ProblemKind::StoreNotConfigured, detail).into_response())
            }
        }
    }
}

/// The steps are no input of the request: they add nothing to the fingerprint.
impl FingerprintSource for Steps {
    fn write(_: &RequestInput<'_>, _: &mut FingerprintWriter) {}
}
