//! Wake-ups of requests waiting for a key another request holds: an owner in this process wakes
//! them when it is done (stored, released); an owner elsewhere, through the store when it can
//! tell ([`Store::listen`](crate::store::Store::listen)); polling the store is the fallback.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use crate::store::{DynStore, Listener, RecordKey};

/// A key of one store: wake-ups go between the requests of one store handle (an `Idempotency`
/// layer, or the embedded store), so that two handles on one shared store (two instances in a
/// test, say) are woken through the store, as two processes are.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Slot {
    store: usize,
    key: RecordKey,
}

impl Slot {
    pub(crate) fn of(store: &Arc<dyn DynStore>, key: RecordKey) -> Self {
        Self { store: Arc::as_ptr(store).cast::<()>() as usize, key }
    }
}

/// Hashes a [`Slot`] with one multiply per word, mixed with a secret chosen once per process:
/// a record key is already a digest, and the maps below are touched on every miss, where
/// SipHash over its 40 bytes cost twice what the rest of the registration does.
#[derive(Default)]
struct SlotHasher(u64);

static SEED: LazyLock<u64> = LazyLock::new(|| std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8));

impl std::hash::Hasher for SlotHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_ne_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n ^ *SEED).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Hashed = std::hash::BuildHasherDefault<SlotHasher>;

/// Per key some request of this process waits for: what wakes them, and how many they are.
type Waiters = HashMap<Slot, (Arc<Notify>, usize), Hashed>;

/// The keys some request of this process waits for.
static WAITERS: LazyLock<Mutex<Waiters>> = LazyLock::new(Mutex::default);

/// How many keys are waited for: an owner's wake costs one atomic load when none is.
static WAITED: AtomicUsize = AtomicUsize::new(0);

/// The keys an owner of this process holds, with how many (a takeover after a lost lease can
/// make two).
static OWNED: LazyLock<Mutex<HashMap<Slot, usize, Hashed>>> = LazyLock::new(Mutex::default);

/// An owner of `key` in this process, registered until dropped; dropped, it wakes every request
/// of this process waiting for the key, whatever the owner did (stored its response, released
/// the key, panicked, or was dropped).
pub(crate) struct Owning(Slot);

impl Owning {
    pub(crate) fn new(key: Slot) -> Self {
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
pub(crate) fn owned_here(key: &Slot) -> bool {
    OWNED.lock().unwrap_or_else(PoisonError::into_inner).contains_key(key)
}

/// How often a request that listens through the store looks at the key all the same: the
/// fallback for a notification lost on its way (a dropped subscription).
const LISTENED_POLL: Duration = Duration::from_secs(1);

/// How long a request that cannot be woken waits at most before it looks again.
const MAX_POLL: Duration = Duration::from_millis(250);

/// A request waiting for `key`, registered until dropped.
pub(crate) struct Waiting {
    key: Slot,
    notify: Arc<Notify>,
    /// The store's registration, when it can tell when the key's claim ends.
    listener: Option<Listener>,
}

/// The next wake-up of a [`Waiting`] request, listening from the moment it was made.
pub(crate) struct Wake {
    here: Pin<Box<OwnedNotified>>,
    store: Option<Pin<Box<OwnedNotified>>>,
}

impl Wake {
    /// Waits for the key's owner to be done (woken here or through the store), or for the next
    /// poll: right away when the owner is in this process (it always wakes), a second when the
    /// store listens (a lost notification), else `pause`, which doubles up to 250 ms.
    pub(crate) async fn or_poll(self, key: &Slot, pause: &mut Duration, left: Duration) {
        let (poll, polling) = if owned_here(key) {
            (left, false)
        } else if self.store.is_some() {
            (LISTENED_POLL.min(left), false)
        } else {
            ((*pause).min(left), true)
        };
        let store = async {
            match self.store {
                Some(woken) => woken.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = self.here => {}
            () = store => {}
            () = tokio::time::sleep(poll) => {
                if polling {
                    *pause = (*pause * 2).min(MAX_POLL);
                }
            }
        }
    }
}

impl Waiting {
    /// Registers a request that waits for `key`, here and with `store` when it listens.
    pub(crate) async fn new(key: Slot, store: &dyn DynStore) -> Self {
        let listener = store.listen(&key.key).await;
        let mut waiting = Self::here(key);
        waiting.listener = listener;
        waiting
    }

    fn here(key: Slot) -> Self {
        let mut waiters = WAITERS.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = waiters.entry(key).or_insert_with(|| {
            WAITED.fetch_add(1, Ordering::SeqCst);
            (Arc::new(Notify::new()), 0)
        });
        entry.1 += 1;
        Self { key, notify: entry.0.clone(), listener: None }
    }

    /// The next wake-up for the key, listening from now on: one that comes before it is awaited
    /// (while the key is looked at once more) is not lost.
    pub(crate) fn next(&self) -> Wake {
        let mut here = Box::pin(self.notify.clone().notified_owned());
        here.as_mut().enable();
        Wake { here, store: self.listener.as_ref().map(Listener::next) }
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
pub(crate) fn wake(key: &Slot) {
    if WAITED.load(Ordering::SeqCst) == 0 {
        return;
    }
    let waiters = WAITERS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((notify, _)) = waiters.get(key) {
        notify.notify_waiters();
    }
}
