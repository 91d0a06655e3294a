//! Every store against the reference model of the claim/lease/complete protocol
//! (`idem_runtime::testkit::check_protocol`): random interleavings of owners, crashes,
//! outages, the clock and, for Redis, the store forgetting everything.
//!
//! `IDEM_MODEL_CASES` sets the number of cases per store (`IDEM_MODEL_STEPS` the steps per
//! case, `IDEM_MODEL_SEED` the seed), e.g. for a long run:
//! `IDEM_MODEL_CASES=20000 cargo test --release --all-features --test store_protocol -- --nocapture`

mod common;

use std::time::Instant;

use idem_runtime::store::{LocalTier, MemoryStore, RedisStore, Store};
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

/// Redis key spaces of one test run: every case gets a prefix of its own, all deleted at the
/// end (markers have no expiry).
struct KeySpaces {
    url: String,
    run: String,
    cases: std::sync::atomic::AtomicU64,
}

impl KeySpaces {
    fn new(url: String) -> Self {
        Self { url, run: format!("idem-test:model:{}:", &fresh_key().to_hex()[..12]), cases: Default::default() }
    }

    fn next(&self) -> String {
        format!("{}{}:", self.run, self.cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    /// A Redis store on `clock` in a fresh key space, and how to make Redis forget it: every
    /// key under its prefix deleted, as a restart without persistence would.
    async fn subject(&self, clock: ManualClock) -> Subject<RedisStore> {
        let prefix = self.next();
        let store = RedisStore::builder(self.url.clone())
            .prefix(prefix.clone())
            .max_lease(MODEL_MAX_LEASE)
            .clock(clock)
            .new_key_space()
            .connect()
            .await
            .expect("Redis is reachable");
        let conn = redis::Client::open(self.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        Subject::new(store).forgetting(move || {
            let (mut conn, pattern) = (conn.clone(), format!("{prefix}*"));
            async move { delete_matching(&mut conn, &pattern).await }
        })
    }
}

async fn delete_matching(conn: &mut redis::aio::MultiplexedConnection, pattern: &str) {
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            redis::cmd("DEL").arg(&keys).exec_async(conn).await.unwrap();
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

impl Drop for KeySpaces {
    fn drop(&mut self) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            if let Ok(mut conn) =
                redis::Client::open(self.url.as_str()).unwrap().get_multiplexed_async_connection().await
            {
                delete_matching(&mut conn, &format!("{}*", self.run)).await;
            }
        });
    }
}

fn redis_check<S: Store>(test: &str, name: &str, wrap: fn(RedisStore) -> S) {
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
