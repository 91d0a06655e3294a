//! When Redis forgets: a script that found its bucket's marker gone starts a quarantine there,
//! and the store opens every other bucket whose marker is gone the same way; at connect, the
//! buckets of a key space are opened as the type's docs describe.

use std::sync::atomic::Ordering;

use redis::Value;

use super::connection::Connection;
use super::layout::BUCKETS;
use super::scripts::scripts;
use super::{malformed, unavailable, RedisStore};
use crate::store::StoreError;

impl RedisStore {
    /// After a script found its bucket's marker gone: reports it, and opens every other bucket
    /// whose marker is gone with the same quarantine, so that a loss is quarantined from the
    /// moment it is first noticed rather than from each bucket's next request. A bucket this
    /// misses (Redis went away again) opens itself the same way when next used.
    pub(super) async fn noticed(&self, flag: &Value, max_lease_ms: u64) {
        if !matches!(flag, Value::Int(1)) {
            return;
        }
        tracing::warn!(
            target: "idem",
            prefix = self.keys.prefix(),
            quarantine_ms = max_lease_ms,
            "Redis forgot idempotency keys (a restart without persistence, a failover or a flush): \
             no new claim on them is granted until every lease that may still be running has run out"
        );
        // One opening at a time: another one is already doing the same.
        if self.shared.spreading.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(error) = self.open_buckets(Opening::Loss).await {
            tracing::warn!(target: "idem", %error, "could not quarantine the other buckets after a loss; each will when next used");
        }
        self.shared.spreading.store(false, Ordering::Release);
    }

    /// Writes every bucket's marker that is missing; see the type's docs. Returns the longest
    /// quarantine left among the buckets, in ms.
    async fn open_buckets(&self, opening: Opening) -> Result<u64, StoreError> {
        let max_lease = self.shared.max_lease_ms.load(Ordering::Relaxed);
        let (wait, shorten) = match opening {
            Opening::New => (0, "0"),
            Opening::Connect => (max_lease, "1"),
            Opening::Loss => (max_lease, "0"),
        };
        let clock = self.clock_arg();
        let markers: Vec<String> = (0..BUCKETS).map(|b| self.keys.marker(b)).collect();
        // One server takes every marker in one script; a cluster one script per bucket, since
        // each bucket is a slot of its own.
        let groups: Vec<&[String]> = match self.conn {
            Connection::Single(_) => vec![&markers[..]],
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(_) => markers.chunks(1).collect(),
        };
        let replies = futures_util::future::join_all(groups.into_iter().map(|group| {
            let mut invocation = scripts().open.prepare_invoke();
            for marker in group {
                invocation.key(marker);
            }
            invocation.arg(&clock).arg(wait).arg(shorten);
            let mut conn = self.conn.clone();
            async move { invocation.invoke_async::<Vec<i64>>(&mut conn).await }
        }))
        .await;
        let mut left = 0;
        for reply in replies {
            match reply.map_err(unavailable)?.as_slice() {
                [_, bucket_left] => left = left.max((*bucket_left).max(0) as u64),
                _ => return Err(malformed("open")),
            }
        }
        Ok(left)
    }

    /// Opens the key space at connect; see the type's docs.
    pub(super) async fn open_key_space(&self, new: bool) -> Result<(), StoreError> {
        let left = self.open_buckets(if new { Opening::New } else { Opening::Connect }).await?;
        if left > 0 {
            tracing::warn!(
                target: "idem",
                prefix = self.keys.prefix(),
                quarantine_ms = left,
                "idempotency markers missing on a Redis server that started less than max_lease ago: it may have \
                 lost claims of handlers still running, so no new claim on its keys is granted until their leases \
                 have run out"
            );
        }
        Ok(())
    }
}

/// How a bucket whose marker is missing opens.
#[derive(Clone, Copy)]
enum Opening {
    /// The key space is declared new: nothing to wait for.
    New,
    /// At connect: a quarantine only if the bucket's server started less than `max_lease` ago.
    Connect,
    /// After a loss was noticed: a full quarantine.
    Loss,
}
