//! Where stores read the time: lease deadlines and record expiry.

use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

/// The time source of a store. Everything a store does with time reads it: lease deadlines,
/// record expiry, the expiry of cached copies.
///
/// Stores use [`SystemClock`] unless given another. [`TokioClock`] follows Tokio's clock, so
/// tests can drive leases and ttls with `tokio::time::pause()` and `advance()` instead of
/// sleeping:
///
/// ```
/// use idem_runtime::store::{MemoryStore, TokioClock};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store = MemoryStore::builder().clock(TokioClock::new()).build();
/// # drop(store); }
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

/// The system clock, advanced by the monotonic clock: the wall-clock time when the process
/// first read it, plus the monotonic time elapsed since. A step of the wall clock (an NTP
/// correction, a manual change) never cuts a lease short or stretches one; the rate follows
/// the system's (NTP slews it).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        static ORIGIN: OnceLock<(SystemTime, Instant)> = OnceLock::new();
        let (wall, monotonic) = ORIGIN.get_or_init(|| (SystemTime::now(), Instant::now()));
        *wall + monotonic.elapsed()
    }
}

/// Follows Tokio's clock: [`SystemClock`]'s time at creation plus the time elapsed since on
/// `tokio::time::Instant`. Under `tokio::time::pause()` (Tokio's `test-util` feature) it
/// stands still and moves with `tokio::time::advance()` and the runtime's auto-advance, so a
/// test can let leases and ttls run out without waiting.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    wall: SystemTime,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading the current time now. Create it inside the runtime whose clock it
    /// should follow.
    pub fn new() -> Self {
        Self { wall: SystemClock.now(), start: tokio::time::Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.wall + self.start.elapsed()
    }
}
