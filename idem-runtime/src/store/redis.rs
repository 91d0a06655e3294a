//! A store in Redis, shared by every server of a fleet.

mod builder;
mod connection;
mod layout;
mod listening;
mod opening;
mod owners;
mod scripts;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::{Script, ScriptInvocation, Value};

pub use self::builder::RedisStoreBuilder;
use self::builder::Source;
use self::connection::Connection;
use self::layout::{bucket, KeySpace, BUCKETS, HEADER_LEN};
use self::owners::{Owner, Owners};
use self::scripts::scripts;
use super::{Claim, ClaimToken, Clock, Listener, RecordKey, Store, StoreError, SystemClock};
use crate::fingerprint::Fingerprint;
use crate::record::Record;

/// A [`Store`] in Redis, for several servers sharing one set of keys (feature `redis`), on one
/// server or on a Redis Cluster (feature `redis-cluster`).
///
/// Every operation is one round trip (a Lua script, by `EVALSHA`): a miss costs two (claim,
/// complete), a replay one. Connections go through [`ConnectionManager`] (or the cluster
/// client), which reconnects on its own: while Redis is away operations fail fast with
/// [`StoreError::Unavailable`] (annotated handlers answer 503, or run without idempotency under
/// [`fail_open`](crate::Idempotency::fail_open)), and they succeed again once it is back.
///
/// Layout: one string per record at `{prefix}{TT}<digest>`: the 32 bytes of the record's
/// [`RecordKey`] after `{TT}`, the two-character tag of one of 256 buckets (the digest's first
/// byte). The braces are a Redis Cluster hash tag: each bucket lives in one slot, and the
/// buckets spread evenly over the slot space. The value packs the state (in flight or
/// completed), the claim token, the lease deadline or expiry (ms) and then the fingerprint (in
/// flight) or the [`Record`] encoding (completed). No key or value holds a raw key or
/// credential. Beside them one marker per bucket, `{prefix}{TT}epoch`, without expiry: fields
/// `c` (when this bucket's memory began, ms) and `q` (until when new claims wait, ms; 0 for
/// none).
///
/// # When Redis forgets
///
/// Redis can lose what it held while the application runs: a restart without persistence, a
/// failover to a replica that had not received the last writes, a flush, one shard of a
/// cluster restarted empty. A claim it forgot may belong to a handler still running; granting
/// its key again would run that handler a second time. Every script therefore checks its
/// bucket's marker in the same step (the marker shares the record's slot). When the marker is
/// gone, the script that notices writes a new one with a quarantine of
/// [`max_lease`](RedisStoreBuilder::max_lease), and the store at once opens every other bucket
/// whose marker is gone the same way, so that a loss is quarantined from the moment it is
/// first noticed, not from each bucket's next request. Until the quarantine ends, a claim that
/// would acquire a key of a bucket that lost its marker gets [`StoreError::Recovering`] (a
/// replay, a conflict or a mismatch still answers as usual); buckets that kept theirs (on
/// shards that did not restart) are not held back. Meanwhile a running handler's next renewal
/// re-asserts its forgotten claim (the store remembers, per claim it granted, the fingerprint
/// and the lease deadline it obtained: a claim that vanished while its lease held was
/// forgotten, not taken over), and its response is stored as usual; a retry then gets 409 and,
/// once the handler finished, its replay. A claim is re-asserted only where no other claim or
/// record holds the key, and never once its owner released it: a release leaves a mark on the
/// key until the released lease would have run out, so a renewal still on its way when the
/// owner released (a reconnect or a script reload can hold it back) finds the release, and the
/// key stays free for the retry.
///
/// At connect a missing marker is ambiguous: a new key space, or a server that restarted
/// empty moments ago. If the server holding the bucket has been up for less than `max_lease`,
/// its quarantine runs until `max_lease` after the server's start; otherwise the bucket counts
/// as new (and [`new_key_space`](RedisStoreBuilder::new_key_space) says so outright). What each
/// Redis setting guarantees is in the guide's Redis chapter
/// ([what Redis's settings give](crate::guide::stores::redis#what-rediss-settings-give)).
///
/// ```no_run
/// # async fn demo() -> Result<(), idem_runtime::store::StoreError> {
/// use idem_runtime::{store::RedisStore, Idempotency};
///
/// let store = RedisStore::builder("redis://127.0.0.1:6379").prefix("shop:idem:").connect().await?;
/// let layer = Idempotency::new(store);
/// # let _ = layer; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: Connection,
    keys: Arc<KeySpace>,
    max_body_bytes: usize,
    /// `None`: the scripts read the server's clock.
    clock: Option<Arc<dyn Clock>>,
    shared: Arc<Shared>,
}

/// What clones of one store share.
struct Shared {
    /// The longest lease in ms: the builder's, raised to every lease this store is asked for.
    max_lease_ms: AtomicU64,
    /// The claims this store granted and that are not finished yet.
    owners: Owners,
    /// Set while the store opens every bucket after noticing a loss.
    spreading: AtomicBool,
    /// The subscriber side of waiting requests: `None` for a store that cannot open connections
    /// of its own (made from a connection) or on a cluster; its waiting requests poll.
    listening: Option<listening::Listening>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix())
            .field("max_lease", &Duration::from_millis(self.shared.max_lease_ms.load(Ordering::Relaxed)))
            .field("server_clock", &self.clock.is_none())
            .finish_non_exhaustive()
    }
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

fn malformed(what: &'static str) -> StoreError {
    StoreError::Unavailable(format!("unexpected reply from Redis: {what}").into())
}

/// A fresh claim token: unique across processes (a random per-process seed) and within one
/// (a counter).
fn fresh_token() -> ClaimToken {
    static SEED: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    ClaimToken(SEED.get_or_init(RandomState::new).hash_one(n))
}

/// The longest duration the scripts handle: a hundred years, so that every deadline stays an
/// exact integer in Lua's numbers.
const MAX_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Whole milliseconds, at least `min`, at most [`MAX_MS`].
fn millis(d: Duration, min: u64) -> u64 {
    (d.as_millis().min(MAX_MS as u128) as u64).max(min)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// How long Redis keeps a key under an injected clock at least: its own expiry runs on real
/// time, which an injected clock need not follow.
const INJECTED_CLOCK_KEY_FLOOR_MS: u64 = 3_600_000;

impl RedisStore {
    /// Configures a store at `url` (`redis://host:port/db`, `rediss://…`).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Source::Url(url.into()))
    }

    /// Configures a store on the application's own `redis::Client` (its URL, TLS and
    /// credentials); the store opens a connection manager on it with its own `timeout`.
    pub fn builder_with_client(client: redis::Client) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Source::Client(client))
    }

    /// Configures a store on the application's own connection manager, shared with the rest of
    /// the application and used as it is: its timeouts and reconnection settings apply, and the
    /// builder's `timeout` does not.
    pub fn builder_with_connection(conn: ConnectionManager) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Source::Manager(conn))
    }

    /// Configures a store on a Redis Cluster (feature `redis-cluster`), given the URLs of some
    /// of its nodes (`redis://host:port`, or `rediss://` with one of the `redis` crate's TLS
    /// features): the store discovers the rest and sends each script to the master of its
    /// keys' slot.
    #[cfg(feature = "redis-cluster")]
    pub fn cluster_builder<I, S>(nodes: I) -> RedisStoreBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisStoreBuilder::new(Source::ClusterNodes(nodes.into_iter().map(Into::into).collect()))
    }

    /// Configures a store on the application's own cluster client (feature `redis-cluster`):
    /// its nodes, TLS, credentials and timeouts; the store opens a connection on it.
    #[cfg(feature = "redis-cluster")]
    pub fn builder_with_cluster_client(client: redis::cluster::ClusterClient) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Source::ClusterClient(Box::new(client)))
    }

    /// Configures a store on the application's own cluster connection (feature
    /// `redis-cluster`), shared with the rest of the application and used as it is.
    #[cfg(feature = "redis-cluster")]
    pub fn builder_with_cluster_connection(conn: redis::cluster_async::ClusterConnection) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Source::ClusterConnection(conn))
    }

    /// Connects to `url` with the defaults.
    pub async fn connect(url: impl Into<String>) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// The Redis key of a record: `{prefix}{TT}` and the 32 bytes of its digest.
    pub fn redis_key(&self, key: &RecordKey) -> Vec<u8> {
        self.keys.record(key)
    }

    /// The Redis keys of the key space's markers, one per bucket, `{prefix}{TT}epoch`: the
    /// disappearance of one tells the store that Redis forgot that bucket's keys. They have no
    /// expiry; keep them out of reach of eviction (see the guide on
    /// [`maxmemory-policy`](crate::guide::stores::redis#what-rediss-settings-give)).
    pub fn marker_keys(&self) -> Vec<String> {
        (0..BUCKETS).map(|b| self.keys.marker(b)).collect()
    }

    /// The longest lease the quarantine after a loss covers: the builder's `max_lease`, or the
    /// longest lease this store was asked for if longer.
    pub fn max_lease(&self) -> Duration {
        Duration::from_millis(self.shared.max_lease_ms.load(Ordering::Relaxed))
    }

    /// Raises the longest lease to `lease_ms` and returns it.
    fn observe_lease(&self, lease_ms: u64) -> u64 {
        self.shared.max_lease_ms.fetch_max(lease_ms, Ordering::Relaxed).max(lease_ms)
    }

    /// The scripts' clock argument: the injected clock's time, or empty for the server's.
    fn clock_arg(&self) -> String {
        self.clock.as_ref().map_or_else(String::new, |clock| unix_ms(clock.now()).to_string())
    }

    /// How long Redis keeps a key whose deadline is `ms` away.
    fn key_expiry(&self, ms: u64) -> u64 {
        if self.clock.is_some() {
            ms.max(INJECTED_CLOCK_KEY_FLOOR_MS)
        } else {
            ms
        }
    }

    /// How long an abandoned in-flight claim stays in Redis at most (renewals extend it).
    fn claim_expiry(&self, lease_ms: u64) -> u64 {
        self.key_expiry(lease_ms.saturating_mul(10).max(60_000))
    }

    /// An operation script's invocation with its keys and common arguments.
    fn invocation(&self, script: &'static Script, key: &RecordKey, max_lease_ms: u64) -> ScriptInvocation<'static> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.keys.record(key))
            .key(self.keys.marker(bucket(key)))
            .arg(self.clock_arg())
            .arg(max_lease_ms);
        invocation
    }

    async fn invoke(&self, invocation: ScriptInvocation<'static>) -> Result<Vec<Value>, StoreError> {
        invocation.invoke_async(&mut self.conn.clone()).await.map_err(unavailable)
    }
}

/// The deadline argument of a re-assertion: empty when the store does not know the claim.
fn deadline_arg(owner: Option<Owner>) -> String {
    owner.map_or_else(String::new, |owner| owner.deadline_ms.to_string())
}

impl Store for RedisStore {
    async fn claim(&self, key: &RecordKey, fingerprint: &Fingerprint, lease: Duration) -> Result<Claim, StoreError> {
        let lease_ms = millis(lease, 1);
        let max_lease = self.observe_lease(lease_ms);
        let token = fresh_token();
        let mut invocation = self.invocation(&scripts().claim, key, max_lease);
        invocation
            .arg(&fingerprint.as_bytes()[..])
            .arg(&token.0.to_be_bytes()[..])
            .arg(lease_ms)
            .arg(self.claim_expiry(lease_ms));
        let mut reply = self.invoke(invocation).await?;
        let [forgot, Value::BulkString(tag), rest @ ..] = reply.as_mut_slice() else { return Err(malformed("claim")) };
        self.noticed(forgot, max_lease).await;
        match (tag.as_slice(), rest) {
            (b"A", [Value::Int(deadline)]) => {
                let owner = Owner { fingerprint: *fingerprint.as_bytes(), deadline_ms: (*deadline).max(0) as u64 };
                self.shared.owners.insert(token.0, owner, unix_ms(self.now()));
                Ok(Claim::Acquired(token))
            }
            (b"M", []) => Ok(Claim::Mismatch),
            (b"I", [Value::Int(ms)]) => Ok(Claim::InFlight { lease_left: Duration::from_millis((*ms).max(0) as u64) }),
            (b"C", [Value::BulkString(value)]) if value.len() > HEADER_LEN => {
                let bytes = Bytes::from(std::mem::take(value)).slice(HEADER_LEN..);
                let record = Record::decode_shared(&bytes).map_err(|e| StoreError::Unavailable(Box::new(e)))?;
                Ok(Claim::Completed(Arc::new(record)))
            }
            (b"R", [Value::Int(ms)]) => {
                Err(StoreError::Recovering { retry_after: Duration::from_millis((*ms).max(1) as u64) })
            }
            _ => Err(malformed("claim")),
        }
    }

    async fn listen(&self, key: &RecordKey) -> Option<Listener> {
        self.listen_for(key).await
    }

    async fn complete(&self, key: &RecordKey, token: ClaimToken, record: Record) -> Result<(), StoreError> {
        let ttl = record.ttl_left(self.now());
        if ttl.is_zero() {
            return self.release(key, token).await;
        }
        let max_lease = self.shared.max_lease_ms.load(Ordering::Relaxed);
        let ttl_ms = millis(ttl, 1);
        let mut invocation = self.invocation(&scripts().complete, key, max_lease);
        invocation
            .arg(&token.0.to_be_bytes()[..])
            .arg(record.encode())
            .arg(ttl_ms)
            .arg(self.key_expiry(ttl_ms))
            .arg(deadline_arg(self.shared.owners.get(token.0)))
            .arg(self.publishes());
        let reply = self.invoke(invocation).await?;
        let [forgot, Value::Int(done)] = reply.as_slice() else { return Err(malformed("complete")) };
        self.noticed(forgot, max_lease).await;
        self.shared.owners.remove(token.0);
        match done {
            1 => Ok(()),
            2 => {
                tracing::info!(target: "idem", prefix = self.keys.prefix(), "stored a response whose claim Redis had forgotten");
                Ok(())
            }
            _ => Err(StoreError::LeaseLost),
        }
    }

    async fn release(&self, key: &RecordKey, token: ClaimToken) -> Result<(), StoreError> {
        let owner = self.shared.owners.remove(token.0);
        let max_lease = self.shared.max_lease_ms.load(Ordering::Relaxed);
        let mut invocation = self.invocation(&scripts().release, key, max_lease);
        invocation
            .arg(&token.0.to_be_bytes()[..])
            .arg(deadline_arg(owner))
            .arg(self.key_expiry(0))
            .arg(self.publishes());
        let reply = self.invoke(invocation).await?;
        let [forgot, Value::Int(done)] = reply.as_slice() else { return Err(malformed("release")) };
        self.noticed(forgot, max_lease).await;
        if *done == 1 {
            Ok(())
        } else {
            Err(StoreError::LeaseLost)
        }
    }

    async fn renew(&self, key: &RecordKey, token: ClaimToken, lease: Duration) -> Result<(), StoreError> {
        let lease_ms = millis(lease, 1);
        let max_lease = self.observe_lease(lease_ms);
        let owner = self.shared.owners.get(token.0);
        let mut invocation = self.invocation(&scripts().renew, key, max_lease);
        invocation
            .arg(&token.0.to_be_bytes()[..])
            .arg(lease_ms)
            .arg(self.claim_expiry(lease_ms))
            .arg(owner.as_ref().map_or(&[][..], |owner| &owner.fingerprint[..]))
            .arg(deadline_arg(owner));
        let reply = self.invoke(invocation).await?;
        let [forgot, Value::Int(done), Value::Int(deadline)] = reply.as_slice() else {
            return Err(malformed("renew"));
        };
        self.noticed(forgot, max_lease).await;
        match done {
            1 | 2 => {
                if *done == 2 {
                    tracing::info!(target: "idem", prefix = self.keys.prefix(), "re-asserted a claim Redis had forgotten");
                }
                self.shared.owners.set_deadline(token.0, (*deadline).max(0) as u64);
                Ok(())
            }
            _ => {
                self.shared.owners.remove(token.0);
                Err(StoreError::LeaseLost)
            }
        }
    }

    fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    fn now(&self) -> SystemTime {
        self.clock.as_ref().map_or_else(|| SystemClock.now(), |clock| clock.now())
    }
}
