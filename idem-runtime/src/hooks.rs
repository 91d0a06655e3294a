//! A layer's hooks: shape the problems idem answers itself to the service's own error format,
//! and observe how each covered request ended (replays, conflicts, mismatches, …).
//!
//! Both are set on [`Idempotency`], so each router (or part of one) has its own. A service whose
//! published contract answers a reused key with `409` and its own error object, instead of
//! idem's `422` problem:
//!
//! ```
//! use axum::response::{IntoResponse, Response};
//! use axum::{http::StatusCode, routing::post, Json, Router};
//! use idem_runtime::hooks::OutcomeKind;
//! use idem_runtime::problem::{Problem, ProblemKind};
//! use idem_runtime::{idempotent, store::MemoryStore, Idempotency};
//!
//! #[idempotent(required)]
//! async fn create_message(Json(text): Json<String>) -> String {
//!     format!("sent: {text}")
//! }
//!
//! /// The contract's error format for a reused key; every other problem stays idem's.
//! fn contract_errors(problem: &Problem) -> Option<Response> {
//!     let body = serde_json::json!({
//!         "type": "error",
//!         "error": { "type": "conflict_error", "message": problem.detail() },
//!     });
//!     (problem.kind() == ProblemKind::KeyReused).then(|| (StatusCode::CONFLICT, Json(body)).into_response())
//! }
//!
//! let idempotency = Idempotency::new(MemoryStore::new())
//!     .shape_problems(contract_errors)
//!     .on_outcome(|outcome| {
//!         if matches!(outcome.kind(), OutcomeKind::Replayed | OutcomeKind::Conflict | OutcomeKind::Mismatch) {
//!             tracing::info!(route = outcome.route(), outcome = outcome.kind().as_str(), "retried request");
//!         }
//!     });
//! let app: Router = Router::new().route("/v1/messages", post(create_message)).layer(idempotency);
//! ```
//!
//! # What a hook can change, and what it cannot
//!
//! [`Idempotency::shape_problems`] sees every problem idem answers instead of the handler's
//! response: a missing or malformed key, a malformed `Repeatability-First-Sent`, a request dated
//! in the future or past its lifetime, a scope that cannot be resolved, an unreadable or too
//! large request body, a conflict, a mismatch, an unreachable or recovering store, a panicked
//! handler. It may answer with any body, headers and status, except that:
//!
//! - **the status keeps its class**: a 4xx stays a 4xx and a 5xx a 5xx. A refusal turned into a
//!   2xx would tell the client that work was done which was not; a final 4xx turned into a 5xx
//!   (or the reverse) would make retrying clients retry a request that cannot succeed, or give
//!   up on one that would. A response of another class is not sent: idem answers with its own
//!   problem and logs an error (target `idem`) naming both statuses;
//! - **a request still running stays a 409**: the conflict of a duplicate that arrives while
//!   the first attempt runs keeps its status (the hook's body and other headers are sent).
//!   Clients (idem's own among them) read 409 with `Retry-After` as "ask again later"; any other
//!   4xx would make them give up on a call that may still succeed, and start it over under a new
//!   key;
//! - **`Retry-After` is idem's**: a conflict or an unavailable or recovering store carries the
//!   delay idem computed, and every other problem none, whatever the hook set. Clients (idem's
//!   own among them) tell a request still running (retry after the delay) from a final refusal
//!   by it, and a recovering store's delay is what keeps a second execution out;
//! - **no refusal looks like a replay**: `Idempotent-Replayed` is removed from what the hook
//!   answers.
//!
//! A hook that panics is treated as one that shaped nothing (and logged). The bodies a replay
//! carries when a stored body was too large or failed ([`ProblemKind::BodyNotStored`],
//! [`ProblemKind::BodyFailed`]) are part of a replayed success and are not shaped; neither are a
//! `with(f)` scope function's own rejections, which are the application's already.
//!
//! [`Idempotency::on_outcome`] is called once per covered request, when its outcome is known,
//! with what the request's tracing event carries: method, route template, outcome, status,
//! idem's problem (if idem answered), the request's `X-Request-Id` and the time since idem
//! first saw the request. It never sees the idempotency key, the `Authorization` header or any
//! other part of the request. It runs on the request's path: keep it short and never block.
//!
//! [`Idempotency`]: crate::Idempotency
//! [`Idempotency::shape_problems`]: crate::Idempotency::shape_problems
//! [`Idempotency::on_outcome`]: crate::Idempotency::on_outcome
//! [`ProblemKind::BodyNotStored`]: crate::problem::ProblemKind::BodyNotStored
//! [`ProblemKind::BodyFailed`]: crate::problem::ProblemKind::BodyFailed

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use http::{header, HeaderValue, Method, StatusCode};

use crate::problem::{MadeFrom, Problem, ProblemKind};
use crate::record::IDEMPOTENT_REPLAYED;

pub(crate) type ShapeFn = dyn Fn(&Problem) -> Option<Response> + Send + Sync;
pub(crate) type ObserveFn = dyn Fn(&RequestOutcome<'_>) + Send + Sync;

/// How a covered request ended, as events, metrics and the layer's outcome hook name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OutcomeKind {
    /// Refused before the claim: no key on a `required` handler, a malformed key, a malformed
    /// `Repeatability-First-Sent`, a request that says it begins in the future, or a scope that
    /// cannot be resolved. The handler did not run.
    Rejected,
    /// The stored response of an earlier execution was replayed. The handler did not run.
    Replayed,
    /// The key was used for a different request (`422` unless shaped). The handler did not run.
    Mismatch,
    /// A request with the same key is still running (`409` unless shaped). The handler did not
    /// run.
    Conflict,
    /// The store could not be reached and the layer fails closed (`503`). The handler did not run.
    StoreUnavailable,
    /// The store lost its in-flight claims and grants none until every lease that may be running
    /// has run out (`503`). The handler did not run.
    StoreRecovering,
    /// The handler takes its store from a layer and its route is behind none (`500`). The
    /// handler did not run.
    StoreNotConfigured,
    /// The handler or its response body panicked (`500`); the key was released.
    Panicked,
    /// The request's logical call began longer ago than the handler keeps responses, and no
    /// record of it is left (`412`): whether it ran is unknown. The handler did not run.
    KeyExpired,
    /// The handler's database transaction could not be used as the application is built
    /// (`500`, feature `postgres`); nothing was committed.
    TransactionUnavailable,
    /// The handler ran and its response is stored.
    Executed,
    /// The handler ran and its response is not stored: a status that releases the key, or a
    /// claim lost to another request.
    ExecutedNotStored,
    /// The handler ran; its response is stored once the unreachable store is back.
    ExecutedStorePending,
    /// The store was unreachable and the layer fails open: the handler ran without idempotency.
    ExecutedFailOpen,
}

impl OutcomeKind {
    /// The name events and metrics give it: `rejected`, `replayed`, `mismatch`, `conflict`,
    /// `store-error`, `store-recovering`, `store-not-configured`, `panicked`, `key-expired`,
    /// `transaction-unavailable`, `executed`, `executed-not-stored`, `executed-store-pending`,
    /// `executed-fail-open`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Replayed => "replayed",
            Self::Mismatch => "mismatch",
            Self::Conflict => "conflict",
            Self::StoreUnavailable => "store-error",
            Self::StoreRecovering => "store-recovering",
            Self::StoreNotConfigured => "store-not-configured",
            Self::Panicked => "panicked",
            Self::KeyExpired => "key-expired",
            Self::TransactionUnavailable => "transaction-unavailable",
            Self::Executed => "executed",
            Self::ExecutedNotStored => "executed-not-stored",
            Self::ExecutedStorePending => "executed-store-pending",
            Self::ExecutedFailOpen => "executed-fail-open",
        }
    }
}

/// How a covered request ended, as
/// [`Idempotency::on_outcome`](crate::Idempotency::on_outcome) sees it. It carries neither the
/// idempotency key nor any credential.
#[derive(Debug)]
pub struct RequestOutcome<'a> {
    pub(crate) kind: OutcomeKind,
    pub(crate) status: StatusCode,
    pub(crate) method: &'a Method,
    pub(crate) route: &'a str,
    pub(crate) problem: Option<&'a Problem>,
    pub(crate) request_id: Option<&'a HeaderValue>,
    pub(crate) elapsed: Duration,
}

impl<'a> RequestOutcome<'a> {
    /// How the request ended.
    pub fn kind(&self) -> OutcomeKind {
        self.kind
    }

    /// The status the client received (after
    /// [`Idempotency::shape_problems`](crate::Idempotency::shape_problems)).
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The request's method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The matched route template (`/orders/{id}`), or `unmatched` for a request that matched no
    /// route template (an annotated fallback, a handler called outside a `Router`): never the
    /// path the client sent.
    pub fn route(&self) -> &'a str {
        self.route
    }

    /// The problem idem answered with, before any shaping: for a rejection, a conflict, a
    /// mismatch, a key past its lifetime, an unavailable or recovering store, a panic. `None` when the handler's response
    /// or a replay was sent, or a `with(f)` scope function rejected the request.
    pub fn problem(&self) -> Option<&'a Problem> {
        self.problem
    }

    /// The request's `X-Request-Id`, if it carried one.
    pub fn request_id(&self) -> Option<&'a HeaderValue> {
        self.request_id
    }

    /// The time from idem's first look at the request to this outcome.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

/// The hooks of one [`Idempotency`](crate::Idempotency) layer.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) shape: Option<Arc<ShapeFn>>,
    pub(crate) observe: Option<Arc<ObserveFn>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("shape_problems", &self.shape.is_some())
            .field("on_outcome", &self.observe.is_some())
            .finish()
    }
}

impl Hooks {
    /// The response for one of idem's own problems: the shaping hook's, when it gives one that
    /// keeps what clients rely on (see the module docs), else idem's problem.
    pub(crate) fn respond(&self, problem: &Problem) -> Response {
        let Some(shape) = &self.shape else { return problem.to_response() };
        match catch_unwind(AssertUnwindSafe(|| shape(problem))) {
            Ok(None) => problem.to_response(),
            Ok(Some(response)) if response.status().as_u16() / 100 == problem.status().as_u16() / 100 => {
                keep_what_clients_rely_on(response, problem)
            }
            Ok(Some(response)) => {
                tracing::error!(
                    target: "idem",
                    problem = problem.kind().type_uri(),
                    status = problem.status().as_u16(),
                    shaped_status = response.status().as_u16(),
                    "a problem hook answered with a status of another class; answering with idem's own problem"
                );
                problem.to_response()
            }
            Err(_panic) => {
                tracing::error!(target: "idem", problem = problem.kind().type_uri(), "a problem hook panicked; answering with idem's own problem");
                problem.to_response()
            }
        }
    }

    /// `response` shaped, when idem made it from one of its problems; any other response as it is.
    pub(crate) fn shape(&self, response: Response) -> Response {
        if self.shape.is_none() {
            return response;
        }
        match response.extensions().get::<MadeFrom>() {
            Some(MadeFrom(problem)) => {
                let problem = problem.clone();
                let mut shaped = self.respond(&problem);
                shaped.extensions_mut().insert(MadeFrom(problem));
                shaped
            }
            None => response,
        }
    }

    /// Calls the outcome hook, if any, with the outcome `seen` describes (made only then).
    pub(crate) fn observe<'a>(&self, seen: impl FnOnce() -> RequestOutcome<'a>) {
        if let Some(observe) = &self.observe {
            let outcome = seen();
            if catch_unwind(AssertUnwindSafe(|| observe(&outcome))).is_err() {
                tracing::error!(target: "idem", outcome = outcome.kind.as_str(), "an outcome hook panicked");
            }
        }
    }
}

/// What a shaped response cannot change: the status of a request still running, idem's
/// `Retry-After`, and no replay marker.
fn keep_what_clients_rely_on(mut response: Response, problem: &Problem) -> Response {
    if problem.kind() == ProblemKind::InFlight {
        *response.status_mut() = problem.status();
    }
    let headers = response.headers_mut();
    headers.remove(IDEMPOTENT_REPLAYED);
    match problem.retry_after_seconds() {
        Some(seconds) => headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds)),
        None => headers.remove(header::RETRY_AFTER),
    };
    response
}
