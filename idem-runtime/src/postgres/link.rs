//! Where a request's [`Tx`](super::Tx) and the engine meet: the store a `Tx` parameter
//! registers, and the transaction the engine lends it.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use http::request::Parts;

use super::Transaction;
use crate::store::PgStore;

/// Every request of an annotated handler has one; a `Tx` parameter registers its store in it,
/// and the engine lends it the transaction.
#[derive(Default)]
pub(crate) struct Link {
    store: OnceLock<PgStore>,
    slot: Mutex<Slot>,
}

#[derive(Default)]
enum Slot {
    /// The engine has not opened the transaction yet.
    #[default]
    Unopened,
    /// Open, and not held by the handler.
    Ready(Transaction),
    /// Held by the handler's `Tx`.
    Lent,
    /// The engine is done with the request: a transaction given back now is rolled back.
    Closed,
}

impl Link {
    /// A new link, in the request's extensions for a `Tx` parameter to find.
    pub(crate) fn offer(parts: &mut Parts) -> Arc<Self> {
        let link = Arc::new(Self::default());
        parts.extensions.insert(link.clone());
        link
    }

    /// A `Tx` parameter was extracted, with the state's store; `false` when another one was.
    pub(super) fn register(&self, store: PgStore) -> bool {
        self.store.set(store).is_ok()
    }

    /// The store of the handler's `Tx` parameter; `None` when it has none.
    pub(crate) fn store(&self) -> Option<&PgStore> {
        self.store.get()
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn open(&self, transaction: Transaction) {
        *self.slot() = Slot::Ready(transaction);
    }

    /// The transaction, for the handler's `Tx` to hold.
    pub(super) fn lend(&self) -> Transaction {
        match std::mem::replace(&mut *self.slot(), Slot::Lent) {
            Slot::Ready(transaction) => transaction,
            // Only the handler's body uses its `Tx`, and the engine opens the transaction
            // before it polls the handler: nothing else can get here.
            _ => panic!("idem: a `Tx` was used outside the run of its handler"),
        }
    }

    pub(super) fn give_back(&self, transaction: Transaction) {
        let mut slot = self.slot();
        if matches!(*slot, Slot::Lent) {
            *slot = Slot::Ready(transaction);
        }
        // Closed: dropped here, which rolls it back.
    }

    /// Ends the handler's use of the transaction: `None` when the handler's `Tx` still holds
    /// it (moved somewhere that outlived the handler); it is rolled back whenever that lets go.
    pub(super) fn close(&self) -> Option<Transaction> {
        match std::mem::replace(&mut *self.slot(), Slot::Closed) {
            Slot::Ready(transaction) => Some(transaction),
            Slot::Unopened | Slot::Lent | Slot::Closed => None,
        }
    }
}
