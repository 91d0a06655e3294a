//! The embedded store: the zero-configuration default.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use super::packed::Packed;
use super::{Claim, ClaimToken, Clock, RecordKey, Store, StoreError, SystemClock, DEFAULT_MAX_BODY_BYTES};
use crate::fingerprint::Fingerprint;
use crate::record::Record;

const SHARDS: usize = 64;

/// An in-process store: completed records in a bounded [moka] cache, in-flight claims beside
/// it.
///
/// - Bounded in entries and in bytes: each record weighs `max(its size, max_bytes /
///   max_entries)`, and the cache holds at most `max_bytes` of weight, so neither bound is
///   exceeded (beyond the cache's short maintenance lag). Under pressure the least recently used
///   completed records are evicted; a retry of an evicted key runs the handler again.
/// - A record's expiry is checked on every read against the store's [`Clock`]: an expired
///   record is never replayed, and it is dropped when a read finds it or when eviction reaches
///   it (expired records are not swept otherwise, so a store that is not full keeps them until
///   it fills).
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
    completed: Cache<RecordKey, Packed>,
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
    /// Capped at `max_bytes`.
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
        let completed = record_cache(self.max_entries, self.max_bytes);
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

/// A cache of completed records bounded in entries and bytes, least recently used first out.
///
/// No per-entry expiry: the cache's own timers run on real time, which a store's injected
/// clock need not follow (a paused Tokio clock would see live records vanish). Readers check a
/// record's expiry against the store's clock instead, and the bounds keep memory in check.
pub(super) fn record_cache(max_entries: u64, max_bytes: u64) -> Cache<RecordKey, Packed> {
    // What an entry costs besides its encoding: the cache's own bookkeeping and the key.
    const ENTRY_OVERHEAD: u64 = 160;
    let min_weight = (max_bytes / max_entries.max(1)).max(1);
    Cache::builder()
        // Least recently used goes first. moka's default (TinyLFU) admits a new entry into a full
        // cache only if it was read more often than the entries it would evict; a record just
        // completed has been read once at most, so it would often be refused, and its retry
        // would run the handler again. The newest records are the ones retries ask for.
        .eviction_policy(EvictionPolicy::lru())
        .max_capacity(max_bytes)
        .weigher(move |_: &RecordKey, packed: &Packed| {
            (packed.len() as u64 + ENTRY_OVERHEAD).max(min_weight).min(u32::MAX as u64) as u32
        })
        .build()
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
            self.inner.completed.insert(*key, Packed::new(&record));
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
