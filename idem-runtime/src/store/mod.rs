//! Where records live: the [`Store`] trait and the embedded [`MemoryStore`].
//!
//! A store keeps, per [`RecordKey`], either an in-flight claim (a lease held by one request,
//! identified by a [`ClaimToken`]) or a completed [`Record`]. Every operation is one atomic
//! step, so a remote store can implement each as one round trip (a Lua script in Redis, a
//! conditional write elsewhere):
//!
//! | operation | does |
//! | --- | --- |
//! | [`claim`](Store::claim) | absent or lease expired → new claim; completed → the record (or mismatch); in flight → conflict (or mismatch) |
//! | [`complete`](Store::complete) | owner only: replace the claim with the record |
//! | [`release`](Store::release) | owner only: drop the claim so a retry runs the handler |
//! | [`renew`](Store::renew) | owner only: extend the lease |
//!
//! "Owner only" means the token matches the current claim: a stale owner whose lease expired
//! and was taken over gets [`StoreError::LeaseLost`] and cannot overwrite the newer claim.
//!
//! A store that can lose what it holds while the application runs (a Redis restarted without
//! persistence, or failed over to a replica that missed the last writes) must not grant a key
//! whose claim it forgot while that claim's owner may still be running: until every such lease
//! has run out, a claim that would acquire answers [`StoreError::Recovering`], and an owner
//! whose claim vanished may re-assert it by renewing or completing. The Redis store does so.
//!
//! Every time a store reads goes through its [`Clock`] ([`Store::now`]), so tests can drive
//! leases and ttls without waiting. The `testkit` feature checks a store against a model of
//! this contract (`testkit::check_protocol`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::fingerprint::Fingerprint;
use crate::record::Record;

mod cached;
mod clock;
mod listener;
mod local;
mod memory;
mod packed;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;

pub use clock::{Clock, SystemClock, TokioClock};
pub use listener::Listener;
pub use local::LocalTier;
pub use memory::{MemoryStore, MemoryStoreBuilder};
#[cfg(feature = "postgres")]
pub(crate) use postgres::aborted_earlier;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PgStore, PgStoreBuilder};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{RedisStore, RedisStoreBuilder};

pub use crate::fingerprint::record_key::RecordKey;

/// Identifies one claim. A store hands out a fresh token per claim and accepts
/// `complete`/`release`/`renew` only with the token of the current claim. Tokens are unique, not
/// ordered: a store compares them for equality only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClaimToken(u64);

impl ClaimToken {
    /// A token from the number a store keeps.
    pub const fn new(n: u64) -> Self {
        Self(n)
    }

    /// The number, for a store to keep.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// What [`Store::claim`] found.
#[derive(Debug, Clone)]
pub enum Claim {
    /// The caller now owns the key and runs the handler.
    Acquired(ClaimToken),
    /// The key completed with the same fingerprint: replay this record.
    Completed(Arc<Record>),
    /// The key is in use (in flight or completed) with a different fingerprint.
    Mismatch,
    /// Another request holds the key with the same fingerprint; its lease runs this long still.
    InFlight {
        /// Time left on the other request's lease.
        lease_left: Duration,
    },
}

/// A store operation that did not happen.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The token is not the current claim's: the lease expired and the key was taken over or
    /// released. Nothing was written.
    LeaseLost,
    /// The store could not be reached or answered with an error.
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
    /// The store recently lost what it held (its server restarted empty, or failed over to a
    /// replica that missed the last writes), so a request may still be running for any key
    /// whose claim it forgot. No new claim is granted until every lease that could have been
    /// running has run out, `retry_after` from now. Nothing was written.
    ///
    /// Unlike [`StoreError::Unavailable`], running the handler anyway (fail-open) could run it
    /// twice: answer 503 with `Retry-After`.
    Recovering {
        /// How long until claims are granted again.
        retry_after: Duration,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LeaseLost => f.write_str("the claim's lease was lost to another request"),
            Self::Unavailable(e) => write!(f, "the idempotency store is unavailable: {e}"),
            Self::Recovering { retry_after } => write!(
                f,
                "the idempotency store lost its in-flight claims; new claims wait {} ms until every lease that may still be running has run out",
                retry_after.as_millis()
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::LeaseLost | Self::Recovering { .. } => None,
            Self::Unavailable(e) => Some(&**e),
        }
    }
}

/// A place to keep claims and records. See the [module docs](self) for the contract.
///
/// Implementations must make each method atomic per [`RecordKey`] across every process sharing
/// the store, and must check a record's `expires_at` on read (a store's own expiry may lag).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an idempotency store",
    note = "implement `idem_runtime::store::Store` for it, or use `idem_runtime::store::MemoryStore`"
)]
pub trait Store: Send + Sync + 'static {
    /// Claims `key` for a request with `fingerprint`, or reports who has it.
    fn claim(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// Replaces the claim held with `token` by `record`, kept until `record.expires_at`.
    fn complete(
        &self,
        key: &RecordKey,
        token: ClaimToken,
        record: Record,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Drops the claim held with `token`.
    fn release(&self, key: &RecordKey, token: ClaimToken) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Extends the lease of the claim held with `token` to `lease` from now.
    fn renew(
        &self,
        key: &RecordKey,
        token: ClaimToken,
        lease: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The largest response body this store keeps; larger bodies are stored as `None`.
    fn max_body_bytes(&self) -> usize {
        DEFAULT_MAX_BODY_BYTES
    }

    /// The time on this store's clock: a record's `expires_at` is this plus its ttl. The
    /// default is [`SystemClock`]; a store with a configurable [`Clock`] returns that clock's.
    fn now(&self) -> SystemTime {
        SystemClock.now()
    }

    /// Listens for the end of `key`'s claim (a record stored, or the claim released) by any
    /// process sharing the store, for a request that waits for it (`on_conflict = "wait"`):
    /// once the returned future is ready, no such end is missed. `None`, the default, when the
    /// store cannot tell: the request then polls [`claim`](Store::claim). A store that tells
    /// must also wake listeners when a record is stored or a claim released through it.
    fn listen(&self, key: &RecordKey) -> impl Future<Output = Option<Listener>> + Send {
        let _ = key;
        std::future::ready(None)
    }
}

/// The default largest stored body: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`Store`] made object-safe, so one handle can hold any store.
pub(crate) trait DynStore: Send + Sync + 'static {
    fn complete<'a>(
        &'a self,
        key: &'a RecordKey,
        token: ClaimToken,
        record: Record,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn release<'a>(&'a self, key: &'a RecordKey, token: ClaimToken) -> BoxFuture<'a, Result<(), StoreError>>;
    fn renew<'a>(
        &'a self,
        key: &'a RecordKey,
        token: ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// [`DynStore::claim`] owning what it needs, so that it can finish in a task of its own.
    fn claim_owned(
        self: Arc<Self>,
        key: RecordKey,
        fp: Fingerprint,
        lease: Duration,
    ) -> BoxFuture<'static, Result<Claim, StoreError>>;
    fn max_body_bytes(&self) -> usize;
    fn listen<'a>(&'a self, key: &'a RecordKey) -> BoxFuture<'a, Option<Listener>>;
    /// For the checks that a route's store is the one the application configured.
    #[allow(dead_code)]
    fn as_any(&self) -> &dyn std::any::Any;
    // For the engine, which dates a record's expiry on the store's clock.
    #[allow(dead_code)]
    fn now(&self) -> SystemTime;
}

impl<T: Store> DynStore for T {
    fn complete<'a>(
        &'a self,
        key: &'a RecordKey,
        token: ClaimToken,
        record: Record,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Store::complete(self, key, token, record))
    }
    fn release<'a>(&'a self, key: &'a RecordKey, token: ClaimToken) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Store::release(self, key, token))
    }
    fn renew<'a>(
        &'a self,
        key: &'a RecordKey,
        token: ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Store::renew(self, key, token, lease))
    }
    fn claim_owned(
        self: Arc<Self>,
        key: RecordKey,
        fp: Fingerprint,
        lease: Duration,
    ) -> BoxFuture<'static, Result<Claim, StoreError>> {
        Box::pin(async move { Store::claim(&*self, &key, &fp, lease).await })
    }
    fn max_body_bytes(&self) -> usize {
        Store::max_body_bytes(self)
    }
    fn listen<'a>(&'a self, key: &'a RecordKey) -> BoxFuture<'a, Option<Listener>> {
        Box::pin(Store::listen(self, key))
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn now(&self) -> SystemTime {
        Store::now(self)
    }
}
