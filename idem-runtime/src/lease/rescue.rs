//! The rescue thread: renews, from outside every runtime, any held lease that its runtime's
//! keeper has not renewed within half of the lease.
//!
//! The keeper is a task, and a task can be held up by a handler that blocks the worker it waits
//! on. This thread is not a worker of any runtime, so no handler can stop it. It sleeps until the
//! earliest lease could need rescue, and costs nothing while the keepers keep up: a lease renewed
//! on time is never renewed here. A renewal made here polls the store's future on this thread,
//! inside its runtime's context (so the store's connections and timers are the usual ones), and
//! gives up after a third of the lease, so that a store that does not answer delays the next
//! rescue by at most that.

use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::runtime;

use super::{interval, keepers, renewed};
use crate::store::StoreError;

/// How long after its last renewal a lease is renewed by the rescue thread: half of it, leaving
/// the other half for the rescue itself.
fn rescue_after(lease: Duration) -> Duration {
    (lease / 2).max(Duration::from_millis(1))
}

/// What holders tell the rescue thread.
struct Watch {
    /// The earliest time a lease held since the thread's last look could need rescue.
    look_by: Option<Instant>,
    /// Whether the thread was started.
    started: bool,
}

fn watch_state() -> &'static (Mutex<Watch>, Condvar) {
    static WATCH: OnceLock<(Mutex<Watch>, Condvar)> = OnceLock::new();
    WATCH.get_or_init(|| (Mutex::new(Watch { look_by: None, started: false }), Condvar::new()))
}

fn lock(watch: &Mutex<Watch>) -> MutexGuard<'_, Watch> {
    // Every update under the lock is a single field write: a panic cannot leave it half-changed.
    watch.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Tells the rescue thread (starting it once per process) that a lease of length `lease` was
/// just taken.
pub(super) fn watch(lease: Duration) {
    let (watch, wake) = watch_state();
    let look_at = Instant::now() + rescue_after(lease);
    let mut state = lock(watch);
    if !state.started {
        let spawned = std::thread::Builder::new().name("idem-lease-rescue".into()).spawn(run);
        match spawned {
            Ok(_) => state.started = true,
            Err(error) => {
                tracing::error!(target: "idem", %error, "could not start the lease rescue thread; a handler blocking its worker may let its lease lapse");
                return;
            }
        }
    }
    if state.look_by.is_none_or(|at| look_at < at) {
        state.look_by = Some(look_at);
        wake.notify_one();
    }
}

/// A lease to renew from this thread.
struct Rescue {
    runtime: runtime::Handle,
    runtime_id: runtime::Id,
    id: u64,
    held: super::Held,
}

fn run() {
    let (watch, wake) = watch_state();
    loop {
        lock(watch).look_by = None;
        let (due, next) = overdue();
        for rescue in due {
            renew(rescue);
        }
        let mut state = lock(watch);
        let next = match (next, state.look_by) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match next {
            None => drop(wake.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner())),
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    state.look_by = Some(at);
                    drop(wake.wait_timeout(state, wait).unwrap_or_else(|poisoned| poisoned.into_inner()));
                }
            }
        }
    }
}

/// The leases not renewed within half their length, each marked renewed now (so that a rescue
/// that fails is tried again half a lease later, not at once), and when the next one could be.
fn overdue() -> (Vec<Rescue>, Option<Instant>) {
    let now = Instant::now();
    let mut due = Vec::new();
    let mut next: Option<Instant> = None;
    for (&runtime_id, keeper) in keepers().iter_mut() {
        for (&id, held) in keeper.held.iter_mut().filter(|(_, held)| !held.lost) {
            let at = held.renewed + rescue_after(held.lease);
            if at <= now {
                held.renewed = now;
                due.push(Rescue { runtime: keeper.runtime.clone(), runtime_id, id, held: held.clone() });
            }
            let at = held.renewed + rescue_after(held.lease);
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    (due, next)
}

fn renew(rescue: Rescue) {
    let Rescue { runtime, runtime_id, id, held } = rescue;
    let deadline = Instant::now() + interval(held.lease);
    tracing::debug!(target: "idem", key = ?held.key, "renewing a lease its keeper did not renew in time");
    let result = poll_until(&runtime, held.store.renew(&held.key, held.token, held.lease), deadline)
        .unwrap_or_else(|| Err(StoreError::Unavailable("the store did not answer a lease renewal in time".into())));
    renewed(runtime_id, id, held.key, result);
}

/// Wakes this thread when the future it polls can go on.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on this thread, inside `runtime`'s context, until it is ready or `deadline`
/// passes.
fn poll_until<F: Future>(runtime: &runtime::Handle, future: F, deadline: Instant) -> Option<F::Output> {
    let _context = runtime.enter();
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Some(output);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::park_timeout(left);
    }
}
