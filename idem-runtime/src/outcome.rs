//! How a covered request ended: one [`Outcome`] per request, and here, in one place, each
//! outcome's event name and status, and the response of each [`Answer`] idem gives itself.

use std::time::{Duration, Instant};

use axum::response::{IntoResponse as _, Response};
use http::{Method, StatusCode};

use crate::problem::{Problem, ProblemKind};

/// How a covered request ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    /// Refused before the claim: no or a malformed key, or an unresolved scope.
    Rejected(StatusCode),
    /// The stored response of an earlier execution.
    Replayed(StatusCode),
    /// Idem answered without running the handler, or after the handler panicked.
    Answered(Answer),
    /// The handler ran and its response is stored.
    Executed(StatusCode),
    /// The handler ran and its response is not stored: a status that releases the key, or a
    /// claim lost to another request.
    ExecutedNotStored(StatusCode),
    /// The handler ran; its response is stored once the unreachable store is back.
    ExecutedStorePending(StatusCode),
    /// The store was unreachable and the layer fails open: the handler ran without idempotency.
    ExecutedFailOpen(StatusCode),
}

/// An outcome whose response idem makes itself.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Answer {
    /// The key was used for a different request.
    Mismatch,
    /// The same request is still running.
    Conflict,
    /// The store cannot be reached.
    StoreUnavailable,
    /// The store lost in-flight claims; no new claim until this has passed.
    StoreRecovering { retry_after: Duration },
    /// The handler takes its store from a layer, and its route is not behind one.
    StoreNotConfigured,
    /// The handler or its response body panicked; the key was released.
    Panicked,
    /// The handler's database transaction could not be used as the application is built (the
    /// detail says why); nothing was committed.
    #[cfg(feature = "postgres")]
    TransactionUnavailable(&'static str),
}

impl Outcome {
    /// The event's `outcome` field.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Rejected(_) => "rejected",
            Self::Replayed(_) => "replayed",
            Self::Answered(Answer::Mismatch) => "mismatch",
            Self::Answered(Answer::Conflict) => "conflict",
            Self::Answered(Answer::StoreUnavailable) => "store-error",
            Self::Answered(Answer::StoreRecovering { .. }) => "store-recovering",
            Self::Answered(Answer::StoreNotConfigured) => "store-not-configured",
            Self::Answered(Answer::Panicked) => "panicked",
            #[cfg(feature = "postgres")]
            Self::Answered(Answer::TransactionUnavailable(_)) => "transaction-unavailable",
            Self::Executed(_) => "executed",
            Self::ExecutedNotStored(_) => "executed-not-stored",
            Self::ExecutedStorePending(_) => "executed-store-pending",
            Self::ExecutedFailOpen(_) => "executed-fail-open",
        }
    }

    /// The status the client received.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Self::Rejected(status)
            | Self::Replayed(status)
            | Self::Executed(status)
            | Self::ExecutedNotStored(status)
            | Self::ExecutedStorePending(status)
            | Self::ExecutedFailOpen(status) => status,
            Self::Answered(answer) => answer.kind().status(),
        }
    }
}

impl Answer {
    /// The kind of problem idem answers with; its status is the outcome's.
    const fn kind(self) -> ProblemKind {
        match self {
            Self::Mismatch => ProblemKind::KeyReused,
            Self::Conflict => ProblemKind::InFlight,
            Self::StoreUnavailable => ProblemKind::StoreUnavailable,
            Self::StoreRecovering { .. } => ProblemKind::StoreRecovering,
            Self::StoreNotConfigured => ProblemKind::StoreNotConfigured,
            Self::Panicked => ProblemKind::HandlerPanicked,
            #[cfg(feature = "postgres")]
            Self::TransactionUnavailable(_) => ProblemKind::TransactionUnavailable,
        }
    }

    fn problem(self) -> Problem {
        match self {
            Self::Mismatch => Problem::key_reused(),
            Self::Conflict => Problem::in_flight(),
            Self::StoreUnavailable => Problem::store_unavailable(),
            Self::StoreRecovering { retry_after } => Problem::store_recovering(retry_after),
            Self::StoreNotConfigured => Problem::store_not_configured(),
            Self::Panicked => Problem::handler_panicked(),
            #[cfg(feature = "postgres")]
            Self::TransactionUnavailable(detail) => Problem::transaction_unavailable(detail),
        }
    }

    /// The response idem gives for this outcome.
    pub(crate) fn response(self) -> Response {
        self.problem().into_response()
    }
}

/// Emits the one event of a covered request (target `idem`). It never carries a key or a
/// credential.
pub(crate) fn report(method: &Method, route: &str, outcome: Outcome, started: Instant) {
    tracing::info!(
        target: "idem",
        %method,
        route,
        outcome = outcome.name(),
        status = outcome.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "idempotent request"
    );
}
