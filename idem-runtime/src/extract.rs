//! The extractors an annotated handler gains: the hidden first one reads the key, resolves the
//! scope and starts the fingerprint before any other extractor runs; each selected parameter is
//! wrapped so that the input it read (its part of the head, or the buffered body) is digested.

use std::marker::PhantomData;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Request};
use axum::response::{IntoResponse, Response};
use axum::RequestExt as _;
use bytes::{Bytes, BytesMut};
use http::{request::Parts, HeaderName, Method};
use http_body_util::BodyExt as _;

use crate::call::{Call, Route};
use crate::config::HandlerSpec;
use crate::fingerprint::{FingerprintBuilder, FingerprintSource, RequestInput};
use crate::layer::Idempotency;
use crate::mode::Plug;
use crate::observe::{self, Digests, Stopwatch};
use crate::outcome::{self, Answer, Seen};
use crate::problem::Problem;
use crate::record::X_REQUEST_ID;
use crate::steps::StepsSlot;
use crate::store::RecordKey;

/// Present in a request's extensions when its fingerprint is needed: the record it addresses,
/// and the digests of the selected parameters, which add their time to idem's.
#[derive(Clone)]
pub(crate) struct Fingerprinting(RecordKey, Digests);

impl Fingerprinting {
    /// The record a covered request addresses, when `parts` is one.
    pub(crate) fn record(parts: &Parts) -> Option<RecordKey> {
        parts.extensions.get::<Self>().map(|Self(record, _)| *record)
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// The hidden first extractor of an annotated handler: reads the key and scope before any
/// other extractor runs.
#[doc(hidden)]
pub struct IdempotencyContext<C> {
    /// `None` when the request is not covered: a safe method, or no key on an `optional` handler.
    /// Boxed: the handler's futures move this value several times before it runs, and a pointer
    /// moves for less than the request's state.
    pub(crate) covered: Option<Box<Covered>>,
    /// Where a parameter of the handler may plug in another way of running the request (a
    /// `Tx` parameter, the transactional one); `None` when no such mode is built in.
    pub(crate) plug: Option<std::sync::Arc<Plug>>,
    _spec: PhantomData<fn() -> C>,
}

impl<C> std::fmt::Debug for IdempotencyContext<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyContext").field("covered", &self.covered.is_some()).finish()
    }
}

/// A covered request before its claim: the request and the start of its fingerprint.
pub(crate) struct Covered {
    pub(crate) call: Call,
    pub(crate) fingerprint: FingerprintBuilder,
    /// Where the handler's steps are kept, when it takes `Steps`.
    pub(crate) steps: Option<std::sync::Arc<StepsSlot>>,
}

impl<S: Send + Sync, C: HandlerSpec> FromRequestParts<S> for IdempotencyContext<C> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let plug = Plug::offer(parts);
        // A handler that takes `Steps` finds where they are kept; it stays empty (steps just
        // run) unless the request is covered.
        let steps = C::CONFIG.steps.then(|| {
            let slot = std::sync::Arc::new(StepsSlot::default());
            parts.extensions.insert(slot.clone());
            slot
        });
        let inactive = Self { covered: None, plug: plug.clone(), _spec: PhantomData };
        if is_safe(&parts.method) {
            return Ok(inactive);
        }
        let config = C::CONFIG;
        let started = Instant::now();
        let reject = |parts: &Parts, response: Response| Err(reject(parts, started, response));
        let extra = config.header.map(HeaderName::from_static);
        let key = match crate::key::find_key(&parts.headers, extra.as_ref()) {
            Ok(Some(key)) => key,
            Ok(None) if config.required => return reject(parts, Problem::missing_key().into_response()),
            Ok(None) => return Ok(inactive),
            Err(error) => return reject(parts, Problem::malformed_key(&error).into_response()),
        };
        let began = match config.refuse_expired.then(|| crate::lifetime::began(&key, &parts.headers)) {
            Some(Ok(began)) => began,
            Some(Err(_)) => return reject(parts, Problem::malformed_first_sent().into_response()),
            None => None,
        };
        let scope = match C::scope(parts) {
            Ok(scope) => scope,
            Err(response) => return reject(parts, response),
        };
        let record = RecordKey::of(&scope, &key);
        let route = Route::of(parts);
        let idempotency = match parts.extensions.get::<Idempotency>() {
            Some(layer) => layer.clone(),
            None if config.layer_only => {
                tracing::error!(target: "idem", method = %observe::method_label(&parts.method), route = route.label(), "this handler takes its store from an `Idempotency` layer (`store = \"layer\"`), and its route is not behind one: a route added after the layer, or merged in from a router without it; the request is refused, put the route behind the layer");
                return Err(end_early(parts, started, |seen| outcome::answer(seen, Answer::StoreNotConfigured)));
            }
            None => Idempotency::embedded_for(&parts.method, route.label()),
        };
        // Judged on the store's clock, the one its records expire by.
        let late = match began.map(|began| began.judge(idempotency.store.now(), config.ttl)) {
            Some(Ok(late)) => late,
            Some(Err(early)) => return reject(parts, Problem::key_from_future(&early).into_response()),
            None => None,
        };
        // The target as the client sent it: the outermost router keeps it before nesting or a
        // layer changes the URI the handler sees.
        let target = parts.extensions.get::<OriginalUri>().map_or(&parts.uri, |original| &original.0);
        let fingerprint = FingerprintBuilder::new(&key, &parts.method, route.as_str(), target);
        let request_id = parts.headers.get(X_REQUEST_ID).cloned();
        let mut call = Call::new(idempotency, record, parts.method.clone(), route, config, started, request_id);
        call.late = late;
        parts.extensions.insert(Fingerprinting(record, call.watch.digests()));
        Ok(Self { covered: Some(Box::new(Covered { call, fingerprint, steps })), ..inactive })
    }
}

/// Reports a covered request refused before its claim, and gives its response as the layer's
/// hooks shape it.
pub(crate) fn reject(parts: &Parts, started: Instant, response: Response) -> Response {
    end_early(parts, started, |seen| outcome::reject(seen, response))
}

/// Ends a covered request before its claim: `end` reports it and gives its response, with the
/// hooks of the layer it is behind, if any.
fn end_early(parts: &Parts, started: Instant, end: impl FnOnce(&Seen<'_>) -> Response) -> Response {
    let hooks = parts.extensions.get::<Idempotency>().map(|layer| layer.hooks.clone()).unwrap_or_default();
    let route = Route::of(parts);
    let span = observe::span(&parts.method, route.label());
    end(&Seen {
        method: &parts.method,
        route: route.label(),
        request_id: parts.headers.get(X_REQUEST_ID),
        started,
        span: &span,
        hooks: &hooks,
        watch: &Stopwatch::new(started),
    })
}

/// A handler parameter that is part of the fingerprint: the extracted value plus the digest of
/// its input.
#[doc(hidden)]
#[derive(Debug)]
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

impl<S, E> FromRequestParts<S> for Fingerprinted<E>
where
    S: Send + Sync,
    E: FromRequestParts<S> + FingerprintSource,
{
    type Rejection = E::Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let value = E::from_request_parts(parts, state).await?;
        let digest = parts
            .extensions
            .get::<Fingerprinting>()
            .map(|Fingerprinting(_, digests)| digests.time(|| E::digest(&RequestInput::parts(parts))));
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
        let Some(Fingerprinting(record, digests)) = req.extensions().get::<Fingerprinting>().cloned() else {
            let value = E::from_request(req, state).await.map_err(IntoResponse::into_response)?;
            return Ok(Self { value, digest: None });
        };
        let (parts, body) = req.with_limited_body().into_parts();
        let bytes = match read_whole(body).await {
            Ok(bytes) => bytes,
            // Reported like every refusal of a covered request, and shaped by the layer's hooks.
            Err(error) => return Err(reject(&parts, Instant::now(), body_problem(error).into_response())),
        };
        let digest = Some(digests.time(|| E::digest(&RequestInput::with_body(&parts, &bytes, record))));
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

fn body_problem(error: axum::Error) -> Problem {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return Problem::body_too_large();
        }
        source = e.source();
    }
    Problem::body_unreadable(&error)
}
