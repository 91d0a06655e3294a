//! Configuring a [`PgStore`].

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPool;

use super::sql::{self, Names, Statements};
use super::sweep::{Background, Sweeper};
use super::{millis, Inner, PgStore};
use crate::store::Clock;

/// Configures a [`PgStore`].
#[derive(Clone)]
pub struct PgStoreBuilder {
    pub(super) pool: PgPool,
    pub(super) names: Names,
    pub(super) max_body_bytes: usize,
    pub(super) clock: Option<Arc<dyn Clock>>,
    pub(super) abandoned_after: Duration,
    pub(super) sweep_every: Option<Duration>,
    pub(super) sweep_batch: u32,
}

impl std::fmt::Debug for PgStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStoreBuilder")
            .field("table", &self.names.table())
            .field("max_body_bytes", &self.max_body_bytes)
            .field("abandoned_after", &self.abandoned_after)
            .field("sweep_every", &self.sweep_every)
            .field("sweep_batch", &self.sweep_batch)
            .field("database_clock", &self.clock.is_none())
            .finish_non_exhaustive()
    }
}

impl PgStoreBuilder {
    /// The schema of the table ["public"]: a lower-case SQL identifier (letters, digits, `_`;
    /// at most 48 bytes).
    ///
    /// # Panics
    ///
    /// If `schema` is not such an identifier.
    pub fn schema(mut self, schema: &str) -> Self {
        assert!(sql::is_identifier(schema), "PgStore: schema {schema:?} is not a lower-case SQL identifier");
        self.names.schema = schema.to_owned();
        self
    }

    /// The table's name ["idem_records"]: a lower-case SQL identifier (letters, digits, `_`;
    /// at most 48 bytes). Its sequence is `<table>_token`, its index `<table>_purge_at`.
    ///
    /// # Panics
    ///
    /// If `table` is not such an identifier.
    pub fn table(mut self, table: &str) -> Self {
        assert!(sql::is_identifier(table), "PgStore: table {table:?} is not a lower-case SQL identifier");
        self.names.table = table.to_owned();
        self
    }

    /// The largest response body kept [1 MiB]; a larger one is kept as status and headers only.
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// Reads lease deadlines and record expiry from `clock` instead of the database's clock
    /// (the default, which every instance of a fleet shares). Meant for tests driving time
    /// (`TokioClock` under `tokio::time::pause()`); the background sweep reads it too.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// How long after its lease ran out an in-flight claim is swept [1 hour]. Any claim may
    /// take the key over as soon as the lease has run out; this only bounds how long the row
    /// of a crashed owner stays. Its owner, should it still be running, can renew or complete
    /// until the row is swept or taken over.
    pub fn abandoned_after(mut self, after: Duration) -> Self {
        self.abandoned_after = after;
        self
    }

    /// How often the store sweeps rows past their time in the background [1 minute]; `None`
    /// turns the background sweep off (run [`PgStore::sweep`] yourself then, from a job of
    /// your own). The first sweep runs one interval after the store's first claim.
    pub fn sweep_every(mut self, every: Option<Duration>) -> Self {
        self.sweep_every = every.filter(|every| !every.is_zero());
        self
    }

    /// The most rows one sweep statement deletes [1000 rows; at most 100 000]; a sweep runs
    /// statements until one deletes fewer.
    pub fn sweep_batch(mut self, rows: u32) -> Self {
        self.sweep_batch = rows.clamp(1, 100_000);
        self
    }

    /// Builds the store; no I/O. The table must exist before the first operation (see
    /// [`PgStore::migrate`]). The background sweep starts with the store's first claim.
    pub fn build(self) -> PgStore {
        let statements = Arc::new(Statements::new(&self.names, self.sweep_batch));
        let sweeper = Sweeper {
            pool: self.pool.clone(),
            statements: statements.clone(),
            clock: self.clock.clone(),
            batch: u64::from(self.sweep_batch),
        };
        PgStore {
            inner: Arc::new(Inner {
                background: Background::new(sweeper.clone(), self.sweep_every),
                sweeper,
                pool: self.pool,
                names: self.names,
                statements,
                max_body_bytes: self.max_body_bytes,
                clock: self.clock,
                abandoned_after_ms: millis(self.abandoned_after, 0),
            }),
        }
    }
}
