//! The seams the engine owns: how a claimed call runs once (the steps every owner shares), and
//! where an optional mode (the transactional one) plugs in to run a request its own way.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use axum::response::Response;
use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use http::request::Parts;

use crate::call::Call;
use crate::config::HandlerConfig;
use crate::fingerprint::Fingerprint;
use crate::layer::Idempotency;
use crate::store::DynStore;

/// A handler's call, boxed to cross the seam.
pub(crate) type Handler = Pin<Box<dyn Future<Output = Response> + Send>>;

/// A way of running a request other than the engine's own (claim in the store, run, store the
/// response): one a handler's parameter chose, such as running it in a database transaction
/// that commits its writes with the record.
pub(crate) trait Mode: Send + Sync {
    /// A covered request, whose key is not claimed yet.
    fn run_covered(
        self: Arc<Self>,
        call: Call,
        fingerprint: Fingerprint,
        handler: Handler,
    ) -> BoxFuture<'static, Response>;

    /// A request without a key (an `optional` handler, a safe method).
    fn run_uncovered(self: Arc<Self>, config: HandlerConfig, handler: Handler) -> BoxFuture<'static, Response>;

    /// Where this mode keeps a covered request's record when the router configures no store of
    /// its own (`layer` is the process's default): the request's steps are kept there too.
    /// `None`: in the layer's store.
    fn records_without_a_layer(&self, layer: &Idempotency) -> Option<Arc<dyn DynStore>>;
}

/// Where a parameter of an annotated handler plugs a [`Mode`] into its request. The hidden
/// first extractor offers one in the request's extensions, before the handler's parameters are
/// extracted; the engine reads it when the handler is called.
#[derive(Default)]
pub(crate) struct Plug(OnceLock<Arc<dyn Mode>>);

impl Plug {
    /// Whether a mode can plug in at all: only one built with this crate's features does.
    const AVAILABLE: bool = cfg!(feature = "postgres");

    /// A plug for this request's parameters to find; none (and no allocation) when no mode is
    /// built in.
    pub(crate) fn offer(parts: &mut Parts) -> Option<Arc<Self>> {
        Self::AVAILABLE.then(|| {
            let plug = Arc::new(Self::default());
            parts.extensions.insert(plug.clone());
            plug
        })
    }

    /// Plugs `mode` in; `false` when one is already.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn plug(&self, mode: Arc<dyn Mode>) -> bool {
        self.0.set(mode).is_ok()
    }

    /// The mode a parameter plugged in, if any.
    pub(crate) fn mode(&self) -> Option<&Arc<dyn Mode>> {
        self.0.get()
    }
}

/// The owner of a claim, however it keeps the outcome (the store's record, or a transaction's
/// commit): what [`execute`] needs of it.
pub(crate) trait Claimed: Send + Sized {
    /// The request it owns the claim of.
    fn call(&mut self) -> &mut Call;

    /// The handler panicked: nothing of it is kept, and a retry runs it again.
    fn panicked(self) -> impl Future<Output = Response> + Send;

    /// The handler answered with a status that is not kept: the key is freed, and the answer
    /// sent as it is.
    fn give_up(self, response: Response) -> impl Future<Output = Response> + Send;

    /// The handler answered with a status that is kept: keep it, and answer.
    fn keep(self, response: Response) -> impl Future<Output = Response> + Send;
}

/// Runs the handler once for the claim's `owner`: the handler's time is its own, not idem's; a
/// panic is caught; and the status rule decides whether its answer is kept.
pub(crate) async fn execute<O, F>(mut owner: O, handler: F) -> Response
where
    O: Claimed,
    F: Future<Output = Response> + Send,
{
    owner.call().watch.pause();
    let ran = AssertUnwindSafe(handler).catch_unwind().await;
    owner.call().watch.resume();
    match ran {
        Err(_panic) => owner.panicked().await,
        Ok(response) if owner.call().config.stores(response.status()) => owner.keep(response).await,
        Ok(response) => owner.give_up(response).await,
    }
}
