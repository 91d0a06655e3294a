//! What a store that can tell when a key's claim ends gives a request waiting for that key.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

/// A request's registration for the end of a key's claim (a record stored, or the claim
/// released), by any process sharing the store. The store wakes it through its [`Notify`]
/// (`notify_waiters`); dropped, the registration ends (the store stops listening for the key
/// once no listener is left). See [`Store::listen`](super::Store::listen).
pub struct Listener {
    woken: Arc<Notify>,
    _registration: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

impl Listener {
    /// A listener woken through `woken`, registered for as long as `registration` lives (its
    /// `Drop` ends the registration).
    pub fn new(woken: Arc<Notify>, registration: impl Send + Sync + 'static) -> Self {
        Self { woken, _registration: Box::new(registration) }
    }

    /// The next wake-up, listening from now on: one that comes while the key is looked at once
    /// more is not lost.
    pub(crate) fn next(&self) -> Pin<Box<OwnedNotified>> {
        let mut woken = Box::pin(self.woken.clone().notified_owned());
        woken.as_mut().enable();
        woken
    }
}
