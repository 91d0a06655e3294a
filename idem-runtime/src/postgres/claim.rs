//! The claim of a key by a covered request whose handler takes [`Tx`](super::Tx): the
//! transaction opened with the key's advisory lock taken and its row looked at in one round
//! trip, waiting for the lock or for a claim outside a transaction, and the rollback of a claim
//! that does not go on to run the handler, even when the request is dropped meanwhile.

use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::Postgres;

use crate::call::Call;
use crate::fingerprint::Fingerprint;
use crate::observe::{self, Operation};
use crate::store::{Claim, PgStore, StoreError, TxClaim};

/// How a claim ended.
pub(super) enum KeyClaim {
    /// The transaction holds the key's lock and no record is there: the handler runs in it.
    Acquired(Claiming),
    /// The key answers without running the handler (the transaction is being rolled back): a
    /// record to replay, a mismatch, or a claim in flight (after waiting, if the handler waits).
    Answered(Claim),
    /// The store could not be used; the transaction is rolled back.
    Failed(StoreError),
}

/// A connection whose transaction holds (or is taking) a key's lock, before the handler has it.
/// Dropped (the request was dropped, or the claim did not acquire), it rolls that transaction
/// back in a task of its own: no pooled connection keeps a key's lock.
pub(super) struct Claiming {
    conn: Option<PoolConnection<Postgres>>,
    store: PgStore,
}

impl Claiming {
    /// The connection, for [`PgStore::lend`]; nothing is rolled back any more.
    pub(super) fn into_connection(mut self) -> PoolConnection<Postgres> {
        self.conn.take().expect("taken once")
    }

    /// Rolls the transaction back now, before the request is answered.
    pub(super) async fn roll_back(mut self) {
        if let Some(conn) = self.conn.take() {
            self.store.roll_back_claim(conn).await;
        }
    }

    fn conn(&mut self) -> &mut PoolConnection<Postgres> {
        self.conn.as_mut().expect("held until taken")
    }
}

impl Drop for Claiming {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let store = self.store.clone();
                drop(runtime.spawn(async move { store.roll_back_claim(conn).await }));
            }
            // No runtime to roll back on: the connection is closed, which ends its transaction.
            Err(_) => conn.close_on_drop(),
        }
    }
}

/// Claims `call`'s key in a new transaction of `store`: at once, or, when the handler waits,
/// once the transaction holding the key's lock ended or a claim outside a transaction finished,
/// at most the handler's lease.
pub(super) async fn claim(call: &Call, store: &PgStore, fingerprint: &Fingerprint) -> KeyClaim {
    let conn = match store.pool().acquire().await {
        Ok(conn) => conn,
        Err(error) => return KeyClaim::Failed(StoreError::Unavailable(Box::new(error))),
    };
    let mut claiming = Claiming { conn: Some(conn), store: store.clone() };
    let give_up = Instant::now() + call.config.lease;
    let mut pause = Duration::from_millis(5);
    let mut begin = true;
    loop {
        let step = observe::time_operation(Operation::Claim, || {
            store.claim_in(claiming.conn(), &call.key, fingerprint, begin)
        });
        let step = step.await;
        begin = false;
        let waiting = call.config.wait && Instant::now() < give_up;
        match step {
            Ok(None) => {}
            Ok(Some(TxClaim::Acquired)) => return KeyClaim::Acquired(claiming),
            // Claimed outside a transaction (by a handler without `Tx`): wait as on any store.
            Ok(Some(TxClaim::Found(Claim::InFlight { .. }))) if waiting => {
                tokio::time::sleep(pause.min(give_up.saturating_duration_since(Instant::now()))).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
            // The transaction ends before the answer: one that took the key's lock must not let a
            // retry right after it find the key taken, and none is left to a task that may not
            // run before its runtime stops.
            Ok(Some(TxClaim::Found(claim))) => {
                claiming.roll_back().await;
                return KeyClaim::Answered(claim);
            }
            // Another transaction holds the key: PostgreSQL wakes this one when it ends.
            Ok(Some(TxClaim::Busy)) if waiting => {
                let left = give_up.saturating_duration_since(Instant::now());
                match store.wait_for_key(claiming.conn(), &call.key, left).await {
                    Ok(true) => {}
                    Ok(false) => {
                        claiming.roll_back().await;
                        return KeyClaim::Answered(Claim::InFlight { lease_left: Duration::ZERO });
                    }
                    Err(error) => {
                        claiming.roll_back().await;
                        return KeyClaim::Failed(error);
                    }
                }
            }
            Ok(Some(TxClaim::Busy)) => {
                claiming.roll_back().await;
                return KeyClaim::Answered(Claim::InFlight { lease_left: Duration::ZERO });
            }
            Err(error) => {
                claiming.roll_back().await;
                return KeyClaim::Failed(error);
            }
        }
    }
}
