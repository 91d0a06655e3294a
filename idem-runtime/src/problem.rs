//! RFC 9457 problem responses.
//!
//! Every response idem produces itself is `application/problem+json` with `type`, `title`,
//! `status` and `detail`. The `type` URI is stable per kind of problem; see [`ProblemKind`].

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;

/// The media type of every problem response.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The kinds of problem idem answers with. The `type` URIs never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// 400: the handler is `required` and the request carries no key.
    MissingKey,
    /// 400: the key header is malformed (not 1 to 255 visible ASCII characters, a list, or two
    /// names carrying different keys).
    MalformedKey,
    /// 401: the scope cannot be resolved (e.g. `scope = "pat"` without `Authorization`).
    ScopeUnresolved,
    /// 409: a request with the same key is still running; retry after `Retry-After`.
    InFlight,
    /// 422: the key was already used with a different request.
    KeyReused,
    /// 500: the handler panicked; the key was released and a retry runs the handler again.
    HandlerPanicked,
    /// 503: the idempotency store is unreachable; retry after `Retry-After`.
    StoreUnavailable,
    /// 500: the handler takes its store from an `Idempotency` layer (`store = "layer"`) and its
    /// route is not behind one; the handler did not run.
    StoreNotConfigured,
    /// 503: the idempotency store lost its in-flight claims (a restart without persistence, a
    /// failover); no new claim is granted until every lease that may still be running has run
    /// out. Retry after `Retry-After`.
    StoreRecovering,
    /// A replay of a response whose body was larger than the store's limit: the request was
    /// executed, its status and headers are replayed, the body is not.
    BodyNotStored,
    /// A replay of a response whose body failed while it was produced (after the handler ran):
    /// the request was executed, its status and headers are replayed, the body is not.
    BodyFailed,
    /// 413: the request body is larger than the configured limit.
    BodyTooLarge,
    /// 500: the handler's PostgreSQL transaction ([`Tx`](crate::postgres::Tx)) could not be
    /// used as the handler is built: a mistake in the application, named in `detail`. Nothing
    /// was committed.
    TransactionUnavailable,
    /// 400: the request body could not be read.
    BodyUnreadable,
    /// 412: the request's logical call began longer ago than the endpoint keeps responses (by
    /// its UUIDv7 key or its `Repeatability-First-Sent`), and no response of it is kept: whether
    /// it took effect is unknown. The handler did not run; check before sending the operation
    /// again under a new key.
    KeyExpired,
    /// 400: the request says its logical call begins in the future, further than clock skew
    /// explains. The handler did not run.
    KeyFromFuture,
    /// 400: `Repeatability-First-Sent` is not one HTTP-date. The handler did not run.
    MalformedFirstSent,
}

impl ProblemKind {
    /// The stable `type` URI.
    pub const fn type_uri(self) -> &'static str {
        match self {
            Self::MissingKey => "urn:idem:problem:missing-key",
            Self::MalformedKey => "urn:idem:problem:malformed-key",
            Self::ScopeUnresolved => "urn:idem:problem:scope-unresolved",
            Self::InFlight => "urn:idem:problem:in-flight",
            Self::KeyReused => "urn:idem:problem:key-reused",
            Self::HandlerPanicked => "urn:idem:problem:handler-panicked",
            Self::StoreUnavailable => "urn:idem:problem:store-unavailable",
            Self::StoreNotConfigured => "urn:idem:problem:store-not-configured",
            Self::StoreRecovering => "urn:idem:problem:store-recovering",
            Self::BodyNotStored => "urn:idem:problem:body-not-stored",
            Self::BodyFailed => "urn:idem:problem:body-failed",
            Self::BodyTooLarge => "urn:idem:problem:body-too-large",
            Self::BodyUnreadable => "urn:idem:problem:body-unreadable",
            Self::TransactionUnavailable => "urn:idem:problem:transaction-unavailable",
            Self::KeyExpired => "urn:idem:problem:key-expired",
            Self::KeyFromFuture => "urn:idem:problem:key-from-future",
            Self::MalformedFirstSent => "urn:idem:problem:malformed-first-sent",
        }
    }

    /// The short, human-readable `title`.
    pub const fn title(self) -> &'static str {
        match self {
            Self::MissingKey => "Idempotency-Key is missing",
            Self::MalformedKey => "Idempotency-Key is malformed",
            Self::ScopeUnresolved => "The idempotency scope cannot be resolved",
            Self::InFlight => "A request with this Idempotency-Key is in progress",
            Self::KeyReused => "Idempotency-Key is already used",
            Self::HandlerPanicked => "The handler failed; the request was not completed",
            Self::StoreUnavailable => "The idempotency store is unavailable",
            Self::StoreNotConfigured => "The idempotency store of this endpoint is not configured",
            Self::StoreRecovering => "The idempotency store is recovering lost claims",
            Self::BodyNotStored => "The response body of this Idempotency-Key was too large to keep",
            Self::BodyFailed => "The response body of this Idempotency-Key failed while it was produced",
            Self::BodyTooLarge => "The request body is too large",
            Self::BodyUnreadable => "The request body could not be read",
            Self::TransactionUnavailable => "The handler's database transaction is not available",
            Self::KeyExpired => "Idempotency-Key is past its lifetime",
            Self::KeyFromFuture => "The request says it began in the future",
            Self::MalformedFirstSent => "Repeatability-First-Sent is malformed",
        }
    }

    /// The HTTP status of this kind (for [`ProblemKind::BodyNotStored`] and
    /// [`ProblemKind::BodyFailed`], the replay uses the stored status instead).
    pub const fn status(self) -> StatusCode {
        match self {
            Self::MissingKey
            | Self::MalformedKey
            | Self::BodyUnreadable
            | Self::KeyFromFuture
            | Self::MalformedFirstSent => StatusCode::BAD_REQUEST,
            // As the OASIS Repeatable Requests spec and Azure answer a first-sent time outside
            // the window they track: the condition the request states in a header (it began
            // within the endpoint's lifetime) is false.
            Self::KeyExpired => StatusCode::PRECONDITION_FAILED,
            Self::ScopeUnresolved => StatusCode::UNAUTHORIZED,
            Self::InFlight => StatusCode::CONFLICT,
            Self::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::HandlerPanicked | Self::StoreNotConfigured | Self::TransactionUnavailable => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::StoreUnavailable | Self::StoreRecovering => StatusCode::SERVICE_UNAVAILABLE,
            Self::BodyNotStored | Self::BodyFailed => StatusCode::OK,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

/// An RFC 9457 problem: turns into an `application/problem+json` response.
#[derive(Debug, Clone)]
pub struct Problem {
    kind: ProblemKind,
    status: StatusCode,
    detail: String,
    retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    r#type: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

impl Problem {
    /// A problem of `kind` with a `detail` for this occurrence.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self { kind, status: kind.status(), detail: detail.into(), retry_after: None }
    }

    /// Adds a `Retry-After` header, in seconds.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub(crate) fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The kind of this problem.
    pub fn kind(&self) -> ProblemKind {
        self.kind
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The occurrence's explanation.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The `Retry-After` the response carries, in seconds, if any.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        self.retry_after
    }

    // Every problem idem answers with, named; the only place their details are written.

    pub(crate) fn missing_key() -> Self {
        Self::new(
            ProblemKind::MissingKey,
            "this endpoint requires an Idempotency-Key header: 1 to 255 visible ASCII characters, e.g. a UUID",
        )
    }

    pub(crate) fn malformed_key(error: &crate::key::KeyError) -> Self {
        Self::new(ProblemKind::MalformedKey, error.to_string())
    }

    /// `scope = "pat"` without `Authorization`.
    pub(crate) fn no_credential() -> Self {
        Self::new(
            ProblemKind::ScopeUnresolved,
            "this endpoint keeps idempotency keys per credential; send an Authorization header",
        )
    }

    /// `scope = header("…")` without that header.
    pub(crate) fn no_scope_header(name: &http::HeaderName) -> Self {
        Self::new(
            ProblemKind::ScopeUnresolved,
            format!("this endpoint keeps idempotency keys per {name}; send that header"),
        )
    }

    pub(crate) fn in_flight() -> Self {
        Self::new(
            ProblemKind::InFlight,
            "a request with this Idempotency-Key is still running; retry after the indicated delay to get its response",
        )
        .retry_after(1)
    }

    pub(crate) fn key_reused() -> Self {
        Self::new(
            ProblemKind::KeyReused,
            "this Idempotency-Key was used for a different request (method, target, parameters or body); use a new key for a new request",
        )
    }

    pub(crate) fn handler_panicked() -> Self {
        Self::new(
            ProblemKind::HandlerPanicked,
            "the handler panicked; nothing was stored and a retry with the same key runs it again",
        )
    }

    pub(crate) fn store_unavailable() -> Self {
        Self::new(ProblemKind::StoreUnavailable, "the idempotency store is unreachable; retry later").retry_after(1)
    }

    pub(crate) fn store_not_configured() -> Self {
        Self::new(
            ProblemKind::StoreNotConfigured,
            "this endpoint is not behind the idempotency store its application configured; the request was not run",
        )
    }

    pub(crate) fn store_recovering(retry_after: std::time::Duration) -> Self {
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        Self::new(
            ProblemKind::StoreRecovering,
            "the idempotency store lost track of requests that may still be running; retry after the indicated delay",
        )
        .retry_after(seconds.max(1))
    }

    pub(crate) fn body_not_stored(status: StatusCode) -> Self {
        Self::new(
            ProblemKind::BodyNotStored,
            "the request was executed; its status and headers are replayed, but its body was larger than the store keeps",
        )
        .with_status(status)
    }

    pub(crate) fn body_failed(status: StatusCode) -> Self {
        Self::new(
            ProblemKind::BodyFailed,
            "the request was executed; its status and headers are replayed, but its body failed while it was produced",
        )
        .with_status(status)
    }

    #[cfg(feature = "postgres")]
    pub(crate) fn transaction_unavailable(detail: &str) -> Self {
        Self::new(ProblemKind::TransactionUnavailable, format!("{detail}; nothing was committed"))
    }

    pub(crate) fn body_too_large() -> Self {
        Self::new(ProblemKind::BodyTooLarge, "the request body is larger than this endpoint accepts")
    }

    pub(crate) fn body_unreadable(error: &axum::Error) -> Self {
        Self::new(ProblemKind::BodyUnreadable, format!("the request body could not be read: {error}"))
    }

    pub(crate) fn key_expired(late: &crate::lifetime::Late) -> Self {
        use crate::lifetime::compact;
        Self::new(
            ProblemKind::KeyExpired,
            format!(
                "this request's logical call began {} ago according to {}, and this endpoint keeps responses for {} (plus {} allowed for clock skew): whether the original request took effect is unknown, and it was not run again; check whether the operation happened before sending it again under a new key",
                compact(late.age),
                late.source.describe(),
                compact(late.ttl),
                compact(crate::key::MAX_CLOCK_SKEW),
            ),
        )
    }

    pub(crate) fn key_from_future(early: &crate::lifetime::Early) -> Self {
        use crate::lifetime::compact;
        Self::new(
            ProblemKind::KeyFromFuture,
            format!(
                "this request's logical call begins {} from now according to {}, more than the {} allowed for clock skew: the client's clock is probably wrong; the request was not run, correct the clock and send it again under a new key",
                compact(early.ahead),
                early.source.describe(),
                compact(crate::key::MAX_CLOCK_SKEW),
            ),
        )
    }

    pub(crate) fn malformed_first_sent() -> Self {
        Self::new(
            ProblemKind::MalformedFirstSent,
            "the Repeatability-First-Sent header must be one HTTP-date, such as \"Sun, 06 Nov 1994 08:49:37 GMT\"; the request was not run",
        )
    }

    /// The body as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&Body {
            r#type: self.kind.type_uri(),
            title: self.kind.title(),
            status: self.status.as_u16(),
            detail: &self.detail,
        })
        .expect("a problem always serializes")
    }

    /// The `application/problem+json` response.
    pub(crate) fn to_response(&self) -> Response {
        let mut response = (self.status, self.to_json()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The problem a response was made from, kept in its extensions so that a layer's hooks can
/// shape a problem that reached them as a response (a scope that cannot be resolved).
#[derive(Clone)]
pub(crate) struct MadeFrom(pub(crate) Problem);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = self.to_response();
        response.extensions_mut().insert(MadeFrom(self));
        response
    }
}
