//! A store in PostgreSQL, shared by every server of a fleet.

mod builder;
mod in_transaction;
mod sql;
mod sweep;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::Row as _;

pub use self::builder::PgStoreBuilder;
pub(crate) use self::in_transaction::aborted_earlier;
use self::sql::{Names, Statements};
use self::sweep::{Background, Sweeper};
use super::{Claim, ClaimToken, Clock, RecordKey, Store, StoreError, SystemClock, DEFAULT_MAX_BODY_BYTES};
use crate::fingerprint::Fingerprint;
use crate::record::Record;

/// A [`Store`] in PostgreSQL, for several servers sharing one database (feature `postgres`).
///
/// Every operation is one statement, so one round trip once the connection has prepared it
/// (its first use on a connection adds one): a miss costs two (claim, complete), a replay one.
/// A claim is atomic per key across every process sharing the table: a new key is taken by an
/// `INSERT … ON CONFLICT DO NOTHING`, an expired one by an `UPDATE` whose condition PostgreSQL
/// checks again on the row's latest version, and a live one is answered from the statement's
/// snapshot without a write or a row lock. Only when a concurrent claim or sweep changed the key
/// between the statement's snapshot and its write does the claim run a second time.
///
/// Time comes from the database (`statement_timestamp()`), the one clock a fleet shares, unless
/// a [`Clock`] is injected ([`PgStoreBuilder::clock`], for tests driving time).
///
/// # The table
///
/// One row per key, created by [`PgStore::MIGRATION`] (run it yourself, or let
/// [`PgStore::migrate`] do it; both are idempotent):
///
/// | column | holds |
/// | --- | --- |
/// | `record_key` | the primary key: SHA-256 of scope and key (32 bytes); never the raw key or credential |
/// | `token` | the claim token, from the sequence `<table>_token`: a later claim of a key always gets a larger one |
/// | `fingerprint` | the request's fingerprint (32 bytes, keyed by the raw key) |
/// | `completed` | false while in flight |
/// | `deadline` | in flight: when the lease runs out; completed: when the record expires |
/// | `purge_at` | when the sweep deletes the row (indexed) |
/// | `record` | completed: the [`Record`] encoding |
///
/// # Expiry
///
/// An expired record or a lapsed lease is dead at once: every statement compares `deadline`
/// with the time. The rows themselves are deleted by a sweep: `DELETE … WHERE ctid = ANY (ARRAY
/// (SELECT ctid … WHERE purge_at <= now ORDER BY purge_at LIMIT n FOR UPDATE SKIP LOCKED))`,
/// which reads the `purge_at` index from its start, so it never scans the table however large.
/// Each store runs it in the background every minute, in batches of 1000 until a batch comes
/// back short ([`PgStoreBuilder::sweep_every`], [`PgStoreBuilder::sweep_batch`]); instances
/// sharing the table skip each other's rows. A completed row goes when its record expires; an
/// in-flight one an hour after its lease ran out ([`PgStoreBuilder::abandoned_after`]), so a
/// crashed owner's claim lingers only as long as that (any claim may take it over as soon as its
/// lease has run out).
///
/// # Durability
///
/// A claim is committed before the handler runs. If the database fails over to a standby that
/// had not received the last commits (asynchronous replication), claims and records of those
/// moments are lost and a retry may run its handler again: use synchronous replication
/// (`synchronous_commit = on` with a synchronous standby) where that matters.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use idem_runtime::{store::PgStore, Idempotency};
///
/// // A pool of its own, and the table created if missing:
/// let store = PgStore::connect("postgres://app@db/shop").await?;
/// // Or on the application's pool, in a schema of its own, the table made by your migrations:
/// let pool = sqlx::PgPool::connect("postgres://app@db/shop").await?;
/// let store = PgStore::builder(pool).schema("idem").build();
/// let layer = Idempotency::new(store);
/// # let _ = layer; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    names: Names,
    statements: Arc<Statements>,
    max_body_bytes: usize,
    /// `None`: the statements read the database's clock.
    clock: Option<Arc<dyn Clock>>,
    abandoned_after_ms: i64,
    sweeper: Sweeper,
    background: Background,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("table", &self.inner.names.table())
            .field("database_clock", &self.inner.clock.is_none())
            .finish_non_exhaustive()
    }
}

/// The longest duration the statements take: a hundred years.
const MAX_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Whole milliseconds, at least `min`, at most [`MAX_MS`].
fn millis(d: Duration, min: u64) -> i64 {
    (d.as_millis().min(u128::from(MAX_MS)) as u64).max(min) as i64
}

/// The statements' clock argument: the injected clock's time in ms, or NULL for the
/// database's.
fn clock_arg(clock: &Option<Arc<dyn Clock>>) -> Option<i64> {
    clock.as_ref().map(|clock| clock.now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
}

fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

fn malformed(what: &'static str) -> StoreError {
    StoreError::Unavailable(format!("unexpected reply from PostgreSQL: {what}").into())
}

/// SQLSTATE `lock_not_available`: `lock_timeout` ran out.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// How often a claim runs again when the key keeps changing under it. Each attempt that
/// returns nothing saw a change committed by another session; the next one sees that change.
const CLAIM_ATTEMPTS: usize = 8;

impl PgStore {
    /// The schema for the default table, `"public"."idem_records"`, for your own migrations.
    /// [`PgStore::migration`] gives it for the store's names; every statement is idempotent
    /// (`CREATE … IF NOT EXISTS`).
    pub const MIGRATION: &'static str = sql::MIGRATION;

    /// Configures a store on `pool`: the table `"public"."idem_records"` unless set otherwise.
    pub fn builder(pool: PgPool) -> PgStoreBuilder {
        PgStoreBuilder {
            pool,
            names: Names { schema: "public".to_owned(), table: "idem_records".to_owned() },
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            clock: None,
            abandoned_after: Duration::from_secs(3600),
            sweep_every: Some(Duration::from_secs(60)),
            sweep_batch: 1000,
        }
    }

    /// Connects to `url` (`postgres://user:password@host:port/database`) with a pool of its
    /// own, builds a store with the defaults and creates its table if missing
    /// ([`PgStore::migrate`]). The pool keeps at most 10 connections, waits at most a second for
    /// one, and hands one out without pinging it first (sqlx's `test_before_acquire`, which
    /// would cost every operation a second round trip; a dead connection fails one operation
    /// instead). For other settings, build the pool yourself and use [`PgStore::builder`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(1))
            .test_before_acquire(false)
            .connect(url)
            .await
            .map_err(unavailable)?;
        let store = Self::builder(pool).build();
        store.migrate().await?;
        Ok(store)
    }

    /// [`PgStore::MIGRATION`] for this store's schema and table (with a `CREATE SCHEMA IF NOT
    /// EXISTS` first when the schema is not `public`).
    pub fn migration(&self) -> String {
        sql::migration(&self.inner.names)
    }

    /// Runs [`PgStore::migration`] in one transaction, under an advisory lock so that
    /// instances starting together do not race. Idempotent.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        // One simple query: its statements run as one transaction, which holds the lock.
        let script = format!("SELECT pg_advisory_xact_lock(hashtext('idem migration'));\n{}", self.migration());
        sqlx::raw_sql(&script).execute(&self.inner.pool).await.map_err(unavailable)?;
        Ok(())
    }

    /// Deletes the rows past their time now (expired records, claims abandoned for
    /// [`abandoned_after`](PgStoreBuilder::abandoned_after)), in batches; returns how many.
    /// The background sweep runs this on its interval.
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        self.inner.sweeper.run().await
    }

    /// The table, as `"schema"."table"`.
    pub fn table(&self) -> String {
        self.inner.names.table()
    }

    /// The pool the store runs on.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Whether `other` keeps its records in the same table of the same database.
    pub(crate) fn same_as(&self, other: &PgStore) -> bool {
        if Arc::ptr_eq(&self.inner, &other.inner) {
            return true;
        }
        let (a, b) = (self.inner.pool.connect_options(), other.inner.pool.connect_options());
        self.inner.names == other.inner.names
            && a.get_host() == b.get_host()
            && a.get_port() == b.get_port()
            && a.get_database() == b.get_database()
    }

    fn clock_arg(&self) -> Option<i64> {
        clock_arg(&self.inner.clock)
    }
}

/// What a claim's row says.
fn claim_of(row: &PgRow) -> Result<Claim, StoreError> {
    let column = |e: sqlx::Error| StoreError::Unavailable(Box::new(e));
    if let Some(token) = row.try_get::<Option<i64>, _>(0).map_err(column)? {
        return Ok(Claim::Acquired(ClaimToken(token as u64)));
    }
    let completed: Option<bool> = row.try_get(1).map_err(column)?;
    let same: Option<bool> = row.try_get(2).map_err(column)?;
    match (completed, same) {
        (Some(_), Some(false)) => Ok(Claim::Mismatch),
        (Some(true), Some(true)) => {
            let bytes: Option<Vec<u8>> = row.try_get(4).map_err(column)?;
            let bytes = Bytes::from(bytes.ok_or_else(|| malformed("a completed row without its record"))?);
            let record = Record::decode_shared(&bytes).map_err(|e| StoreError::Unavailable(Box::new(e)))?;
            Ok(Claim::Completed(Arc::new(record)))
        }
        (Some(false), Some(true)) => {
            let left_us: Option<i64> = row.try_get(3).map_err(column)?;
            let left_us = left_us.ok_or_else(|| malformed("an in-flight row without its lease"))?;
            Ok(Claim::InFlight { lease_left: Duration::from_micros(left_us.max(0) as u64) })
        }
        _ => Err(malformed("claim")),
    }
}

impl Store for PgStore {
    async fn claim(&self, key: &RecordKey, fingerprint: &Fingerprint, lease: Duration) -> Result<Claim, StoreError> {
        self.inner.background.ensure_started();
        for _ in 0..CLAIM_ATTEMPTS {
            let row = sqlx::query(&self.inner.statements.claim)
                .bind(self.clock_arg())
                .bind(&key.0[..])
                .bind(&fingerprint.as_bytes()[..])
                .bind(millis(lease, 1))
                .bind(self.inner.abandoned_after_ms)
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(unavailable)?;
            if let Some(row) = row {
                return claim_of(&row);
            }
        }
        Err(malformed("the key kept changing under the claim"))
    }

    async fn complete(&self, key: &RecordKey, token: ClaimToken, record: Record) -> Result<(), StoreError> {
        let mut conn = self.inner.pool.acquire().await.map_err(unavailable)?;
        self.complete_in(&mut conn, key, token, &record).await
    }

    async fn release(&self, key: &RecordKey, token: ClaimToken) -> Result<(), StoreError> {
        let mut conn = self.inner.pool.acquire().await.map_err(unavailable)?;
        self.release_in(&mut conn, key, token).await
    }

    async fn renew(&self, key: &RecordKey, token: ClaimToken, lease: Duration) -> Result<(), StoreError> {
        let done = sqlx::query(&self.inner.statements.renew)
            .bind(self.clock_arg())
            .bind(&key.0[..])
            .bind(token.0 as i64)
            .bind(millis(lease, 1))
            .bind(self.inner.abandoned_after_ms)
            .execute(&self.inner.pool)
            .await
            .map_err(unavailable)?;
        owned(done.rows_affected())
    }

    fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    fn now(&self) -> SystemTime {
        self.inner.clock.as_ref().map_or_else(|| SystemClock.now(), |clock| clock.now())
    }
}

/// An owner-only statement's answer: it changed the claim's row, or the claim is not the
/// caller's any more.
fn owned(rows: u64) -> Result<(), StoreError> {
    if rows == 1 {
        Ok(())
    } else {
        Err(StoreError::LeaseLost)
    }
}
