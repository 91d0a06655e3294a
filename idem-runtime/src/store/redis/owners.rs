//! The claims a Redis store granted and that are not finished yet: what their owners need to
//! re-assert a claim Redis forgot (its fingerprint, and the lease deadline last obtained).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

const SHARDS: usize = 16;

/// An entry whose deadline passed this long ago can re-assert nothing (a re-assertion needs a
/// deadline still ahead); the margin covers the skew between this host's clock and the
/// server's, in which deadlines are written.
const STALE_AFTER_MS: u64 = 60_000;

/// Entries are dropped when their owner completes or releases. An owner that never does (a
/// request abandoned in process) leaves one behind; a shard sweeps those out when it has
/// doubled since its last sweep.
pub(super) struct Owners {
    shards: Box<[Mutex<Shard>]>,
}

#[derive(Default)]
struct Shard {
    owners: HashMap<u64, Owner>,
    sweep_at: usize,
}

#[derive(Clone, Copy)]
pub(super) struct Owner {
    pub(super) fingerprint: [u8; 32],
    /// The lease deadline the owner last obtained, in ms on the scripts' clock.
    pub(super) deadline_ms: u64,
}

impl Default for Owners {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }
}

impl Owners {
    fn shard(&self, token: u64) -> MutexGuard<'_, Shard> {
        // Every update is one map call: a panic elsewhere cannot leave a shard inconsistent.
        self.shards[token as usize % SHARDS].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn insert(&self, token: u64, owner: Owner, now_ms: u64) {
        let mut shard = self.shard(token);
        if shard.owners.len() >= shard.sweep_at.max(256) {
            shard.owners.retain(|_, owner| owner.deadline_ms.saturating_add(STALE_AFTER_MS) > now_ms);
            shard.sweep_at = shard.owners.len() * 2;
        }
        shard.owners.insert(token, owner);
    }

    pub(super) fn get(&self, token: u64) -> Option<Owner> {
        self.shard(token).owners.get(&token).copied()
    }

    pub(super) fn set_deadline(&self, token: u64, deadline_ms: u64) {
        if let Some(owner) = self.shard(token).owners.get_mut(&token) {
            owner.deadline_ms = deadline_ms;
        }
    }

    pub(super) fn remove(&self, token: u64) -> Option<Owner> {
        self.shard(token).owners.remove(&token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(deadline_ms: u64) -> Owner {
        Owner { fingerprint: [0; 32], deadline_ms }
    }

    #[test]
    fn abandoned_entries_are_swept_and_live_ones_kept() {
        let owners = Owners::default();
        let now = 10 * STALE_AFTER_MS;
        // Claims whose owners never finished, long past their deadlines.
        for token in 0..100_000u64 {
            owners.insert(token, owner(now - 2 * STALE_AFTER_MS), now);
        }
        let left: usize = owners.shards.iter().map(|shard| shard.lock().unwrap().owners.len()).sum();
        assert!(left <= SHARDS * 256, "{left} abandoned entries kept");
        // A running claim survives any number of sweeps.
        owners.insert(u64::MAX, owner(now + 30_000), now);
        for token in 100_000..200_000u64 {
            owners.insert(token, owner(now - 2 * STALE_AFTER_MS), now);
        }
        assert_eq!(owners.get(u64::MAX).map(|o| o.deadline_ms), Some(now + 30_000));
        owners.set_deadline(u64::MAX, now + 60_000);
        assert_eq!(owners.get(u64::MAX).map(|o| o.deadline_ms), Some(now + 60_000));
        owners.remove(u64::MAX);
        assert!(owners.get(u64::MAX).is_none());
    }
}
