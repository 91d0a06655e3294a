//! Every store against the reference model of the claim/lease/complete protocol
//! (`idem_runtime::testkit::check_protocol`): random interleavings of owners, crashes,
//! outages, the clock and, for Redis, the store forgetting everything.
//!
//! `IDEM_MODEL_CASES` sets the number of cases per store (`IDEM_MODEL_STEPS` the steps per
//! case, `IDEM_MODEL_SEED` the seed), e.g. for a long run:
//! `IDEM_MODEL_CASES=20000 cargo test --release --all-features --test store_protocol -- --nocapture`
//!
//! The Redis store runs on the shared server (`IDEM_TEST_REDIS_URL`), on a private server whose
//! forgetting also drops its script cache, and on a three-master Redis Cluster the test starts
//! on free loopback ports.

mod cluster_common;
mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use idem_runtime::fingerprint::Fingerprint;
use idem_runtime::record::Record;
use idem_runtime::store::{Claim, ClaimToken, LocalTier, MemoryStore, RecordKey, RedisStore, Store, StoreError};
use idem_runtime::testkit::{check_protocol, fresh_key, ManualClock, Subject, MODEL_MAX_LEASE};

/// Cases per store in a default run: about a second (embedded) or six (Redis) in a debug build.
const CASES: u32 = 1000;

fn report(store: &str, started: Instant, report: idem_runtime::testkit::ProtocolReport) {
    println!("{store}: {report}\n  in {:.1} s", started.elapsed().as_secs_f64());
}

fn memory(clock: ManualClock) -> MemoryStore {
    MemoryStore::builder().clock(clock).build()
}

#[test]
fn memory_store_follows_the_protocol() {
    let started = Instant::now();
    let run = check_protocol(|clock| async move { Subject::new(memory(clock)) }, CASES);
    report("MemoryStore", started, run);
}

#[test]
fn memory_store_behind_a_local_tier_follows_the_protocol() {
    let started = Instant::now();
    let run = check_protocol(|clock| async move { Subject::new(LocalTier::new(memory(clock))) }, CASES);
    report("LocalTier<MemoryStore>", started, run);
}

/// Redis key spaces of one test run: every case gets a prefix of its own. What a case wrote
/// is deleted when the next case starts, and the last case's at the end (markers have no
/// expiry).
struct KeySpaces {
    url: String,
    run: String,
    cases: AtomicU64,
    /// The keys the current case touched.
    touched: Mutex<Touched>,
}

type Touched = Arc<Mutex<HashSet<Vec<u8>>>>;

impl KeySpaces {
    fn new(url: String) -> Self {
        let run = format!("idem-test:model:{}:", &fresh_key().to_hex()[..12]);
        Self { url, run, cases: AtomicU64::new(0), touched: Mutex::default() }
    }

    /// A Redis store on `clock` in a fresh key space, and how to make Redis forget it: every
    /// key under its prefix deleted, as a restart without persistence would.
    async fn subject(&self, clock: ManualClock) -> Subject<Noting> {
        let prefix = format!("{}{}:", self.run, self.cases.fetch_add(1, Ordering::Relaxed));
        let conn = redis::Client::open(self.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let previous = std::mem::take(&mut *self.touched.lock().unwrap());
        delete(&mut conn.clone(), &previous).await;
        let store = RedisStore::builder(self.url.clone())
            .prefix(prefix)
            .max_lease(MODEL_MAX_LEASE)
            .clock(clock)
            .new_key_space()
            .connect()
            .await
            .expect("Redis is reachable");
        let touched = self.touched.lock().unwrap().clone();
        touched.lock().unwrap().extend(store.marker_keys().into_iter().map(String::into_bytes));
        Subject::new(Noting { store, touched: touched.clone() }).forgetting(move || {
            let (mut conn, touched) = (conn.clone(), touched.clone());
            async move { delete(&mut conn, &touched).await }
        })
    }
}

/// Deletes the keys in `touched`.
async fn delete(conn: &mut redis::aio::MultiplexedConnection, touched: &Touched) {
    let keys: Vec<Vec<u8>> = touched.lock().unwrap().iter().cloned().collect();
    if !keys.is_empty() {
        redis::cmd("DEL").arg(&keys).exec_async(conn).await.unwrap();
    }
}

impl Drop for KeySpaces {
    fn drop(&mut self) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let last = self.touched.lock().unwrap().clone();
        runtime.block_on(async {
            if let Ok(mut conn) =
                redis::Client::open(self.url.as_str()).unwrap().get_multiplexed_async_connection().await
            {
                delete(&mut conn, &last).await;
            }
        });
    }
}

/// A `RedisStore` that notes the Redis keys it touches, so that forgetting deletes exactly the
/// key space (a `SCAN` for its prefix would walk every key of the shared server, every time).
/// Otherwise it only passes every call through.
struct Noting {
    store: RedisStore,
    touched: Touched,
}

impl Noting {
    fn note(&self, key: &RecordKey) {
        self.touched.lock().unwrap().insert(self.store.redis_key(key));
    }
}

impl Store for Noting {
    async fn claim(&self, key: &RecordKey, fingerprint: &Fingerprint, lease: Duration) -> Result<Claim, StoreError> {
        self.note(key);
        self.store.claim(key, fingerprint, lease).await
    }

    async fn complete(&self, key: &RecordKey, token: ClaimToken, record: Record) -> Result<(), StoreError> {
        self.note(key);
        self.store.complete(key, token, record).await
    }

    async fn release(&self, key: &RecordKey, token: ClaimToken) -> Result<(), StoreError> {
        self.store.release(key, token).await
    }

    async fn renew(&self, key: &RecordKey, token: ClaimToken, lease: Duration) -> Result<(), StoreError> {
        self.note(key);
        self.store.renew(key, token, lease).await
    }

    fn max_body_bytes(&self) -> usize {
        self.store.max_body_bytes()
    }

    fn now(&self) -> SystemTime {
        self.store.now()
    }
}

fn redis_check<S: Store>(test: &str, name: &str, wrap: fn(Noting) -> S) {
    let Some(url) = common::redis_url(test) else { return };
    let spaces = KeySpaces::new(url);
    let started = Instant::now();
    let run = check_protocol(
        |clock| {
            let subject = spaces.subject(clock);
            async move {
                let subject = subject.await;
                subject.map_store(wrap)
            }
        },
        CASES,
    );
    report(name, started, run);
}

#[test]
fn redis_store_follows_the_protocol_and_survives_forgetting() {
    redis_check("redis_store_follows_the_protocol_and_survives_forgetting", "RedisStore", |store| store);
}

#[test]
fn redis_store_behind_a_local_tier_follows_the_protocol_and_survives_forgetting() {
    redis_check(
        "redis_store_behind_a_local_tier_follows_the_protocol_and_survives_forgetting",
        "LocalTier<RedisStore>",
        LocalTier::new,
    );
}

/// The Redis store on a private server that forgets as a restart without persistence does:
/// every key and every cached script gone. Without its scripts, an operation sent just before
/// another can take effect after it (its script is loaded and it is sent again), which the
/// model's racing releases then meet.
#[test]
fn redis_store_on_a_server_restarted_empty_follows_the_protocol() {
    let Some(server) = common::RedisServer::start("protocol on a server restarted empty") else { return };
    let (url, cases) = (server.url(), AtomicU64::new(0));
    let started = Instant::now();
    let run = check_protocol(
        |clock| {
            let (url, case) = (url.clone(), cases.fetch_add(1, Ordering::Relaxed));
            async move {
                let store = RedisStore::builder(url.clone())
                    .prefix(format!("model:{case}:"))
                    .max_lease(MODEL_MAX_LEASE)
                    .clock(clock)
                    .new_key_space()
                    .connect()
                    .await
                    .expect("Redis is reachable");
                let client = redis::Client::open(url).unwrap();
                let conn = client.get_multiplexed_async_connection().await.unwrap();
                Subject::new(store).forgetting(move || {
                    let mut conn = conn.clone();
                    async move {
                        redis::cmd("FLUSHALL").exec_async(&mut conn).await.unwrap();
                        redis::cmd("SCRIPT").arg("FLUSH").exec_async(&mut conn).await.unwrap();
                    }
                })
            }
        },
        CASES,
    );
    report("RedisStore restarted empty", started, run);
}

/// Key spaces on a private Redis Cluster, one per case, on one cluster connection that every
/// case's store shares. The cluster is dropped with the test, so nothing is cleaned up.
struct ClusterSpaces {
    urls: Vec<String>,
    cases: AtomicU64,
    conn: tokio::sync::OnceCell<redis::cluster_async::ClusterConnection>,
}

impl ClusterSpaces {
    /// A store on `clock` in a fresh key space of the cluster, and how to make the cluster
    /// forget it: each of its keys deleted (one by one: they live in different slots).
    async fn subject(&self, clock: ManualClock) -> Subject<Noting> {
        let conn = self
            .conn
            .get_or_init(|| async {
                let client = redis::cluster::ClusterClient::new(self.urls.clone()).unwrap();
                client.get_async_connection().await.expect("the cluster is reachable")
            })
            .await
            .clone();
        let store = RedisStore::builder_with_cluster_connection(conn.clone())
            .prefix(format!("model:{}:", self.cases.fetch_add(1, Ordering::Relaxed)))
            .max_lease(MODEL_MAX_LEASE)
            .clock(clock)
            .new_key_space()
            .connect()
            .await
            .expect("the cluster is reachable");
        let touched = Touched::default();
        touched.lock().unwrap().extend(store.marker_keys().into_iter().map(String::into_bytes));
        Subject::new(Noting { store, touched: touched.clone() }).forgetting(move || {
            let (conn, touched) = (conn.clone(), touched.clone());
            async move {
                let keys: Vec<Vec<u8>> = touched.lock().unwrap().iter().cloned().collect();
                futures_util::future::join_all(keys.into_iter().map(|key| {
                    let mut conn = conn.clone();
                    async move { redis::cmd("DEL").arg(key).exec_async(&mut conn).await.unwrap() }
                }))
                .await;
            }
        })
    }
}

#[test]
fn redis_store_on_a_cluster_follows_the_protocol_and_survives_forgetting() {
    let Some(cluster) = cluster_common::RedisCluster::start("protocol on a cluster") else { return };
    let spaces = ClusterSpaces { urls: cluster.urls(), cases: AtomicU64::new(0), conn: tokio::sync::OnceCell::new() };
    let started = Instant::now();
    let run = check_protocol(|clock| spaces.subject(clock), CASES);
    report("RedisStore on a three-master cluster", started, run);
}
