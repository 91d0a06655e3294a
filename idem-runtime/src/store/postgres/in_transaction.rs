//! The store's statements inside a request's own transaction, for handlers that take
//! [`Tx`](crate::postgres::Tx): the claim under the key's advisory lock, the wait for that lock,
//! the record and the release, and the savepoint that sets the handler's writes apart from the
//! claim.

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, Postgres};
use sqlx::{Row as _, Transaction};

use super::{live_row, millis, owned, sql, unavailable, PgStore, LOCK_NOT_AVAILABLE};
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

/// What a handler taking `Tx` found when it claimed its key.
#[derive(Debug)]
pub(crate) enum TxClaim {
    /// Its transaction holds the key's lock and no live row is there: the handler runs.
    Acquired,
    /// A live row answers: a record (to replay, or a mismatch), or a claim taken outside a
    /// transaction and still in flight.
    Found(Claim),
    /// Another transaction holds the key's lock: it is running the key right now. See
    /// [`PgStore::wait_for_key`].
    Busy,
}

impl PgStore {
    /// The claim of `key` by a handler taking `Tx`, on `conn`: with `begin`, the transaction
    /// is opened first. Then, unless a live row is there, the key's advisory lock is taken
    /// (`pg_try_advisory_xact_lock`, held until the transaction ends), and the key's row is
    /// looked at in a statement of its own, whose snapshot sees every transaction that released
    /// the lock before. One round trip: a simple query with the values written in. Nothing is
    /// written: the record, written at the end, is the key's only row. A replay takes no lock.
    pub(crate) async fn claim_in(
        &self,
        conn: &mut PgConnection,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        begin: bool,
    ) -> Result<Option<TxClaim>, StoreError> {
        self.inner.background.ensure_started();
        let statements = &self.inner.statements;
        let clock = self.clock_arg();
        let script = format!(
            "{begin}{lock};\n{lookup}",
            begin = if begin { "BEGIN;\n" } else { "" },
            lock = sql::lock_unless_live(&statements.table, clock, &key.0, self.lock_key(key)),
            lookup = sql::lookup(&statements.table, clock, &key.0, fingerprint.as_bytes()),
        );
        let rows = sqlx::Executor::fetch_all(&mut *conn, script.as_str()).await.map_err(unavailable)?;
        // The lock's statement answers one column, when it ran; the look, four, when a live row
        // is there.
        let held = match rows.iter().find(|row| row.len() == 1) {
            Some(row) => Some(row.try_get::<bool, _>(0).map_err(unavailable)?),
            None => None,
        };
        match (rows.iter().find(|row| row.len() == 4), held) {
            (Some(row), _) => live_row(row, 0).map(|claim| Some(TxClaim::Found(claim))),
            (None, Some(true)) => Ok(Some(TxClaim::Acquired)),
            (None, Some(false)) => Ok(Some(TxClaim::Busy)),
            // The live row the lock's statement saw was gone (expired) by the look: again.
            (None, None) => Ok(None),
        }
    }

    /// Sets the savepoint the handler's writes begin after (so that [`PgStore::undo_handler`]
    /// keeps the key's lock) on `conn`, whose transaction [`PgStore::claim_in`] opened, and
    /// hands that transaction over as the handler's: one round trip.
    pub(crate) async fn lend(
        &self,
        conn: PoolConnection<Postgres>,
    ) -> Result<Transaction<'static, Postgres>, StoreError> {
        // The savepoint is the statement sqlx begins its transaction with, so that sqlx counts
        // one level of transaction (the handler's own `begin()` is then a savepoint) without a
        // statement of its own. A savepoint in a healthy transaction fails only with the
        // connection, which the pool then closes.
        Transaction::begin(conn, Some(HANDLER_SAVEPOINT.into())).await.map_err(unavailable)
    }

    /// Ends the transaction [`PgStore::claim_in`] opened on `conn` before it was lent, keeping
    /// nothing; a connection that cannot is closed rather than reused.
    pub(crate) async fn roll_back_claim(&self, mut conn: PoolConnection<Postgres>) {
        if let Err(error) = sqlx::Executor::execute(&mut *conn, "ROLLBACK").await {
            tracing::warn!(target: "idem", %error, "rolling back a claim's transaction failed; its connection is closed");
            conn.close_on_drop();
        }
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
    pub(super) fn lock_key(&self, key: &RecordKey) -> i64 {
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

    /// Writes the record of a handler taking `Tx` in its transaction, under the key's lock:
    /// it commits with the handler's writes. [`StoreError::LeaseLost`] when a live row is there
    /// (a claim outside a transaction took the key meanwhile); nothing is written for a record
    /// whose ttl has already run out.
    pub(crate) async fn record_in(
        &self,
        conn: &mut PgConnection,
        key: &RecordKey,
        record: &Record,
    ) -> Result<(), StoreError> {
        let ttl = record.ttl_left(self.now());
        if ttl.is_zero() {
            return Ok(());
        }
        let written = sqlx::query(&self.inner.statements.record_in_transaction)
            .bind(self.clock_arg())
            .bind(&key.0[..])
            .bind(&record.fingerprint.as_bytes()[..])
            .bind(record.encode())
            .bind(millis(ttl, 1))
            .fetch_optional(&mut *conn)
            .await
            .map_err(unavailable)?;
        written.map(|_| ()).ok_or(StoreError::LeaseLost)
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

    /// Undoes every write the handler made since [`PgStore::lend`] (its own
    /// savepoints included) and leaves the transaction usable again if a statement failed in
    /// it; the claim stays. One simple statement.
    pub(crate) async fn undo_handler(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        sqlx::Executor::execute(&mut *conn, UNDO_HANDLER).await.map_err(unavailable)?;
        Ok(())
    }
}
