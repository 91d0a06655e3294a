//! Where a request's [`Tx`](super::Tx) and the engine meet: the store a `Tx` parameter
//! registers, the transaction the engine lends it, and whether a `Tx` still exists when the
//! handler has returned.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use http::request::Parts;

use super::Transaction;
use crate::store::PgStore;

/// Every request of an annotated handler has one; a `Tx` parameter registers its store in it,
/// and the engine lends it the transaction.
#[derive(Default)]
pub(crate) struct Link {
    store: OnceLock<PgStore>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    slot: Slot,
    /// The `Tx` values of the request not dropped yet.
    live: usize,
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

/// The transaction once the handler has returned.
pub(crate) enum Handed {
    /// Back with idem: no `Tx` holds it or can use it any more.
    Back(Transaction),
    /// A `Tx` outlived the handler (moved into a task?). The transaction is here to roll back
    /// when that `Tx` never used it; a used one is rolled back when that `Tx` is dropped.
    StillHeld(Option<Transaction>),
}

impl Handed {
    /// The transaction, to roll back, whether or not a `Tx` still exists.
    pub(crate) fn into_transaction(self) -> Option<Transaction> {
        match self {
            Self::Back(transaction) => Some(transaction),
            Self::StillHeld(transaction) => transaction,
        }
    }
}

const USED_LATE: &str = "idem: this `Tx` was used after its handler had returned (was it moved into a task?); its transaction was rolled back then, and the request answered without it";

impl Link {
    /// A new link, in the request's extensions for a `Tx` parameter to find.
    pub(crate) fn offer(parts: &mut Parts) -> Arc<Self> {
        let link = Arc::new(Self::default());
        parts.extensions.insert(link.clone());
        link
    }

    /// A `Tx` parameter was extracted, with the state's store; `false` when another one was,
    /// and this one is refused.
    pub(super) fn register(&self, store: PgStore) -> bool {
        if self.store.set(store).is_err() {
            return false;
        }
        self.state().live += 1;
        true
    }

    /// The store of the handler's `Tx` parameter; `None` when it has none.
    pub(crate) fn store(&self) -> Option<&PgStore> {
        self.store.get()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn open(&self, transaction: Transaction) {
        self.state().slot = Slot::Ready(transaction);
    }

    /// The transaction, for the handler's `Tx` to hold.
    pub(super) fn lend(&self) -> Transaction {
        match std::mem::replace(&mut self.state().slot, Slot::Lent) {
            Slot::Ready(transaction) => transaction,
            // The engine opens the transaction before it polls the handler, and a `Tx` that
            // outlives the handler is refused when the handler returns.
            _ => panic!("{USED_LATE}"),
        }
    }

    /// A `Tx` is dropped, with the transaction it held, if any: given back while the handler
    /// runs, rolled back (dropped) once the engine is done.
    pub(super) fn let_go(&self, held: Option<Transaction>) {
        let mut state = self.state();
        state.live -= 1;
        if let Some(transaction) = held {
            if matches!(state.slot, Slot::Lent) {
                state.slot = Slot::Ready(transaction);
            }
        }
    }

    /// Ends the handler's use of the transaction, which it has returned from.
    pub(super) fn close(&self) -> Handed {
        let mut state = self.state();
        let slot = std::mem::replace(&mut state.slot, Slot::Closed);
        match slot {
            Slot::Ready(transaction) if state.live == 0 => Handed::Back(transaction),
            Slot::Ready(transaction) => Handed::StillHeld(Some(transaction)),
            Slot::Unopened | Slot::Lent | Slot::Closed => Handed::StillHeld(None),
        }
    }
}
