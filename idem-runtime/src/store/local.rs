//! A local tier: completed records cached in process, in front of any store.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::cached::RecordCache;
use super::packed::Packed;
use super::{Claim, ClaimToken, Listener, RecordKey, Store, StoreError};
use crate::fingerprint::Fingerprint;
use crate::record::Record;

/// Caches *completed* records of another store in process, so that a replay on a warm
/// instance costs no round trip. In-flight state is never cached: every claim that is not a
/// cached replay or mismatch goes to the inner store, which stays the one authority.
///
/// A completed record never changes until it expires, so a cached copy cannot be stale. A
/// cached copy is checked against the inner store's clock ([`Store::now`]) on every read: an
/// expired one is dropped, never replayed. The cache is bounded in entries and bytes and evicts
/// the least recently used copies; an evicted copy is asked of the inner store again. A record
/// heavier than the tier's `max_bytes` by itself is not cached at all: its replays are asked of
/// the inner store, which keeps it whole.
///
/// ```no_run
/// # async fn demo() -> Result<(), idem_runtime::store::StoreError> {
/// use idem_runtime::store::{LocalTier, RedisStore};
///
/// let store = LocalTier::new(RedisStore::connect("redis://127.0.0.1:6379").await?);
/// # let _ = store; Ok(()) }
/// ```
#[derive(Clone)]
pub struct LocalTier<S> {
    inner: S,
    cache: Arc<RecordCache>,
}

impl<S> std::fmt::Debug for LocalTier<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTier").field("cached", &self.cache.entry_count()).finish_non_exhaustive()
    }
}

impl<S: Store> LocalTier<S> {
    /// A tier of at most 10 000 records and 16 MiB in front of `inner`.
    pub fn new(inner: S) -> Self {
        Self::with_capacity(inner, 10_000, 16 << 20)
    }

    /// A tier of at most `max_entries` records and `max_bytes` bytes in front of `inner`.
    pub fn with_capacity(inner: S, max_entries: u64, max_bytes: u64) -> Self {
        Self { inner, cache: Arc::new(RecordCache::new(max_entries, max_bytes)) }
    }

    /// The store behind the tier.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// What the tier knows of `key` without asking the inner store: a completed record for
    /// `fingerprint` (or a mismatch), when a copy is cached and not expired.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn cached(&self, key: &RecordKey, fingerprint: &Fingerprint) -> Option<Claim> {
        let packed = self.cache.get(key)?;
        if packed.is_expired_at(self.inner.now()) {
            self.cache.invalidate(key);
            return None;
        }
        Some(packed.claim(fingerprint))
    }

    /// Caches a copy of `key`'s completed `record`, unless it has expired or is too heavy.
    pub(crate) fn remember(&self, key: &RecordKey, record: &Record) {
        if !record.is_expired_at(self.inner.now()) {
            self.keep(key, Packed::new(record));
        }
    }

    /// Caches a copy that fits the tier; a heavier one is left to the inner store.
    fn keep(&self, key: &RecordKey, packed: Packed) {
        if self.cache.fits(&packed) {
            self.cache.insert(*key, packed);
        }
    }
}

impl<S: Store> Store for LocalTier<S> {
    async fn claim(&self, key: &RecordKey, fingerprint: &Fingerprint, lease: Duration) -> Result<Claim, StoreError> {
        if let Some(packed) = self.cache.get(key) {
            if !packed.is_expired_at(self.inner.now()) {
                return Ok(packed.claim(fingerprint));
            }
            self.cache.invalidate(key);
        }
        let claim = self.inner.claim(key, fingerprint, lease).await?;
        if let Claim::Completed(record) = &claim {
            self.remember(key, record);
        }
        Ok(claim)
    }

    async fn complete(&self, key: &RecordKey, token: ClaimToken, record: Record) -> Result<(), StoreError> {
        let packed = Packed::new(&record);
        self.inner.complete(key, token, record).await?;
        if !packed.is_expired_at(self.inner.now()) {
            self.keep(key, packed);
        }
        Ok(())
    }

    async fn release(&self, key: &RecordKey, token: ClaimToken) -> Result<(), StoreError> {
        self.inner.release(key, token).await
    }

    async fn renew(&self, key: &RecordKey, token: ClaimToken, lease: Duration) -> Result<(), StoreError> {
        self.inner.renew(key, token, lease).await
    }

    fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes()
    }

    fn listen(&self, key: &RecordKey) -> impl Future<Output = Option<Listener>> + Send {
        self.inner.listen(key)
    }

    fn now(&self) -> SystemTime {
        self.inner.now()
    }
}
