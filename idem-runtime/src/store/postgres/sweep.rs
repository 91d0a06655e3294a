//! The background sweep: rows past their `purge_at` deleted in bounded batches, on an interval.

use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::oneshot;

use super::sql::Statements;
use crate::store::{Clock, StoreError};

/// What one sweep needs: the pool, the statement, the clock and the statement's batch size.
#[derive(Clone)]
pub(super) struct Sweeper {
    pub(super) pool: PgPool,
    pub(super) statements: Arc<Statements>,
    pub(super) clock: Option<Arc<dyn Clock>>,
    pub(super) batch: u64,
}

impl Sweeper {
    /// Deletes rows past their `purge_at`, a batch per statement, until a batch comes back
    /// short. Returns how many rows went.
    pub(super) async fn run(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let deleted = sqlx::query(&self.statements.sweep)
                .bind(super::clock_arg(&self.clock))
                .execute(&self.pool)
                .await
                .map_err(super::unavailable)?
                .rows_affected();
            total += deleted;
            if deleted < self.batch {
                return Ok(total);
            }
        }
    }
}

/// The background task of one store: started by the store's first operation (which runs
/// inside a Tokio runtime), stopped when the last clone of the store is dropped.
pub(super) struct Background {
    /// `None` when the sweep is off.
    every: Option<Duration>,
    started: Once,
    /// Taken when the task starts; dropping the sender (with the store) stops it.
    start: Mutex<Option<(Sweeper, oneshot::Receiver<()>)>>,
    _stop: oneshot::Sender<()>,
}

impl Background {
    pub(super) fn new(sweeper: Sweeper, every: Option<Duration>) -> Self {
        let (stop, stopped) = oneshot::channel();
        Self { every, started: Once::new(), start: Mutex::new(Some((sweeper, stopped))), _stop: stop }
    }

    /// Starts the task on the current Tokio runtime if it has not started yet (an atomic load
    /// once it has).
    pub(super) fn ensure_started(&self) {
        let Some(every) = self.every else { return };
        self.started.call_once(|| {
            let start = self.start.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
            if let (Some((sweeper, stopped)), Ok(runtime)) = (start, tokio::runtime::Handle::try_current()) {
                runtime.spawn(sweep_every(sweeper, every, stopped));
            }
        });
    }
}

async fn sweep_every(sweeper: Sweeper, every: Duration, mut stopped: oneshot::Receiver<()>) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = ticks.tick() => {}
        }
        match sweeper.run().await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(target: "idem", deleted, "swept expired idempotency records"),
            Err(error) => tracing::warn!(target: "idem", %error, "could not sweep expired idempotency records"),
        }
    }
}
