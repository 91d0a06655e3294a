//! How a covered request ended: one [`Outcome`] per request, and here, in one place, each
//! outcome's name and status, the response of each [`Answer`] idem gives itself (as the layer's
//! hooks shape it), and the one report of every outcome: its tracing event, its span's fields,
//! its metrics and the layer's outcome hook.

use std::time::{Duration, Instant};

use axum::response::Response;
use http::{HeaderValue, Method, StatusCode};
use tracing::Span;

use crate::hooks::{Hooks, OutcomeKind, RequestOutcome};
use crate::lifetime::Late;
use crate::observe::{self, Stopwatch};
use crate::problem::{MadeFrom, Problem, ProblemKind};

/// How a covered request ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    /// Refused before the claim: no or a malformed key, a malformed or future start, or an
    /// unresolved scope.
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
    /// The request's call began longer ago than its handler keeps responses, and no record of it
    /// was found; its claim was released at once.
    KeyExpired(Late),
    /// The handler's database transaction could not be used as the application is built (the
    /// detail says why); nothing was committed.
    #[cfg(feature = "postgres")]
    TransactionUnavailable(&'static str),
}

impl Outcome {
    /// Its kind, as events, metrics and hooks name it.
    pub(crate) const fn kind(self) -> OutcomeKind {
        match self {
            Self::Rejected(_) => OutcomeKind::Rejected,
            Self::Replayed(_) => OutcomeKind::Replayed,
            Self::Answered(Answer::Mismatch) => OutcomeKind::Mismatch,
            Self::Answered(Answer::Conflict) => OutcomeKind::Conflict,
            Self::Answered(Answer::StoreUnavailable) => OutcomeKind::StoreUnavailable,
            Self::Answered(Answer::StoreRecovering { .. }) => OutcomeKind::StoreRecovering,
            Self::Answered(Answer::StoreNotConfigured) => OutcomeKind::StoreNotConfigured,
            Self::Answered(Answer::Panicked) => OutcomeKind::Panicked,
            Self::Answered(Answer::KeyExpired(_)) => OutcomeKind::KeyExpired,
            #[cfg(feature = "postgres")]
            Self::Answered(Answer::TransactionUnavailable(_)) => OutcomeKind::TransactionUnavailable,
            Self::Executed(_) => OutcomeKind::Executed,
            Self::ExecutedNotStored(_) => OutcomeKind::ExecutedNotStored,
            Self::ExecutedStorePending(_) => OutcomeKind::ExecutedStorePending,
            Self::ExecutedFailOpen(_) => OutcomeKind::ExecutedFailOpen,
        }
    }

    /// The status the client received, when idem did not shape the response itself.
    fn status(self) -> StatusCode {
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
            Self::KeyExpired(_) => ProblemKind::KeyExpired,
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
            Self::KeyExpired(late) => Problem::key_expired(&late),
            #[cfg(feature = "postgres")]
            Self::TransactionUnavailable(detail) => Problem::transaction_unavailable(detail),
        }
    }
}

/// A covered request as the report of its outcome may describe it: never its key or credential.
pub(crate) struct Seen<'a> {
    pub(crate) method: &'a Method,
    /// The matched route template.
    pub(crate) route: &'a str,
    pub(crate) request_id: Option<&'a HeaderValue>,
    pub(crate) started: Instant,
    pub(crate) span: &'a Span,
    pub(crate) hooks: &'a Hooks,
    pub(crate) watch: &'a Stopwatch,
}

/// Reports an outcome whose response is the handler's or a replay's.
pub(crate) fn report(seen: &Seen<'_>, outcome: Outcome) {
    report_as(seen, outcome, outcome.status(), None);
}

/// Reports an outcome idem answers itself, and gives its response, as the hooks shape it.
pub(crate) fn answer(seen: &Seen<'_>, answer: Answer) -> Response {
    let problem = answer.problem();
    let response = seen.hooks.respond(&problem);
    report_as(seen, Outcome::Answered(answer), response.status(), Some(&problem));
    response
}

/// Reports a request refused before its claim with `response` (idem's problem, or a scope
/// function's own rejection), and gives that response, as the hooks shape idem's problems.
pub(crate) fn reject(seen: &Seen<'_>, response: Response) -> Response {
    let response = seen.hooks.shape(response);
    let problem = response.extensions().get::<MadeFrom>().map(|made| &made.0);
    report_as(seen, Outcome::Rejected(response.status()), response.status(), problem);
    response
}

/// The one report of a covered request: its event (target `idem`), its span's `outcome` and
/// `status`, its metrics, and the layer's outcome hook. None of them sees a key or a credential.
fn report_as(seen: &Seen<'_>, outcome: Outcome, status: StatusCode, problem: Option<&Problem>) {
    let kind = outcome.kind();
    seen.span.record("outcome", kind.as_str());
    seen.span.record("status", status.as_u16());
    seen.span.in_scope(|| {
        tracing::info!(
            target: "idem",
            method = %observe::method_label(seen.method),
            route = seen.route,
            outcome = kind.as_str(),
            status = status.as_u16(),
            elapsed_us = seen.started.elapsed().as_micros() as u64,
            "idempotent request"
        );
    });
    observe::record(seen.method, seen.route, kind, seen.watch);
    seen.hooks.observe(|| RequestOutcome {
        kind,
        status,
        method: seen.method,
        route: seen.route,
        problem,
        request_id: seen.request_id,
        elapsed: seen.started.elapsed(),
    });
}
