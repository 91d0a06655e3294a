//! The state machine behind every annotated handler: claim, run, store, replay.

use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, OriginalUri, Request};
use axum::response::{IntoResponse, Response};
use axum::RequestExt as _;
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use http::{request::Parts, HeaderName, Method, StatusCode};
use http_body_util::BodyExt as _;
use tracing::Instrument as _;

use crate::capture;
use crate::config::{HandlerConfig, HandlerSpec};
use crate::fingerprint::{Fingerprint, FingerprintBuilder, FingerprintSource, FingerprintWriter, RequestInput};
use crate::key::IdempotencyKey;
use crate::lease::{self, HeldLease};
use crate::problem::{Problem, ProblemKind};
use crate::record::{replayable_headers_only, Record, StoredBody};
use crate::store::{Claim, DynStore, FencingToken, MemoryStore, RecordKey, Store, StoreError};

/// The store (and store-wide policy) every annotated handler under a [`Router`] uses.
///
/// Without one, annotated handlers share a process-wide [`MemoryStore`] with default bounds.
/// Add it as a layer to swap the store for every annotated route added before it:
///
/// ```
/// use axum::{routing::post, Router};
/// use idem_runtime::{idempotent, store::MemoryStore, Idempotency};
///
/// #[idempotent]
/// async fn create() -> &'static str { "created" }
///
/// let store = MemoryStore::builder().max_entries(50_000).build();
/// let app: Router = Router::new().route("/things", post(create)).layer(Idempotency::new(store));
/// ```
///
/// [`Router`]: axum::Router
#[derive(Clone)]
pub struct Idempotency {
    pub(crate) store: Arc<dyn DynStore>,
    fail_open: bool,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency").field("fail_open", &self.fail_open).finish_non_exhaustive()
    }
}

impl Idempotency {
    /// Uses `store` for every annotated handler behind this layer.
    pub fn new(store: impl Store) -> Self {
        Self { store: Arc::new(store), fail_open: false }
    }

    /// When the store is unreachable, run handlers without idempotency (and log a warning)
    /// instead of answering 503. Off by default: failing closed never runs a side effect twice.
    pub fn fail_open(mut self, fail_open: bool) -> Self {
        self.fail_open = fail_open;
        self
    }

    fn process_default() -> Self {
        static DEFAULT: OnceLock<Idempotency> = OnceLock::new();
        DEFAULT.get_or_init(|| Idempotency::new(MemoryStore::new())).clone()
    }
}

impl<S> tower_layer::Layer<S> for Idempotency {
    type Service = WithIdempotency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithIdempotency { inner, idempotency: self.clone() }
    }
}

/// The service [`Idempotency`] wraps routes in: it hands the store to annotated handlers.
#[derive(Clone, Debug)]
pub struct WithIdempotency<S> {
    inner: S,
    idempotency: Idempotency,
}

impl<S, B> tower_service::Service<http::Request<B>> for WithIdempotency<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.idempotency.clone());
        self.inner.call(req)
    }
}

/// Present in a request's extensions when its fingerprint is needed.
#[derive(Clone, Copy)]
struct Fingerprinting;

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// The matched route template, or the path for a handler called outside a `Router`.
#[derive(Clone)]
pub(crate) enum Route {
    /// Shares the router's string: no copy per request.
    Matched(MatchedPath),
    Path(String),
}

impl Route {
    fn of(parts: &Parts) -> Self {
        match parts.extensions.get::<MatchedPath>() {
            Some(path) => Self::Matched(path.clone()),
            None => Self::Path(parts.uri.path().to_owned()),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::Matched(path) => path.as_str(),
            Self::Path(path) => path,
        }
    }
}

/// The hidden first extractor of an annotated handler: reads the key and scope before any
/// other extractor runs.
#[doc(hidden)]
pub struct IdempotencyContext<C> {
    active: Option<Active>,
    _spec: PhantomData<fn() -> C>,
}

/// A covered request, before its claim: where it goes and what it is.
struct Active {
    call: Call,
    fingerprint: FingerprintBuilder,
}

/// What every step of a covered request needs to know about it.
pub(crate) struct Call {
    pub(crate) idempotency: Idempotency,
    pub(crate) key: RecordKey,
    method: Method,
    pub(crate) route: Route,
    pub(crate) config: HandlerConfig,
    started: Instant,
}

impl<S: Send + Sync, C: HandlerSpec> FromRequestParts<S> for IdempotencyContext<C> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let inactive = Self { active: None, _spec: PhantomData };
        if is_safe(&parts.method) {
            return Ok(inactive);
        }
        let config = C::CONFIG;
        let started = Instant::now();
        let rejected = |parts: &Parts, status: u16| {
            outcome_event(&parts.method, Route::of(parts).as_str(), status, "rejected", started);
        };
        let reject = |problem: Problem| {
            rejected(parts, problem.kind().status().as_u16());
            Err(problem.into_response())
        };
        let extra = config.header.map(HeaderName::from_static);
        let key =
            match IdempotencyKey::from_headers(&parts.headers, extra.as_ref()) {
                Ok(Some(key)) => key,
                Ok(None) if config.required => return reject(Problem::new(
                    ProblemKind::MissingKey,
                    "this endpoint requires an Idempotency-Key header: 1 to 255 visible ASCII characters, e.g. a UUID",
                )),
                Ok(None) => return Ok(inactive),
                Err(e) => return reject(Problem::new(ProblemKind::MalformedKey, e.to_string())),
            };
        let scope = match C::scope(parts) {
            Ok(scope) => scope,
            Err(response) => {
                rejected(parts, response.status().as_u16());
                return Err(response);
            }
        };
        let idempotency = parts.extensions.get::<Idempotency>().cloned().unwrap_or_else(Idempotency::process_default);
        parts.extensions.insert(Fingerprinting);
        let route = Route::of(parts);
        // The target as the client sent it: the outermost router keeps it before nesting or a
        // layer changes the URI the handler sees.
        let target = parts.extensions.get::<OriginalUri>().map_or(&parts.uri, |original| &original.0);
        let fingerprint = FingerprintBuilder::new(&key, &parts.method, route.as_str(), target);
        let call = Call {
            idempotency,
            key: RecordKey::new(&scope, &key),
            method: parts.method.clone(),
            route,
            config,
            started,
        };
        Ok(Self { active: Some(Active { call, fingerprint }), _spec: PhantomData })
    }
}

fn outcome_event(method: &Method, route: &str, status: u16, outcome: &'static str, started: Instant) {
    tracing::info!(
        target: "idem",
        %method,
        route,
        outcome,
        status,
        elapsed_us = started.elapsed().as_micros() as u64,
        "idempotent request"
    );
}

impl<C: HandlerSpec> IdempotencyContext<C> {
    /// Runs `handler` under the idempotency contract, given the digests of the selected
    /// parameters (in parameter order).
    pub async fn run<F>(self, params: &[Option<[u8; 32]>], handler: F) -> Response
    where
        F: Future<Output = Response> + Send + 'static,
    {
        match self.active {
            None => handler.await,
            Some(Active { call, fingerprint }) => call.run(fingerprint.finish(params), handler).await,
        }
    }
}

impl Call {
    pub(crate) fn event(&self, status: u16, outcome: &'static str) {
        outcome_event(&self.method, self.route.as_str(), status, outcome, self.started);
    }

    async fn run<F>(self, fingerprint: Fingerprint, handler: F) -> Response
    where
        F: Future<Output = Response> + Send + 'static,
    {
        let lease = self.config.lease;
        let give_up = Instant::now() + lease;
        let mut pause = Duration::from_millis(5);
        let token = loop {
            match self.idempotency.store.claim(&self.key, &fingerprint, lease).await {
                Ok(Claim::Acquired(token)) => break token,
                Ok(Claim::Completed(record)) => {
                    self.event(record.status.as_u16(), "replayed");
                    return Arc::try_unwrap(record).map_or_else(|shared| shared.replay(), Record::into_replay);
                }
                Ok(Claim::Mismatch) => {
                    self.event(422, "mismatch");
                    return Problem::new(
                        ProblemKind::KeyReused,
                        "this Idempotency-Key was used for a different request (method, target, parameters or body); use a new key for a new request",
                    )
                    .into_response();
                }
                Ok(Claim::InFlight { .. }) if self.config.wait && Instant::now() < give_up => {
                    tokio::time::sleep(pause.min(give_up.saturating_duration_since(Instant::now()))).await;
                    pause = (pause * 2).min(Duration::from_millis(250));
                }
                Ok(Claim::InFlight { .. }) => {
                    self.event(409, "conflict");
                    return Problem::new(
                        ProblemKind::InFlight,
                        "a request with this Idempotency-Key is still running; retry after the indicated delay to get its response",
                    )
                    .retry_after(1)
                    .into_response();
                }
                // Never run without idempotency here, fail-open or not: the store is reachable but
                // may have lost claims of handlers still running.
                Err(StoreError::Recovering { retry_after }) => {
                    tracing::warn!(target: "idem", route = self.route.as_str(), ?retry_after, "the store lost in-flight claims; answering 503 until every lease that may be running has run out");
                    self.event(503, "store-recovering");
                    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                    return Problem::new(
                        ProblemKind::StoreRecovering,
                        "the idempotency store lost track of requests that may still be running; retry after the indicated delay",
                    )
                    .retry_after(seconds.max(1))
                    .into_response();
                }
                Err(error) if self.idempotency.fail_open => {
                    tracing::warn!(target: "idem", route = self.route.as_str(), %error, "store unavailable; running the handler without idempotency (fail-open)");
                    let response = handler.await;
                    self.event(response.status().as_u16(), "executed-fail-open");
                    return response;
                }
                Err(error) => {
                    tracing::error!(target: "idem", route = self.route.as_str(), %error, "store unavailable; answering 503");
                    self.event(503, "store-error");
                    return Problem::new(
                        ProblemKind::StoreUnavailable,
                        "the idempotency store is unreachable; retry later",
                    )
                    .retry_after(1)
                    .into_response();
                }
            }
        };
        let held = lease::hold(&self.idempotency.store, self.key, token, lease);
        held.let_keeper_start().await;
        let owner = Owner { call: self, token, fingerprint, _lease: held };
        // A client that disconnects drops this future; the handler then finishes in a task of
        // its own and its response is stored for the retry.
        RunToCompletion(Some(Box::pin(owner.execute(handler).in_current_span()))).await
    }
}

/// A request that holds the claim of its key: it runs the handler, then either stores the
/// response or releases the key. Its lease is renewed for as long as it exists.
pub(crate) struct Owner {
    pub(crate) call: Call,
    token: FencingToken,
    fingerprint: Fingerprint,
    _lease: HeldLease,
}

impl Owner {
    async fn execute<F>(self, handler: F) -> Response
    where
        F: Future<Output = Response> + Send + 'static,
    {
        let response = match AssertUnwindSafe(handler).catch_unwind().await {
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
        let call = self.release_quietly().await;
        call.event(500, "panicked");
        Problem::new(
            ProblemKind::HandlerPanicked,
            "the handler panicked; nothing was stored and a retry with the same key runs it again",
        )
        .into_response()
    }

    /// The response is not stored: the key is released so that a retry runs the handler again.
    async fn release(self, status: StatusCode) {
        let call = self.release_quietly().await;
        call.event(status.as_u16(), "executed-not-stored");
    }

    async fn release_quietly(self) -> Call {
        if let Err(error) = self.call.idempotency.store.release(&self.call.key, self.token).await {
            tracing::error!(target: "idem", route = self.call.route.as_str(), %error, "could not release a claim; retries get 409 until its lease expires");
        }
        self.call
    }

    /// Stores the response: status, the headers a replay repeats, and what was kept of the body.
    pub(crate) async fn complete(self, status: StatusCode, headers: &http::HeaderMap, body: StoredBody) {
        // An absurd ttl saturates instead of overflowing the clock.
        let now = self.call.idempotency.store.now();
        let expires_at = now.checked_add(self.call.config.ttl).unwrap_or(now + Duration::from_secs(1 << 40));
        let record = Record {
            fingerprint: self.fingerprint,
            status,
            headers: replayable_headers_only(headers, self.call.config.replay_headers),
            body,
            expires_at,
        };
        let store = &self.call.idempotency.store;
        match store.complete(&self.call.key, self.token, record.clone()).await {
            Ok(()) => self.call.event(status.as_u16(), "executed"),
            Err(StoreError::LeaseLost) => {
                tracing::error!(target: "idem", route = self.call.route.as_str(), "the handler ran but its lease was taken over; its response is not stored");
                self.call.event(status.as_u16(), "executed-not-stored");
            }
            Err(error) => {
                tracing::warn!(target: "idem", route = self.call.route.as_str(), %error, "the handler ran but the store is unreachable; storing its response once the store is back");
                self.call.event(status.as_u16(), "executed-store-pending");
                tokio::spawn(self.complete_later(record));
            }
        }
    }

    /// Stores a response whose first `complete` found the store unreachable: retries with
    /// backoff until it is stored, the claim was taken over, or the record would already have
    /// expired. The lease is renewed all the while, so an outage never lets a retry run the
    /// handler a second time while this owner still holds its response.
    async fn complete_later(self, record: Record) {
        let route = self.call.route.as_str();
        let mut pause = Duration::from_millis(100);
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
            if record.is_expired_at(self.call.idempotency.store.now()) {
                tracing::error!(target: "idem", route, "the store stayed unreachable for the record's whole ttl; it was never stored");
                return;
            }
            match self.call.idempotency.store.complete(&self.call.key, self.token, record.clone()).await {
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

/// Polls the handler (and the storing of its response) in place, and when dropped before it
/// finished (the client went away), hands it to a task of its own to run to completion. The
/// common path costs no task spawn.
struct RunToCompletion(Option<Pin<Box<dyn Future<Output = Response> + Send>>>);

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

/// A handler parameter that is part of the fingerprint: the extracted value plus the digest of
/// its input.
#[doc(hidden)]
pub struct Fingerprinted<E> {
    value: E,
    digest: Option<[u8; 32]>,
}

impl<E> Fingerprinted<E> {
    pub fn digest(&self) -> Option<[u8; 32]> {
        self.digest
    }

    pub fn into_inner(self) -> E {
        self.value
    }
}

fn digest_of<E: FingerprintSource>(input: &RequestInput<'_>) -> [u8; 32] {
    let mut writer = FingerprintWriter::new();
    E::write(input, &mut writer);
    writer.finish()
}

impl<S, E> FromRequestParts<S> for Fingerprinted<E>
where
    S: Send + Sync,
    E: FromRequestParts<S> + FingerprintSource,
{
    type Rejection = E::Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let value = E::from_request_parts(parts, state).await?;
        let digest = parts.extensions.get::<Fingerprinting>().map(|_| digest_of::<E>(&RequestInput::parts(parts)));
        Ok(Self { value, digest })
    }
}

impl<S, E> FromRequest<S> for Fingerprinted<E>
where
    S: Send + Sync,
    E: FromRequest<S> + FingerprintSource,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        if req.extensions().get::<Fingerprinting>().is_none() {
            let value = E::from_request(req, state).await.map_err(IntoResponse::into_response)?;
            return Ok(Self { value, digest: None });
        }
        let (parts, body) = req.with_limited_body().into_parts();
        let bytes = read_whole(body).await.map_err(body_problem)?;
        let digest = Some(digest_of::<E>(&RequestInput::with_body(&parts, &bytes)));
        let req = Request::from_parts(parts, Body::from(bytes));
        let value = E::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        Ok(Self { value, digest })
    }
}

/// The whole body: a body in one frame as it is (no copy, no buffer list), several joined.
async fn read_whole(mut body: Body) -> Result<Bytes, axum::Error> {
    let mut first = Bytes::new();
    let mut joined = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        if first.is_empty() && joined.is_empty() {
            first = data;
        } else {
            if joined.is_empty() {
                joined.extend_from_slice(&first);
            }
            joined.extend_from_slice(&data);
        }
    }
    Ok(if joined.is_empty() { first } else { joined.freeze() })
}

fn body_problem(error: axum::Error) -> Response {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return Problem::new(ProblemKind::BodyTooLarge, "the request body is larger than this endpoint accepts")
                .into_response();
        }
        source = e.source();
    }
    Problem::new(ProblemKind::BodyUnreadable, format!("the request body could not be read: {error}")).into_response()
}
