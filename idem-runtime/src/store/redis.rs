//! A store in Redis, shared by every server of a fleet.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};

use super::{Claim, FencingToken, RecordKey, Store, StoreError, DEFAULT_MAX_BODY_BYTES};
use crate::fingerprint::Fingerprint;
use crate::record::Record;

/// Claim-or-report in one step. Times come from the Redis server's clock, so every instance
/// of a fleet agrees on when a lease or a record expires.
///
/// KEYS[1] record; ARGV fingerprint, token, lease ms, idle expiry ms.
/// Returns `{'A'}` acquired, `{'C', record}` completed, `{'M'}` mismatch, `{'I', ms left}` in flight.
const CLAIM: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 's', 'f', 'd', 'r')
if h[1] and tonumber(h[3]) > now then
  if h[2] ~= ARGV[1] then return {'M'} end
  if h[1] == 'c' then return {'C', h[4]} end
  return {'I', tonumber(h[3]) - now}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 's', 'i', 't', ARGV[2], 'f', ARGV[1], 'd', now + tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {'A'}
";

/// Owner only: the in-flight claim with token ARGV[1] becomes the record ARGV[2], kept ARGV[3] ms.
const COMPLETE: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local h = redis.call('HMGET', KEYS[1], 's', 't')
if h[1] ~= 'i' or h[2] ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 's', 'c', 'r', ARGV[2], 'd', now + tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// Owner only: drop the in-flight claim with token ARGV[1].
const RELEASE: &str = r"
local h = redis.call('HMGET', KEYS[1], 's', 't')
if h[1] ~= 'i' or h[2] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
";

/// Owner only: the claim with token ARGV[1] holds for ARGV[2] ms more (idle expiry ARGV[3] ms).
const RENEW: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local h = redis.call('HMGET', KEYS[1], 's', 't')
if h[1] ~= 'i' or h[2] ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'd', now + tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

struct Scripts {
    claim: Script,
    complete: Script,
    release: Script,
    renew: Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        claim: Script::new(CLAIM),
        complete: Script::new(COMPLETE),
        release: Script::new(RELEASE),
        renew: Script::new(RENEW),
    })
}

/// A [`Store`] in Redis, for several servers sharing one set of keys (feature `redis`).
///
/// Every operation is one round trip (a Lua script, by `EVALSHA`): a miss costs two (claim,
/// complete), a replay one. Connections go through [`ConnectionManager`], which reconnects on
/// its own: while Redis is away operations fail fast with [`StoreError::Unavailable`]
/// (annotated handlers answer 503, or run without idempotency under
/// [`fail_open`](crate::Idempotency::fail_open)), and they succeed again once it is back.
///
/// Layout: one hash per record at `{prefix}{<hex SHA-256 of scope and key>}`; the braces are a
/// Redis Cluster hash tag, so a record lives in one slot. Fields: `s` state (`i` in flight,
/// `c` completed), `t` fencing token, `f` fingerprint (32 bytes), `d` lease or expiry deadline
/// (ms, server clock), `r` the [`Record`] encoding. No field holds a raw key or credential.
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
    conn: ConnectionManager,
    prefix: Arc<str>,
    max_body_bytes: usize,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// Configures a [`RedisStore`].
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    max_body_bytes: usize,
    timeout: Duration,
}

impl RedisStoreBuilder {
    /// The prefix of every key ["idem:"].
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The largest response body kept [1 MiB].
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// How long one connection attempt or one command may take before it counts as a failure
    /// [1 s].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects (failing if Redis cannot be reached now) and loads the scripts.
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(self.url.as_str()).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let mut conn = ConnectionManager::new_with_config(client, config).await.map_err(unavailable)?;
        let s = scripts();
        for script in [&s.claim, &s.complete, &s.release, &s.renew] {
            script.load_async(&mut conn).await.map_err(unavailable)?;
        }
        Ok(RedisStore { conn, prefix: self.prefix.into(), max_body_bytes: self.max_body_bytes })
    }
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

fn malformed(what: &'static str) -> StoreError {
    StoreError::Unavailable(format!("unexpected reply from Redis: {what}").into())
}

/// A fresh fencing token: unique across processes (a random per-process seed) and within one
/// (a counter).
fn fresh_token() -> FencingToken {
    static SEED: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    FencingToken(SEED.get_or_init(RandomState::new).hash_one(n))
}

fn millis(d: Duration) -> u64 {
    d.as_millis().clamp(1, u64::MAX as u128) as u64
}

/// How long an abandoned in-flight claim stays in Redis at most (renewals extend it).
fn idle_expiry(lease: Duration) -> u64 {
    millis(lease).saturating_mul(10).max(60_000)
}

impl RedisStore {
    /// Configures a store at `url` (`redis://host:port/db`, `rediss://…`).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: "idem:".to_owned(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            timeout: Duration::from_secs(1),
        }
    }

    /// Connects to `url` with the defaults.
    pub async fn connect(url: impl Into<String>) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// The Redis key of a record: `{prefix}{<hex digest>}`.
    pub fn redis_key(&self, key: &RecordKey) -> String {
        format!("{}{{{}}}", self.prefix, key.to_hex())
    }

    async fn owner_op(&self, script: &Script, key: &RecordKey, args: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut invocation = script.key(self.redis_key(key));
        for arg in args {
            invocation.arg(arg.as_slice());
        }
        let done: i64 = invocation.invoke_async(&mut self.conn.clone()).await.map_err(unavailable)?;
        if done == 1 {
            Ok(())
        } else {
            Err(StoreError::LeaseLost)
        }
    }
}

impl Store for RedisStore {
    async fn claim(&self, key: &RecordKey, fingerprint: &Fingerprint, lease: Duration) -> Result<Claim, StoreError> {
        let token = fresh_token();
        let mut reply: Vec<Value> = scripts()
            .claim
            .key(self.redis_key(key))
            .arg(&fingerprint.0[..])
            .arg(token.0)
            .arg(millis(lease))
            .arg(idle_expiry(lease))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        match reply.as_mut_slice() {
            [Value::BulkString(tag)] if tag == b"A" => Ok(Claim::Acquired(token)),
            [Value::BulkString(tag)] if tag == b"M" => Ok(Claim::Mismatch),
            [Value::BulkString(tag), Value::Int(ms)] if tag == b"I" => {
                Ok(Claim::InFlight { lease_left: Duration::from_millis((*ms).max(0) as u64) })
            }
            [Value::BulkString(tag), Value::BulkString(bytes)] if tag == b"C" => {
                let bytes = bytes::Bytes::from(std::mem::take(bytes));
                let record = Record::decode_shared(&bytes).map_err(|e| StoreError::Unavailable(Box::new(e)))?;
                Ok(Claim::Completed(Arc::new(record)))
            }
            _ => Err(malformed("claim")),
        }
    }

    async fn complete(&self, key: &RecordKey, token: FencingToken, record: Record) -> Result<(), StoreError> {
        let ttl = record.ttl_left(SystemTime::now());
        if ttl.is_zero() {
            return self.release(key, token).await;
        }
        let args = [token.0.to_string().into_bytes(), record.encode(), millis(ttl).to_string().into_bytes()];
        self.owner_op(&scripts().complete, key, &args).await
    }

    async fn release(&self, key: &RecordKey, token: FencingToken) -> Result<(), StoreError> {
        self.owner_op(&scripts().release, key, &[token.0.to_string().into_bytes()]).await
    }

    async fn renew(&self, key: &RecordKey, token: FencingToken, lease: Duration) -> Result<(), StoreError> {
        let args = [
            token.0.to_string().into_bytes(),
            millis(lease).to_string().into_bytes(),
            idle_expiry(lease).to_string().into_bytes(),
        ];
        self.owner_op(&scripts().renew, key, &args).await
    }

    fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }
}
