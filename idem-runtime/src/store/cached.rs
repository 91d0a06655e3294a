//! The bounded cache of packed records that the in-process stores keep
//! ([`MemoryStore`](super::MemoryStore), [`LocalTier`](super::LocalTier)): what a record weighs,
//! and whether it fits at all.

use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use super::packed::Packed;
use super::RecordKey;

/// What an entry costs besides its packed bytes: the cache's own bookkeeping and the key.
const ENTRY_OVERHEAD: u64 = 160;

/// Completed records, bounded in entries and bytes, least recently used first out.
///
/// No per-entry expiry: the cache's own timers run on real time, which a store's injected
/// clock need not follow (a paused Tokio clock would see live records vanish). Readers check a
/// record's expiry against the store's clock instead, and the bounds keep memory in check.
pub(super) struct RecordCache {
    cache: Cache<RecordKey, Packed>,
    max_bytes: u64,
    /// What every record weighs at least: `max_bytes / max_entries`, so that the byte bound also
    /// bounds the number of records.
    min_weight: u64,
}

impl RecordCache {
    pub(super) fn new(max_entries: u64, max_bytes: u64) -> Self {
        let max_bytes = max_bytes.max(1);
        let min_weight = (max_bytes / max_entries.max(1)).max(1);
        let cache = Cache::builder()
            // Least recently used goes first. moka's default (TinyLFU) admits a new entry into a
            // full cache only if it was read more often than the entries it would evict; a record
            // just completed has been read once at most, so it would often be refused, and its
            // retry would run the handler again. The newest records are the ones retries ask for.
            .eviction_policy(EvictionPolicy::lru())
            .max_capacity(max_bytes)
            // moka drops an entry heavier than the whole capacity (at its next housekeeping, so
            // after the write seemed to succeed). An entry's weight is therefore at most the
            // capacity: a record that is heavier by itself (see `fits`) evicts every other one
            // and stays.
            .weigher(move |_: &RecordKey, packed: &Packed| {
                weight(packed, min_weight).min(max_bytes).min(u32::MAX.into()) as u32
            })
            .build();
        Self { cache, max_bytes, min_weight }
    }

    /// Whether `packed` fits the capacity by itself, bookkeeping included.
    pub(super) fn fits(&self, packed: &Packed) -> bool {
        weight(packed, self.min_weight) <= self.max_bytes
    }

    /// Keeps `packed` at `key`, evicting the least recently used records if need be. One that
    /// does not [fit](RecordCache::fits) is kept too, as heavy as the whole capacity: the cache
    /// then holds it alone, and exceeds its bound by the difference until it is evicted.
    pub(super) fn insert(&self, key: RecordKey, packed: Packed) {
        self.cache.insert(key, packed);
    }

    pub(super) fn get(&self, key: &RecordKey) -> Option<Packed> {
        self.cache.get(key)
    }

    pub(super) fn invalidate(&self, key: &RecordKey) {
        self.cache.invalidate(key);
    }

    pub(super) fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    pub(super) fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }
}

fn weight(packed: &Packed, min_weight: u64) -> u64 {
    (packed.len() as u64 + ENTRY_OVERHEAD).max(min_weight)
}
