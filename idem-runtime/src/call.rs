//! One covered request as every step after its extraction sees it: its key's record, its route,
//! its handler's configuration, its stopwatch, and the one report of how it ended.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::MatchedPath;
use axum::response::Response;
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode};

use crate::config::HandlerConfig;
use crate::fingerprint::Fingerprint;
use crate::layer::Idempotency;
use crate::lifetime::Late;
use crate::observe::{self, HeldClaim, Stopwatch};
use crate::outcome::{self, Answer, Outcome, Seen};
use crate::record::{replayable_headers_only, Record, StoredBody, X_REQUEST_ID};
use crate::store::RecordKey;

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
    pub(crate) span: tracing::Span,
    /// The time idem itself spends on the request; paused while the handler runs.
    pub(crate) watch: Stopwatch,
    /// Set when the request's logical call began longer ago than the handler keeps responses:
    /// a record is replayed as usual, but without one the request is refused, never run.
    pub(crate) late: Option<Late>,
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

    /// Reports the replay of `record`, and gives it (moved out when no one else shares it).
    pub(crate) fn replay(&self, record: Arc<Record>) -> Response {
        self.report(Outcome::Replayed(record.status));
        Arc::try_unwrap(record).map_or_else(|shared| shared.replay(), Record::into_replay)
    }
}

/// The route label of a request without a matched route template. No template can be it: they
/// start with `/`.
pub(crate) const UNMATCHED: &str = "unmatched";

/// The matched route template, or the path for a handler called outside a `Router`.
#[derive(Clone)]
pub(crate) enum Route {
    /// Shares the router's string: no copy per request.
    Matched(MatchedPath),
    Path(String),
}

impl Route {
    pub(crate) fn of(parts: &Parts) -> Self {
        match parts.extensions.get::<MatchedPath>() {
            Some(path) => Self::Matched(path.clone()),
            None => Self::Path(parts.uri.path().to_owned()),
        }
    }

    /// The template, or the path: what the fingerprint binds.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::Matched(path) => path.as_str(),
            Self::Path(path) => path,
        }
    }

    /// What observation (events, spans, metrics, hooks) names the route by: its template, or
    /// [`UNMATCHED`] for a request that matched none (an annotated fallback, a handler called
    /// outside a `Router`). Never the path a client sent, which is unbounded and may carry tokens.
    pub(crate) fn label(&self) -> &str {
        match self {
            Self::Matched(path) => path.as_str(),
            Self::Path(_) => UNMATCHED,
        }
    }
}
