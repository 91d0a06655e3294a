//! The layer users name: [`Idempotency`] sets the store (and store-wide policy) for every
//! annotated route behind it; [`WithIdempotency`] is the service it wraps routes in, which
//! hands that configuration to the annotated handlers through the request's extensions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::response::Response;

use crate::hooks::{Hooks, RequestOutcome};
use crate::observe;
use crate::problem::Problem;
use crate::store::{DynStore, MemoryStore, Store};

/// The store (and store-wide policy) every annotated handler under a [`Router`] uses, and the
/// hooks that shape idem's own problems and observe outcomes there
/// ([`shape_problems`](Idempotency::shape_problems), [`on_outcome`](Idempotency::on_outcome)).
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
/// A route added after the layer, or merged in from a router without it, is not behind it: a
/// covered request to it uses the process's embedded store (with a `warn` event naming the
/// route), or, when its handler says `#[idempotent(store = "layer")]`, is refused with a 500
/// `store-not-configured` problem and an `error` event naming the route.
///
/// [`Router`]: axum::Router
#[derive(Clone)]
pub struct Idempotency {
    pub(crate) store: Arc<dyn DynStore>,
    pub(crate) fail_open: bool,
    pub(crate) hooks: Hooks,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("fail_open", &self.fail_open)
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

impl Idempotency {
    /// Uses `store` for every annotated handler behind this layer.
    pub fn new(store: impl Store) -> Self {
        Self { store: Arc::new(observe::timed(store)), fail_open: false, hooks: Hooks::default() }
    }

    /// When the store is unreachable, run handlers without idempotency (and log a warning)
    /// instead of answering 503. Off by default: failing closed never runs a side effect twice.
    pub fn fail_open(mut self, fail_open: bool) -> Self {
        self.fail_open = fail_open;
        self
    }

    /// Whether this is the process-wide default (no layer configured a store).
    #[cfg(feature = "postgres")]
    pub(crate) fn is_default(&self) -> bool {
        Arc::ptr_eq(&self.store, &Self::process_default().store)
    }

    /// Whether the configured store is `store` (the same table of the same database), alone or
    /// behind a [`LocalTier`](crate::store::LocalTier).
    #[cfg(feature = "postgres")]
    pub(crate) fn uses(&self, store: &crate::store::PgStore) -> bool {
        use crate::store::{LocalTier, PgStore};
        let configured = self.store.as_any();
        let configured = configured
            .downcast_ref::<PgStore>()
            .or_else(|| configured.downcast_ref::<LocalTier<PgStore>>().map(LocalTier::inner));
        configured.is_some_and(|configured| configured.same_as(store))
    }

    pub(crate) fn process_default() -> Self {
        static DEFAULT: OnceLock<Idempotency> = OnceLock::new();
        DEFAULT.get_or_init(|| Idempotency::new(MemoryStore::new())).clone()
    }

    /// The store of a covered request that reached its handler without a layer: the process's
    /// embedded store, with a warning when this process put routes behind a layer (the route may
    /// have been meant to be behind it too).
    pub(crate) fn embedded_for(method: &http::Method, route: &str) -> Self {
        if LAYER_APPLIED.load(Ordering::Relaxed) {
            tracing::warn!(
                target: "idem",
                method = %crate::observe::method_label(method),
                route,
                "this route is not behind an `Idempotency` layer, while other routes of this process are: it uses this process's embedded store, not theirs; put it behind the layer, or give its handler `store = \"layer\"` to refuse such requests"
            );
        }
        Self::process_default()
    }
}

/// Whether an [`Idempotency`] layer was put on a route in this process.
static LAYER_APPLIED: AtomicBool = AtomicBool::new(false);

impl<S> tower_layer::Layer<S> for Idempotency {
    type Service = WithIdempotency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LAYER_APPLIED.store(true, Ordering::Relaxed);
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

impl Idempotency {
    /// Shapes the problems idem answers itself (missing or malformed key, malformed
    /// `Repeatability-First-Sent`, a request dated in the future or past its lifetime, unresolved
    /// scope, unreadable or too large body, conflict, mismatch, unavailable or recovering store,
    /// panicked handler) to the service's own error format: `shape` returns the response to send
    /// instead, or `None` to keep idem's `application/problem+json`.
    ///
    /// The response keeps its status class (a 4xx stays a 4xx, a 5xx a 5xx; otherwise idem's
    /// own problem is sent and an error logged), idem's `Retry-After`, and never carries
    /// `Idempotent-Replayed`. See the [module docs](crate::hooks) for an example and why.
    pub fn shape_problems<F>(mut self, shape: F) -> Self
    where
        F: Fn(&Problem) -> Option<Response> + Send + Sync + 'static,
    {
        self.hooks.shape = Some(Arc::new(shape));
        self
    }

    /// Calls `observe` once per covered request behind this layer, when its outcome is known:
    /// executed, replayed, conflict, mismatch, rejected, … ([`OutcomeKind`](crate::hooks::OutcomeKind)). It sees no key and
    /// no credential, and runs on the request's path: keep it short and never block.
    pub fn on_outcome<F>(mut self, observe: F) -> Self
    where
        F: Fn(&RequestOutcome<'_>) + Send + Sync + 'static,
    {
        self.hooks.observe = Some(Arc::new(observe));
        self
    }
}
