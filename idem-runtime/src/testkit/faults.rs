//! A store that injects faults into another one, by a schedule the test sets per operation:
//! delays, errors before or after the operation took effect, and replies that never come.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::fingerprint::Fingerprint;
use crate::record::Record;
use crate::store::{Claim, ClaimToken, Listener, RecordKey, Store, StoreError};

/// One of the four store operations, as [`FaultyStore`] schedules faults for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// [`Store::claim`].
    Claim,
    /// [`Store::complete`].
    Complete,
    /// [`Store::release`].
    Release,
    /// [`Store::renew`].
    Renew,
}

impl Operation {
    /// The four operations.
    pub const ALL: [Operation; 4] = [Self::Claim, Self::Complete, Self::Release, Self::Renew];

    fn index(self) -> usize {
        self as usize
    }
}

/// What a call meets instead of the plain operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The call waits this long (on Tokio's clock), then runs as usual.
    Delay(Duration),
    /// The call fails with [`StoreError::Unavailable`] and never reaches the store: nothing
    /// took effect.
    ErrorBefore,
    /// The operation takes effect, then its reply is lost: the caller gets
    /// [`StoreError::Unavailable`] whatever the store answered.
    ErrorAfter,
    /// The reply never comes. With `took_effect` the operation reached the store (else it was
    /// lost on the way); the call then waits `until` (on Tokio's clock) and fails with
    /// [`StoreError::Unavailable`], as a client-side timeout would, or, with `None`, stays
    /// pending for ever.
    NoReply {
        /// Whether the operation reached the store.
        took_effect: bool,
        /// How long the caller waits before it gives up; `None`: for ever.
        until: Option<Duration>,
    },
}

/// Wraps any [`Store`] (yours included) and injects [`Fault`]s into its operations, by a
/// schedule per [`Operation`]: each call of an operation takes the next entry of that
/// operation's queue (`None` lets it through untouched); once the queue is empty, calls meet
/// the operation's standing fault if one is set ([`FaultyStore::always`]), else go through.
/// Clones share the schedule and the counts, so a test keeps one handle while the application
/// owns another.
///
/// ```
/// use std::time::Duration;
/// use idem_runtime::store::{Claim, MemoryStore, Store as _, StoreError};
/// use idem_runtime::testkit::{fingerprint, fresh_key, Fault, FaultyStore, Operation};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = FaultyStore::new(MemoryStore::new());
/// // The first claim takes effect but its reply is lost; the second goes through.
/// store.schedule(Operation::Claim, [Some(Fault::ErrorAfter), None]);
/// let key = fresh_key();
/// let lease = Duration::from_secs(30);
/// assert!(matches!(store.claim(&key, &fingerprint(1), lease).await, Err(StoreError::Unavailable(_))));
/// // The claim did take effect: the key is held, by an owner who never learnt its token.
/// assert!(matches!(store.claim(&key, &fingerprint(1), lease).await, Ok(Claim::InFlight { .. })));
/// assert_eq!(store.calls(Operation::Claim), 2);
/// # }
/// ```
///
/// Put it in an application's layer (`Idempotency::new(store.clone())`) to drive requests
/// through the faults.
#[derive(Clone)]
pub struct FaultyStore<S> {
    inner: S,
    plan: Arc<Mutex<Plan>>,
}

#[derive(Default)]
struct Plan {
    queued: [VecDeque<Option<Fault>>; 4],
    standing: [Option<Fault>; 4],
    calls: [u64; 4],
    faulted: [u64; 4],
}

impl<S> FaultyStore<S> {
    fn plan(&self) -> MutexGuard<'_, Plan> {
        // Every update is one field write: a panic elsewhere cannot leave the plan half-changed.
        self.plan.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<S> std::fmt::Debug for FaultyStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plan = self.plan();
        f.debug_struct("FaultyStore")
            .field("queued", &plan.queued)
            .field("standing", &plan.standing)
            .field("calls", &plan.calls)
            .finish_non_exhaustive()
    }
}

impl<S: Store> FaultyStore<S> {
    /// `inner`, with no fault scheduled yet.
    pub fn new(inner: S) -> Self {
        Self { inner, plan: Arc::default() }
    }

    /// The store behind the faults.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Queues `faults` for the next calls of `operation`, after those already queued, one
    /// call each in order: `None` lets its call through untouched.
    pub fn schedule(&self, operation: Operation, faults: impl IntoIterator<Item = Option<Fault>>) {
        self.plan().queued[operation.index()].extend(faults);
    }

    /// Queues `fault` for the next call of `operation` (after those already queued).
    pub fn next(&self, operation: Operation, fault: Fault) {
        self.schedule(operation, [Some(fault)]);
    }

    /// Every call of `operation` meets `fault` once its queue is empty, until
    /// [`FaultyStore::heal`].
    pub fn always(&self, operation: Operation, fault: Fault) {
        self.plan().standing[operation.index()] = Some(fault);
    }

    /// Drops every queued and standing fault of `operation`: its calls go through from now on.
    pub fn heal(&self, operation: Operation) {
        let mut plan = self.plan();
        plan.queued[operation.index()].clear();
        plan.standing[operation.index()] = None;
    }

    /// How many calls of `operation` were made, faulted or not.
    pub fn calls(&self, operation: Operation) -> u64 {
        self.plan().calls[operation.index()]
    }

    /// How many calls of `operation` met a fault.
    pub fn faulted(&self, operation: Operation) -> u64 {
        self.plan().faulted[operation.index()]
    }

    /// How many entries of `operation`'s queue no call has taken yet.
    pub fn queued(&self, operation: Operation) -> usize {
        self.plan().queued[operation.index()].len()
    }

    /// The fault the next call of `operation` meets, counting the call.
    fn take(&self, operation: Operation) -> Option<Fault> {
        let mut plan = self.plan();
        let i = operation.index();
        plan.calls[i] += 1;
        let fault = match plan.queued[i].pop_front() {
            Some(entry) => entry,
            None => plan.standing[i],
        };
        plan.faulted[i] += u64::from(fault.is_some());
        fault
    }

    /// Runs `op` as `operation` under the next scheduled fault.
    async fn run<T, F>(&self, operation: Operation, op: impl FnOnce() -> F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let Some(fault) = self.take(operation) else { return op().await };
        let injected = |what: &str| StoreError::Unavailable(format!("injected fault in {operation:?}: {what}").into());
        match fault {
            Fault::Delay(delay) => {
                tokio::time::sleep(delay).await;
                op().await
            }
            Fault::ErrorBefore => Err(injected("the store was not reached")),
            Fault::ErrorAfter => {
                let _ = op().await;
                Err(injected("the operation took effect, its reply was lost"))
            }
            Fault::NoReply { took_effect, until } => {
                if took_effect {
                    let _ = op().await;
                }
                match until {
                    Some(until) => {
                        tokio::time::sleep(until).await;
                        Err(injected("no reply came"))
                    }
                    None => std::future::pending().await,
                }
            }
        }
    }
}

impl<S: Store> Store for FaultyStore<S> {
    async fn claim(&self, key: &RecordKey, fingerprint: &Fingerprint, lease: Duration) -> Result<Claim, StoreError> {
        self.run(Operation::Claim, || self.inner.claim(key, fingerprint, lease)).await
    }

    async fn complete(&self, key: &RecordKey, token: ClaimToken, record: Record) -> Result<(), StoreError> {
        self.run(Operation::Complete, || self.inner.complete(key, token, record)).await
    }

    async fn release(&self, key: &RecordKey, token: ClaimToken) -> Result<(), StoreError> {
        self.run(Operation::Release, || self.inner.release(key, token)).await
    }

    async fn renew(&self, key: &RecordKey, token: ClaimToken, lease: Duration) -> Result<(), StoreError> {
        self.run(Operation::Renew, || self.inner.renew(key, token, lease)).await
    }

    fn listen(&self, key: &RecordKey) -> impl std::future::Future<Output = Option<Listener>> + Send {
        self.inner.listen(key)
    }

    fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes()
    }

    fn now(&self) -> SystemTime {
        self.inner.now()
    }
}
