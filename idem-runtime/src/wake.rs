//! Wake-ups of requests of this process waiting for a key another request of this process holds:
//! the owner's outcome (stored, released) wakes them at once, instead of their next poll of the
//! store.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use crate::store::RecordKey;

/// Per key some request of this process waits for: what wakes them, and how many they are.
type Waiters = HashMap<RecordKey, (Arc<Notify>, usize)>;

/// The keys some request of this process waits for.
static WAITERS: LazyLock<Mutex<Waiters>> = LazyLock::new(Mutex::default);

/// How many keys are waited for: an owner's wake costs one atomic load when none is.
static WAITED: AtomicUsize = AtomicUsize::new(0);

/// The keys an owner of this process holds, with how many (a takeover after a lost lease can
/// make two).
static OWNED: LazyLock<Mutex<HashMap<RecordKey, usize>>> = LazyLock::new(Mutex::default);

/// An owner of `key` in this process, registered until dropped; dropped, it wakes every request
/// of this process waiting for the key, whatever the owner did (stored its response, released
/// the key, panicked, or was dropped).
pub(crate) struct Owning(RecordKey);

impl Owning {
    pub(crate) fn new(key: RecordKey) -> Self {
        *OWNED.lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_default() += 1;
        Self(key)
    }
}

impl Drop for Owning {
    fn drop(&mut self) {
        {
            let mut owned = OWNED.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = owned.get_mut(&self.0) {
                *count -= 1;
                if *count == 0 {
                    owned.remove(&self.0);
                }
            }
        }
        wake(&self.0);
    }
}

/// Whether an owner of this process holds `key`: then its end wakes the waiting requests, and
/// they need not poll the store meanwhile.
pub(crate) fn owned_here(key: &RecordKey) -> bool {
    OWNED.lock().unwrap_or_else(PoisonError::into_inner).contains_key(key)
}

/// A request waiting for `key`, registered until dropped.
pub(crate) struct Waiting {
    key: RecordKey,
    notify: Arc<Notify>,
}

impl Waiting {
    /// Registers a request that waits for `key`.
    pub(crate) fn new(key: RecordKey) -> Self {
        let mut waiters = WAITERS.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = waiters.entry(key).or_insert_with(|| {
            WAITED.fetch_add(1, Ordering::SeqCst);
            (Arc::new(Notify::new()), 0)
        });
        entry.1 += 1;
        Self { key, notify: entry.0.clone() }
    }

    /// The next wake-up for the key, listening from now on: one that comes before it is awaited
    /// (while the key is looked at once more) is not lost.
    pub(crate) fn next(&self) -> Pin<Box<OwnedNotified>> {
        let mut woken = Box::pin(self.notify.clone().notified_owned());
        woken.as_mut().enable();
        woken
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut waiters = WAITERS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = waiters.get_mut(&self.key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                waiters.remove(&self.key);
                WAITED.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// The owner of `key` in this process is done with it (its response stored, or the key
/// released): every request of this process waiting for it looks again now.
pub(crate) fn wake(key: &RecordKey) {
    if WAITED.load(Ordering::SeqCst) == 0 {
        return;
    }
    let waiters = WAITERS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((notify, _)) = waiters.get(key) {
        notify.notify_waiters();
    }
}
