//! The metrics of covered requests, through the `metrics` facade: whatever recorder the
//! application installed (a Prometheus exporter, …) receives them; without one they cost the
//! building of their labels.
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | `idem_requests_total` | counter | `method`, `route`, `outcome` |
//! | `idem_added_seconds` | histogram | `method`, `route`, `outcome` |
//! | `idem_store_operation_seconds` | histogram | `operation`, `result` |
//! | `idem_claims_in_flight` | gauge | `method`, `route` |

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant, SystemTime};

use http::Method;
use metrics::{Gauge, Label, SharedString, Unit};

use crate::fingerprint::Fingerprint;
use crate::hooks::OutcomeKind;
use crate::record::Record;
use crate::store::{Claim, ClaimToken, DynStore, Listener, RecordKey, Store, StoreError};

const REQUESTS: &str = "idem_requests_total";
const ADDED: &str = "idem_added_seconds";
const STORE_OPERATION: &str = "idem_store_operation_seconds";
const CLAIMS_IN_FLIGHT: &str = "idem_claims_in_flight";

/// Describes the metrics to the recorder in place when the first is recorded.
fn describe() {
    static DESCRIBED: Once = Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_counter!(REQUESTS, Unit::Count, "Covered requests, by how they ended");
        metrics::describe_histogram!(
            ADDED,
            Unit::Seconds,
            "Time idem spent on a covered request: its own extractor, fingerprint digests, the claim, any wait for a running duplicate, and storing the response; not the handler's other extractors, the handler, or the production of a streamed body"
        );
        metrics::describe_histogram!(STORE_OPERATION, Unit::Seconds, "Time of each store operation");
        metrics::describe_gauge!(CLAIMS_IN_FLIGHT, Unit::Count, "Claims this process holds: handlers running, responses being stored");
    });
}

/// The time idem spends on one covered request: from its first extractor's start, less the
/// spans it is paused for (the handler's other extractors, the handler, a streamed body's
/// production), plus the fingerprint digests taken while paused.
#[derive(Debug)]
pub(crate) struct Stopwatch {
    started: Instant,
    excluded: Duration,
    paused_at: Option<Instant>,
    digests: Digests,
}

impl Stopwatch {
    /// A watch that ran from `started` until now, and is paused: what runs next (the handler's
    /// other extractors) is not idem's.
    pub(crate) fn new(started: Instant) -> Self {
        Self { started, excluded: Duration::ZERO, paused_at: Some(Instant::now()), digests: Digests::default() }
    }

    /// Stops counting until [`Stopwatch::resume`]; nothing if paused already.
    pub(crate) fn pause(&mut self) {
        if self.paused_at.is_none() {
            self.paused_at = Some(Instant::now());
        }
    }

    /// Counts again; nothing if counting already.
    pub(crate) fn resume(&mut self) {
        if let Some(paused_at) = self.paused_at.take() {
            self.excluded += paused_at.elapsed();
        }
    }

    /// Where the fingerprint digests of the handler's parameters add their time.
    pub(crate) fn digests(&self) -> Digests {
        self.digests.clone()
    }

    fn added(&self) -> Duration {
        let now = Instant::now();
        let paused = self.paused_at.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        let own = now.saturating_duration_since(self.started).saturating_sub(self.excluded + paused);
        own + Duration::from_nanos(self.digests.0.load(Ordering::Relaxed))
    }
}

/// The time spent digesting a request's parameters for its fingerprint.
#[derive(Debug, Clone, Default)]
pub(crate) struct Digests(Arc<AtomicU64>);

impl Digests {
    /// Runs `digest`, adding its time.
    pub(crate) fn time<T>(&self, digest: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let digested = digest();
        self.0.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        digested
    }
}

/// One claim this process holds, counted in `idem_claims_in_flight` until it is dropped.
#[derive(Debug)]
pub(crate) struct HeldClaim(Gauge);

impl HeldClaim {
    pub(crate) fn new(method: &Method, route: &str) -> Self {
        describe();
        let gauge = metrics::gauge!(CLAIMS_IN_FLIGHT, request_labels(method, route, None));
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for HeldClaim {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Records a covered request's outcome: its count and the time idem added.
pub(crate) fn record(method: &Method, route: &str, kind: OutcomeKind, watch: &Stopwatch) {
    describe();
    let labels = request_labels(method, route, Some(kind));
    // The route is an `Arc`: the copy of the labels for the second metric copies no string.
    metrics::counter!(REQUESTS, labels.clone()).increment(1);
    metrics::histogram!(ADDED, labels).record(watch.added());
}

fn request_labels(method: &Method, route: &str, kind: Option<OutcomeKind>) -> Vec<Label> {
    let mut labels = Vec::with_capacity(3);
    labels.push(Label::new("method", method_name(method)));
    labels.push(Label::new("route", SharedString::from_shared(Arc::from(route))));
    if let Some(kind) = kind {
        labels.push(Label::from_static_parts("outcome", kind.as_str()));
    }
    labels
}

/// The method's bounded name (see [`super::method_label`]), never copied.
fn method_name(method: &Method) -> SharedString {
    SharedString::const_str(super::method_label(method))
}

/// A store whose every operation's time is recorded in `idem_store_operation_seconds`.
pub(crate) fn timed<S: Store>(store: S) -> Timed<S> {
    Timed(store)
}

/// See [`timed`]. It is a [`DynStore`] rather than a [`Store`], so that it hands the store
/// itself to the checks that look at which store is configured ([`DynStore::as_any`]).
pub(crate) struct Timed<S>(S);

/// The store operations, as the `operation` label names them.
#[derive(Clone, Copy)]
pub(crate) enum Operation {
    Claim,
    Complete,
    Release,
    Renew,
}

/// Runs a store operation, recording its time; the operation is started inside the timing, for a
/// store that does part of its work before its future is first polled.
pub(crate) async fn time_operation<T, F>(operation: Operation, start: impl FnOnce() -> F) -> Result<T, StoreError>
where
    F: Future<Output = Result<T, StoreError>>,
{
    describe();
    let started = Instant::now();
    let result = start().await;
    store_histogram(operation, &result).record(started.elapsed());
    result
}

/// The histogram of an operation and its result. Every label is written as a literal, so that the
/// labels are built once, not on every operation.
fn store_histogram<T>(operation: Operation, result: &Result<T, StoreError>) -> metrics::Histogram {
    macro_rules! by_result {
        ($operation:literal) => {
            match result {
                Ok(_) => metrics::histogram!(STORE_OPERATION, "operation" => $operation, "result" => "ok"),
                Err(StoreError::LeaseLost) => {
                    metrics::histogram!(STORE_OPERATION, "operation" => $operation, "result" => "lease-lost")
                }
                Err(StoreError::Unavailable(_)) => {
                    metrics::histogram!(STORE_OPERATION, "operation" => $operation, "result" => "unavailable")
                }
                Err(StoreError::Recovering { .. }) => {
                    metrics::histogram!(STORE_OPERATION, "operation" => $operation, "result" => "recovering")
                }
            }
        };
    }
    match operation {
        Operation::Claim => by_result!("claim"),
        Operation::Complete => by_result!("complete"),
        Operation::Release => by_result!("release"),
        Operation::Renew => by_result!("renew"),
    }
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

impl<S: Store> DynStore for Timed<S> {
    fn claim_owned(
        self: Arc<Self>,
        key: RecordKey,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> Boxed<'static, Claim> {
        Box::pin(time_operation(Operation::Claim, move || async move {
            Store::claim(&self.0, &key, &fingerprint, lease).await
        }))
    }

    fn complete<'a>(&'a self, key: &'a RecordKey, token: ClaimToken, record: Record) -> Boxed<'a, ()> {
        Box::pin(time_operation(Operation::Complete, move || Store::complete(&self.0, key, token, record)))
    }

    fn release<'a>(&'a self, key: &'a RecordKey, token: ClaimToken) -> Boxed<'a, ()> {
        Box::pin(time_operation(Operation::Release, move || Store::release(&self.0, key, token)))
    }

    fn renew<'a>(&'a self, key: &'a RecordKey, token: ClaimToken, lease: Duration) -> Boxed<'a, ()> {
        Box::pin(time_operation(Operation::Renew, move || Store::renew(&self.0, key, token, lease)))
    }

    fn max_body_bytes(&self) -> usize {
        Store::max_body_bytes(&self.0)
    }

    fn listen<'a>(&'a self, key: &'a RecordKey) -> Pin<Box<dyn Future<Output = Option<Listener>> + Send + 'a>> {
        Box::pin(Store::listen(&self.0, key))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        &self.0
    }

    fn now(&self) -> SystemTime {
        Store::now(&self.0)
    }
}
