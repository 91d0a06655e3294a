//! The embedded store: the zero-configuration default.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::cached::RecordCache;
use super::packed::Packed;
use super::{Claim, ClaimToken, Clock, RecordKey, Store, StoreError, SystemClock, DEFAULT_MAX_BODY_BYTES};
use crate::fingerprint::Fingerprint;
use crate::record::{Record, StoredBody};

const SHARDS: usize = 64;

/// An in-process store: completed records in a bounded [moka] cache, in-flight claims beside
/// it.
///
/// - Bounded in entries and in bytes: each record weighs `max(its size, max_bytes /
///   max_entries)`, and the cache holds at most `max_bytes` of weight, so neither bound is
///   exceeded (beyond the cache's short maintenance lag, and headers heavier than the store,
///   below). Under pressure the least recently used completed records are evicted; a retry of
///   an evicted key runs the handler again.
/// - A record's expiry is checked on every read against the store's [`Clock`]: an expired
///   record is never replayed, and it is dropped when a read finds it or when eviction reaches
///   it (expired records are not swept otherwise, so a store that is not full keeps them until
///   it fills).
/// - A completed record is never refused. One heavier than `max_bytes` by itself (a body
///   and its trailers within [`max_body_bytes`](MemoryStoreBuilder::max_body_bytes) whose headers and about 200
///   bytes of bookkeeping take it past `max_bytes`) is kept as status and headers, and its
///   replay answers with the documented body-not-stored problem, as for a body over the limit.
///   Headers heavier than `max_bytes` by themselves are kept all the same: that record counts
///   as the whole capacity, so the store holds it alone (beyond `max_bytes` by its excess) until
///   it is evicted like any other.
/// - In-flight claims are never evicted: they live outside the cache until completed or
///   released, so their number is bounded by the requests running at once.
/// - Every operation on one key holds that key's shard lock, which makes claims atomic.
///
/// Clones share the same storage.
///
/// ```
/// use idem_runtime::store::MemoryStore;
///
/// let store = MemoryStore::builder().max_entries(10_000).max_bytes(16 << 20).build();
/// # drop(store);
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    completed: RecordCache,
    in_flight: Box<[Mutex<HashMap<RecordKey, InFlight>>]>,
    next_token: AtomicU64,
    max_body_bytes: usize,
    clock: Arc<dyn Clock>,
}

struct InFlight {
    token: u64,
    fingerprint: Fingerprint,
    lease_until: SystemTime,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("completed", &self.inner.completed.entry_count())
            .field("weighted_size", &self.inner.completed.weighted_size())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::builder().build()
    }
}

/// Sizes a [`MemoryStore`].
#[derive(Clone)]
pub struct MemoryStoreBuilder {
    max_entries: u64,
    max_bytes: u64,
    max_body_bytes: usize,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStoreBuilder")
            .field("max_entries", &self.max_entries)
            .field("max_bytes", &self.max_bytes)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl MemoryStoreBuilder {
    /// The most completed records kept [100 000].
    pub fn max_entries(mut self, n: u64) -> Self {
        self.max_entries = n.max(1);
        self
    }

    /// The most bytes of completed records kept [64 MiB].
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = n.max(1);
        self
    }

    /// The largest response body kept [1 MiB]; a larger one is kept as status and headers only.
    /// Capped at `max_bytes`; a record whose body fits but which, with its headers, is heavier
    /// than `max_bytes` is kept as status and headers too.
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// The clock leases and record expiry are read from [[`SystemClock`]]. A
    /// [`TokioClock`](super::TokioClock) lets tests drive them with `tokio::time::pause()`.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore {
        let completed = RecordCache::new(self.max_entries, self.max_bytes);
        MemoryStore {
            inner: Arc::new(Inner {
                completed,
                in_flight: (0..SHARDS).map(|_| Mutex::default()).collect(),
                next_token: AtomicU64::new(1),
                max_body_bytes: self.max_body_bytes.min(self.max_bytes as usize),
                clock: self.clock,
            }),
        }
    }
}

impl MemoryStore {
    /// A store with the default bounds (100 000 records, 64 MiB, 1 MiB per body).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sizes a store.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            max_entries: 100_000,
            max_bytes: 64 << 20,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            clock: Arc::new(SystemClock),
        }
    }

    fn shard(&self, key: &RecordKey) -> MutexGuard<'_, HashMap<RecordKey, InFlight>> {
        let shard = &self.inner.in_flight[key.0[0] as usize % SHARDS];
        // A panic while holding the lock leaves the map consistent: every update is one call.
        shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn claim_now(&self, key: &RecordKey, fingerprint: &Fingerprint, lease: Duration) -> Claim {
        let mut in_flight = self.shard(key);
        let now = self.inner.clock.now();
        if let Some(packed) = self.inner.completed.get(key) {
            if !packed.is_expired_at(now) {
                return packed.claim(fingerprint);
            }
            self.inner.completed.invalidate(key);
        }
        if let Some(claim) = in_flight.get(key) {
            if let Ok(lease_left) = claim.lease_until.duration_since(now) {
                if !lease_left.is_zero() {
                    return if claim.fingerprint == *fingerprint {
                        Claim::InFlight { lease_left }
                    } else {
                        Claim::Mismatch
                    };
                }
            }
        }
        let token = self.inner.next_token.fetch_add(1, Ordering::Relaxed);
        in_flight.insert(*key, InFlight { token, fingerprint: *fingerprint, lease_until: deadline(now, lease) });
        Claim::Acquired(ClaimToken(token))
    }

    /// `record` as the store keeps it: whole if it fits the store's capacity, else as status and
    /// headers (see the type's docs).
    fn keepable(&self, record: Record) -> Packed {
        let packed = Packed::new(&record);
        let cache = &self.inner.completed;
        if cache.fits(&packed) {
            return packed;
        }
        let record_bytes = packed.len();
        let packed = match record.body {
            StoredBody::Kept(_) | StoredBody::KeptWithTrailers { .. } => {
                Packed::new(&Record { body: StoredBody::TooLarge, ..record })
            }
            StoredBody::TooLarge | StoredBody::Failed => packed,
        };
        if cache.fits(&packed) {
            tracing::warn!(target: "idem", record_bytes, "a record is heavier than the embedded store's max_bytes: it is kept as status and headers, and its replay answers with the body-not-stored problem");
        } else {
            tracing::warn!(target: "idem", record_bytes, "a record's headers alone are heavier than the embedded store's max_bytes: it is kept as status and headers, and the store holds it alone until it is evicted");
        }
        packed
    }

    fn owned<'a>(
        map: &'a mut HashMap<RecordKey, InFlight>,
        key: &RecordKey,
        token: ClaimToken,
    ) -> Result<&'a mut InFlight, StoreError> {
        map.get_mut(key).filter(|claim| claim.token == token.0).ok_or(StoreError::LeaseLost)
    }
}

impl Store for MemoryStore {
    async fn claim(&self, key: &RecordKey, fingerprint: &Fingerprint, lease: Duration) -> Result<Claim, StoreError> {
        Ok(self.claim_now(key, fingerprint, lease))
    }

    async fn complete(&self, key: &RecordKey, token: ClaimToken, record: Record) -> Result<(), StoreError> {
        let mut in_flight = self.shard(key);
        Self::owned(&mut in_flight, key, token)?;
        if !record.is_expired_at(self.inner.clock.now()) {
            self.inner.completed.insert(*key, self.keepable(record));
        }
        in_flight.remove(key);
        Ok(())
    }

    async fn release(&self, key: &RecordKey, token: ClaimToken) -> Result<(), StoreError> {
        let mut in_flight = self.shard(key);
        Self::owned(&mut in_flight, key, token)?;
        in_flight.remove(key);
        Ok(())
    }

    async fn renew(&self, key: &RecordKey, token: ClaimToken, lease: Duration) -> Result<(), StoreError> {
        let mut in_flight = self.shard(key);
        Self::owned(&mut in_flight, key, token)?.lease_until = deadline(self.inner.clock.now(), lease);
        Ok(())
    }

    fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    fn now(&self) -> SystemTime {
        self.inner.clock.now()
    }
}

/// `now + lease`, saturating far in the future instead of overflowing the clock.
fn deadline(now: SystemTime, lease: Duration) -> SystemTime {
    now.checked_add(lease).unwrap_or_else(|| now + Duration::from_secs(1 << 40))
}
