//! Keeps the leases of running requests alive, so that renewal never depends on the request's
//! own future being polled, nor on any worker of the runtime being free to run a task: a handler
//! inside `block_in_place`, a long synchronous section, a response body still streaming or a
//! record write retried after a store outage all keep their claim.
//!
//! One keeper task per runtime serves every claim taken on it: holding a lease costs an entry in
//! a map, not a timer or a task per request. The keeper sleeps until the earliest renewal is due, renews
//! each due lease at a third of its length (each renewal in a task of its own, so a slow store
//! delays no other lease), and exits when nothing is held; the next hold starts it again. It
//! follows its runtime's clock, a paused test clock included.
//!
//! A task can be starved: Tokio keeps a task woken by a worker in that worker's own slot, where
//! no other worker may take it, so a handler that blocks its thread right after waking the
//! keeper (by taking a claim) holds the keeper up with it. A thread of the process's own
//! ([`rescue`]) therefore watches every held lease in real time and renews, itself, any lease
//! the keeper has not renewed within half of it.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::runtime;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::store::{ClaimToken, DynStore, RecordKey, StoreError};

mod rescue;

/// A lease kept alive until this is dropped.
#[must_use = "the lease is renewed only while this is held"]
pub(crate) struct HeldLease {
    /// The runtime whose keeper renews it, and the lease's number there; `None` outside a runtime.
    at: Option<(runtime::Id, u64)>,
}

impl std::fmt::Debug for HeldLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLease").finish_non_exhaustive()
    }
}

/// The keepers of every runtime that holds leases. A keeper runs on the runtime its leases were
/// taken on, so that it lives and dies with the requests it serves, and follows that runtime's
/// clock (a paused test clock included).
fn keepers() -> MutexGuard<'static, IdMap<runtime::Id, Keeper>> {
    static KEEPERS: OnceLock<Mutex<IdMap<runtime::Id, Keeper>>> = OnceLock::new();
    // Every update under the lock is a single map or field write: a panic cannot leave the
    // state half-changed.
    KEEPERS.get_or_init(Mutex::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A map keyed by numbers idem hands out itself (or tokio's runtime ids): no need for a hasher
/// that resists chosen keys, only for one that spreads sequential numbers.
type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<SpreadHasher>>;

/// Multiplies a `u64` by a large odd constant (Fibonacci hashing), so that sequential numbers
/// spread over the whole hash.
#[derive(Default)]
struct SpreadHasher(u64);

impl Hasher for SpreadHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

struct Keeper {
    /// The runtime the leases were taken on, for renewals made from outside it.
    runtime: runtime::Handle,
    held: IdMap<u64, Held>,
    next_id: u64,
    /// Whether a keeper task is alive.
    running: bool,
    /// When the keeper wakes next, while it sleeps.
    sleeping_until: Option<Instant>,
    wake: Arc<Notify>,
}

#[derive(Clone)]
struct Held {
    store: Arc<dyn DynStore>,
    key: RecordKey,
    token: ClaimToken,
    lease: Duration,
    due: Instant,
    /// When the lease was last taken or renewed, on the real clock: the rescue thread renews a
    /// lease not renewed for half its length.
    renewed: std::time::Instant,
    /// The store said the claim is no longer this owner's: renewing again is pointless.
    lost: bool,
}

/// How often a lease is renewed: three times per lease, so that one late or failed renewal
/// still leaves time for the next.
fn interval(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(1))
}

/// Keeps the claim `(key, token)` in `store` alive, renewing it for `lease` at a time, until the
/// returned value is dropped.
pub(crate) fn hold(store: &Arc<dyn DynStore>, key: RecordKey, token: ClaimToken, lease: Duration) -> HeldLease {
    let Ok(runtime) = runtime::Handle::try_current() else {
        tracing::error!(
            target: "idem",
            "a claim was taken outside a Tokio runtime; its lease is not renewed and lapses after {lease:?}"
        );
        return HeldLease { at: None };
    };
    let due = Instant::now() + interval(lease);
    let runtime_id = runtime.id();
    let (id, start) = {
        let mut keepers = keepers();
        let keeper = keepers.entry(runtime_id).or_insert_with(|| Keeper {
            runtime: runtime.clone(),
            held: IdMap::default(),
            next_id: 0,
            running: false,
            sleeping_until: None,
            wake: Arc::default(),
        });
        let id = keeper.next_id;
        keeper.next_id += 1;
        let renewed = std::time::Instant::now();
        keeper.held.insert(id, Held { store: store.clone(), key, token, lease, due, renewed, lost: false });
        let start = !keeper.running;
        if start {
            keeper.running = true;
        } else if keeper.sleeping_until.is_some_and(|wake| due < wake) {
            keeper.wake.notify_one();
        }
        (id, start.then(|| keeper.wake.clone()))
    };
    rescue::watch(lease);
    // Spawned without the lock: a runtime shutting down drops the task at once, and with it
    // the guard that takes the lock to mark the keeper stopped.
    if let Some(wake) = start {
        drop(runtime.spawn(keep(runtime_id, wake)));
    }
    HeldLease { at: Some((runtime_id, id)) }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        if let Some((runtime, id)) = self.at {
            let mut keepers = keepers();
            if let Some(keeper) = keepers.get_mut(&runtime) {
                keeper.held.remove(&id);
                if keeper.idle() {
                    keepers.remove(&runtime);
                }
            }
        }
    }
}

impl Keeper {
    /// Holds nothing and its task has ended: forgotten then, since the entry holds the runtime's
    /// handle, which would keep a dropped runtime's driver (and its file descriptors) alive.
    fn idle(&self) -> bool {
        !self.running && self.held.is_empty()
    }
}

/// Marks a keeper stopped however its task ends: a runtime shutting down drops it, possibly
/// before its first poll, so the next hold starts a new one.
struct Running {
    runtime: runtime::Id,
    armed: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.armed {
            let mut keepers = keepers();
            if let Some(keeper) = keepers.get_mut(&self.runtime) {
                keeper.running = false;
                keeper.sleeping_until = None;
                if keeper.idle() {
                    keepers.remove(&self.runtime);
                }
            }
        }
    }
}

fn keep(runtime: runtime::Id, wake: Arc<Notify>) -> impl Future<Output = ()> + Send {
    // Made before the task is first polled, so that it is dropped with an unpolled task too.
    let running = Running { runtime, armed: true };
    async move {
        // The whole guard moves into the task (a field assignment alone would capture the field).
        let mut running = running;
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            let until = {
                let mut keepers = keepers();
                let Some(keeper) = keepers.get_mut(&runtime).filter(|keeper| !keeper.held.is_empty()) else {
                    // Stopped under the lock: a hold from now on starts a new keeper.
                    keepers.remove(&runtime);
                    running.armed = false;
                    return;
                };
                let mut until: Option<Instant> = None;
                for (&id, held) in keeper.held.iter_mut().filter(|(_, held)| !held.lost) {
                    if held.due <= now {
                        held.due = now + interval(held.lease);
                        due.push((id, held.store.clone(), held.key, held.token, held.lease));
                    }
                    until = Some(until.map_or(held.due, |u| u.min(held.due)));
                }
                // Only lost leases are left: look again in a while, or when a new one is held.
                let until = until.unwrap_or(now + Duration::from_secs(1));
                keeper.sleeping_until = Some(until);
                until
            };
            for (id, store, key, token, lease) in due {
                tokio::spawn(renew(runtime, id, store, key, token, lease));
            }
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                () = wake.notified() => {}
            }
        }
    }
}

async fn renew(
    runtime: runtime::Id,
    id: u64,
    store: Arc<dyn DynStore>,
    key: RecordKey,
    token: ClaimToken,
    lease: Duration,
) {
    let result = store.renew(&key, token, lease).await;
    renewed(runtime, id, key, result);
}

/// Records what a renewal of lease `id` found.
fn renewed(runtime: runtime::Id, id: u64, key: RecordKey, result: Result<(), StoreError>) {
    let mut keepers = keepers();
    let held = keepers.get_mut(&runtime).and_then(|keeper| keeper.held.get_mut(&id));
    match result {
        Ok(()) => {
            if let Some(held) = held {
                held.renewed = std::time::Instant::now();
            }
        }
        Err(StoreError::LeaseLost) => {
            tracing::error!(target: "idem", ?key, "a running request's claim was taken over or dropped; its response will not be stored");
            if let Some(held) = held {
                held.lost = true;
            }
        }
        Err(error) => {
            tracing::warn!(target: "idem", ?key, %error, "could not renew the lease of a running request; retrying")
        }
    }
}
