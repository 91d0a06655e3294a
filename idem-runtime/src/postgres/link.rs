//! Where a request's [`Tx`](super::Tx) and the engine meet: the store and hooks a `Tx`
//! parameter registers, the transaction the engine lends it, and whether a `Tx` still exists
//! when the handler has returned.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use axum::response::Response;

use super::Transaction;
use crate::hooks::Hooks;
use crate::problem::Problem;
use crate::store::PgStore;

/// Every request of an annotated handler has one; a `Tx` parameter registers its store in it,
/// and the engine lends it the transaction.
#[derive(Default)]
pub(crate) struct Link {
    registered: OnceLock<Registered>,
    /// A second `Tx` parameter registered too.
    twice: AtomicBool,
    state: Mutex<State>,
}

/// What the handler's `Tx` parameter brought from the router.
struct Registered {
    store: PgStore,
    /// The hooks of the layer the route is behind, for the problems answered to a request
    /// without a key (a covered request has its layer's).
    hooks: Hooks,
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
    /// A `Tx` parameter was extracted, with the state's store and the layer's hooks, if any.
    pub(super) fn register(&self, store: PgStore, hooks: Option<&Hooks>) {
        let registered = Registered { store, hooks: hooks.cloned().unwrap_or_default() };
        if self.registered.set(registered).is_err() {
            self.twice.store(true, Ordering::Relaxed);
        }
        self.state().live += 1;
    }

    /// The store of the handler's `Tx` parameter; `None` when it has none.
    pub(crate) fn store(&self) -> Option<&PgStore> {
        self.registered.get().map(|registered| &registered.store)
    }

    /// Why the handler must not run, when its parameters show it: two `Tx`.
    pub(super) fn refusal(&self) -> Option<&'static str> {
        self.twice.load(Ordering::Relaxed).then_some("this handler takes `Tx` twice; one transaction per request")
    }

    /// One of idem's problems, for a request without a key, as the layer's hooks shape it.
    pub(super) fn answer(&self, problem: &Problem) -> Response {
        match self.registered.get() {
            Some(registered) => registered.hooks.respond(problem),
            None => problem.to_response(),
        }
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
