//! The store's statements inside a request's own transaction, for handlers that take
//! [`Tx`](crate::postgres::Tx): the claim under the key's advisory lock, the wait for that lock,
//! the record and the release, and the savepoint that sets the handler's writes apart from the
//! claim.

use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::Row as _;

use super::{claim_of, malformed, millis, owned, unavailable, PgStore, CLAIM_ATTEMPTS, LOCK_NOT_AVAILABLE};
use crate::fingerprint::Fingerprint;
use crate::record::Record;
use crate::store::{Claim, ClaimToken, RecordKey, Store as _, StoreError};

/// The savepoint between idem's claim and the handler's first statement.
const HANDLER_SAVEPOINT: &str = "SAVEPOINT idem_handler";
/// Undoes everything the handler did, and ends the failed state a failed statement left.
const UNDO_HANDLER: &str = "ROLLBACK TO SAVEPOINT idem_handler";

/// SQLSTATE `in_failed_sql_transaction`: a statement failed earlier in the transaction, and every
/// statement but a rollback is refused until it ends.
const IN_FAILED_TRANSACTION: &str = "25P02";

/// Whether `error` says that the transaction was aborted by an earlier failed statement.
pub(crate) fn aborted_earlier(error: &StoreError) -> bool {
    let StoreError::Unavailable(error) = error else { return false };
    error
        .downcast_ref::<sqlx::Error>()
        .and_then(sqlx::Error::as_database_error)
        .is_some_and(|error| error.code().as_deref() == Some(IN_FAILED_TRANSACTION))
}

impl PgStore {
    /// [`Store::claim`] inside the transaction `conn` is in, for a handler that writes through
    /// it: the claim's row is written in the transaction and commits with it. `None`: another
    /// transaction holds the key's lock (it is claiming or running the key right now); see
    /// [`PgStore::wait_for_key`].
    pub(crate) async fn claim_in(
        &self,
        conn: &mut PgConnection,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Result<Option<Claim>, StoreError> {
        self.inner.background.ensure_started();
        for _ in 0..CLAIM_ATTEMPTS {
            let row = sqlx::query(&self.inner.statements.claim_in_transaction)
                .bind(self.clock_arg())
                .bind(&key.0[..])
                .bind(&fingerprint.as_bytes()[..])
                .bind(millis(lease, 1))
                .bind(self.inner.abandoned_after_ms)
                .bind(self.lock_key(key))
                .fetch_optional(&mut *conn)
                .await
                .map_err(unavailable)?;
            if let Some(row) = row {
                let busy: bool = row.try_get(5).map_err(unavailable)?;
                return if busy { Ok(None) } else { claim_of(&row).map(Some) };
            }
        }
        Err(malformed("the key kept changing under the claim"))
    }

    /// Waits, inside the transaction `conn` is in, until no other transaction holds `key`'s
    /// lock, at most `timeout`; then the key's lock is this transaction's. `false`: the time ran
    /// out, and the transaction is aborted. Claim again after `true`: the other transaction
    /// either committed (its record is there) or rolled back (the key is free).
    pub(crate) async fn wait_for_key(
        &self,
        conn: &mut PgConnection,
        key: &RecordKey,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        // One round trip (a simple query: statements without parameters); the caller's own
        // lock_timeout is put back once the lock is held.
        let script = format!(
            "SELECT set_config('idem.lock_timeout', current_setting('lock_timeout'), true);
SET LOCAL lock_timeout = '{}ms';
SELECT pg_advisory_xact_lock({});
SELECT set_config('lock_timeout', current_setting('idem.lock_timeout'), true);",
            millis(timeout, 1),
            self.lock_key(key)
        );
        match sqlx::Executor::execute(&mut *conn, script.as_str()).await {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some(LOCK_NOT_AVAILABLE) => Ok(false),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// The advisory lock of `key` in this store's table: the digest's first eight bytes, mixed
    /// with the table's name so that stores in other tables do not share locks.
    fn lock_key(&self, key: &RecordKey) -> i64 {
        let head = u64::from_be_bytes(key.0[..8].try_into().expect("eight bytes"));
        (head ^ self.inner.statements.lock_salt) as i64
    }

    /// [`Store::complete`] on `conn`: inside a transaction, the record commits or rolls back
    /// with the rest of it (until it commits, a duplicate sees the claim in flight, and a claim
    /// taking over a lapsed lease waits for it).
    pub(crate) async fn complete_in(
        &self,
        conn: &mut PgConnection,
        key: &RecordKey,
        token: ClaimToken,
        record: &Record,
    ) -> Result<(), StoreError> {
        let ttl = record.ttl_left(self.now());
        if ttl.is_zero() {
            return self.release_in(conn, key, token).await;
        }
        let stored: bool = sqlx::query_scalar(&self.inner.statements.complete)
            .bind(self.clock_arg())
            .bind(&key.0[..])
            .bind(token.0 as i64)
            .bind(&record.fingerprint.as_bytes()[..])
            .bind(record.encode())
            .bind(millis(ttl, 1))
            .fetch_one(&mut *conn)
            .await
            .map_err(unavailable)?;
        if stored {
            Ok(())
        } else {
            Err(StoreError::LeaseLost)
        }
    }

    /// [`Store::release`] on `conn`.
    pub(crate) async fn release_in(
        &self,
        conn: &mut PgConnection,
        key: &RecordKey,
        token: ClaimToken,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(&self.inner.statements.release)
            .bind(&key.0[..])
            .bind(token.0 as i64)
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
        owned(done.rows_affected())
    }

    /// Marks, inside the transaction `conn` is in, where the handler's work begins: after the
    /// claim, so that [`PgStore::undo_handler`] keeps the claim's row and the key's lock. One
    /// simple statement.
    pub(crate) async fn mark_handler_start(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        sqlx::Executor::execute(&mut *conn, HANDLER_SAVEPOINT).await.map_err(unavailable)?;
        Ok(())
    }

    /// Undoes every write the handler made since [`PgStore::mark_handler_start`] (its own
    /// savepoints included) and leaves the transaction usable again if a statement failed in
    /// it; the claim stays. One simple statement.
    pub(crate) async fn undo_handler(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        sqlx::Executor::execute(&mut *conn, UNDO_HANDLER).await.map_err(unavailable)?;
        Ok(())
    }
}
