//! Two instances sharing Redis: a duplicate that waits (`on_conflict = "wait"`) on the second for
//! a request the first runs is woken through Redis (the first's script publishes on the key's
//! channel) instead of polling; with its subscriber connection killed it falls back to polling,
//! still replaying, and the next wait subscribes again.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::{post_to, Reply};
use idem_runtime::idempotent;
use idem_runtime::store::RedisStore;
use idem_runtime::testkit::{FaultyStore, Operation};
use idem_runtime::Idempotency;

type Runs = Arc<AtomicUsize>;

/// How long the first request runs; the duplicate arrives 150 ms in. Under the second a store
/// that listens polls only for a lost notification; polling every 5 ms doubling to 250 ms would
/// look at the key 6 times in the 450 ms.
const WORK: Duration = Duration::from_millis(600);

#[idempotent(required, on_conflict = "wait", lease = "10s")]
async fn slow(State(runs): State<Runs>) -> (StatusCode, String) {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(WORK).await;
    (StatusCode::CREATED, format!("run {run}"))
}

/// One instance: its own connections to Redis, its own layer.
async fn instance(url: &str, prefix: &str, runs: &Runs) -> (Router, FaultyStore<RedisStore>) {
    // A new key space: the private server just started, and an existing one would be
    // quarantined for a lease (its claims may have been lost).
    let store = RedisStore::builder(url).prefix(prefix).new_key_space().connect().await.expect("Redis is reachable");
    let store = FaultyStore::new(store);
    let app = Router::new().route("/slow", post(slow)).layer(Idempotency::new(store.clone())).with_state(runs.clone());
    (app, store)
}

/// The first request to `first`, and after 150 ms its duplicate to `second`.
async fn first_then_duplicate(first: &Router, second: &Router, key: &str) -> (Reply, Reply) {
    let running = tokio::spawn({
        let (app, key) = (first.clone(), key.to_owned());
        async move { post_to("/slow").key(&key).send(&app).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let duplicate = post_to("/slow").key(key).send(second).await;
    (running.await.unwrap(), duplicate)
}

fn key(test: &str) -> String {
    format!("{test}-{}-{}", std::process::id(), uuid::Uuid::now_v7())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_waiting_on_another_instance_is_woken_through_redis() {
    let Some(url) = common::redis_url("a_duplicate_waiting_on_another_instance_is_woken_through_redis") else {
        return;
    };
    let runs = Runs::default();
    let (a, _) = instance(&url, "idem-test:wakeup:", &runs).await;
    let (b, b_store) = instance(&url, "idem-test:wakeup:", &runs).await;
    let (first, duplicate) = first_then_duplicate(&a, &b, &key("woken")).await;
    assert_eq!((first.status.as_u16(), first.replayed()), (201, false));
    assert_eq!((duplicate.status.as_u16(), duplicate.replayed(), duplicate.body.as_ref()), (201, true, &b"run 1"[..]));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // In flight when it arrives, in flight again once subscribed, then the record.
    assert_eq!(b_store.calls(Operation::Claim), 3, "the waiting instance's looks at the key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_subscription_cut_a_waiting_duplicate_polls_and_the_next_subscribes_again() {
    let Some(mut server) = common::RedisServer::start("with_its_subscription_cut_a_waiting_duplicate_polls") else {
        return;
    };
    let url = server.url();
    let runs = Runs::default();
    let (a, _) = instance(&url, "idem-test:wakeup-cut:", &runs).await;
    let (b, b_store) = instance(&url, "idem-test:wakeup-cut:", &runs).await;
    let admin = redis::Client::open(url.as_str()).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();

    // The first pair subscribes B; its subscriber connection is killed while the duplicate waits.
    let key_1 = key("cut");
    let running = tokio::spawn({
        let (a, b, key_1) = (a.clone(), b.clone(), key_1.clone());
        async move { first_then_duplicate(&a, &b, &key_1).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut admin).await.unwrap();
    assert_eq!(killed, 1, "the waiting instance's one subscriber connection");
    let (first, duplicate) = running.await.unwrap();
    assert_eq!((first.status.as_u16(), duplicate.status.as_u16(), duplicate.replayed()), (201, 201, true));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "polling still replays; nothing runs twice");

    // The next wait opens a new subscriber connection and is woken through it again.
    let before = b_store.calls(Operation::Claim);
    let (first, duplicate) = first_then_duplicate(&a, &b, &key("again")).await;
    assert_eq!((first.status.as_u16(), duplicate.status.as_u16(), duplicate.replayed()), (201, 201, true));
    assert_eq!(b_store.calls(Operation::Claim) - before, 3, "woken through the new subscription");
    server.stop();
}

/// The time from the first instance's answer (its record is stored before it) to the waiting
/// duplicate's replay on the second, printed as p50 and p99 for a second instance that listens
/// and for one that polls (a store made from a connection): a measurement for BENCHMARKS.md.
/// `IDEM_TEST_REDIS_URL=redis://127.0.0.1:6379 cargo test --all-features --test redis_wakeup -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCHMARKS.md"]
async fn measure_the_time_from_the_record_to_the_replay_on_another_instance() {
    #[idempotent(required, on_conflict = "wait", lease = "10s")]
    async fn work(axum::extract::Path(ms): axum::extract::Path<u64>) -> (StatusCode, &'static str) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        (StatusCode::CREATED, "done")
    }
    let Some(url) = common::redis_url("measure") else { return };
    let prefix = "idem-test:wakeup-measure:";
    let connect = || RedisStore::builder(url.as_str()).prefix(prefix).connect();
    let first = Router::new().route("/work/{ms}", post(work)).layer(Idempotency::new(connect().await.unwrap()));
    let listening = Router::new().route("/work/{ms}", post(work)).layer(Idempotency::new(connect().await.unwrap()));
    let manager = redis::Client::open(url.as_str()).unwrap().get_connection_manager().await.unwrap();
    let polling = RedisStore::builder_with_connection(manager).prefix(prefix).connect().await.unwrap();
    let polling = Router::new().route("/work/{ms}", post(work)).layer(Idempotency::new(polling));
    for (name, second) in [("polling", &polling), ("listening", &listening)] {
        let (mut gaps, mut looks) = (Vec::new(), 0);
        for trial in 0..200u64 {
            // Handlers of 20 to 59 ms: the duplicate's polls (5, 10, 20, 40 ms apart) fall anywhere.
            let path = format!("/work/{}", 20 + trial % 40);
            let key = key(name);
            let running = tokio::spawn({
                let (app, path, key) = (first.clone(), path.clone(), key.clone());
                async move {
                    let reply = post_to(&path).key(&key).send(&app).await;
                    (reply, std::time::Instant::now())
                }
            });
            tokio::time::sleep(Duration::from_millis(2)).await;
            let duplicate = post_to(&path).key(&key).send(second).await;
            let replayed_at = std::time::Instant::now();
            let (reply, answered_at) = running.await.unwrap();
            assert_eq!((reply.status.as_u16(), duplicate.status.as_u16(), duplicate.replayed()), (201, 201, true));
            gaps.push(replayed_at.saturating_duration_since(answered_at));
            looks += 1;
        }
        gaps.sort();
        let at = |q: f64| gaps[((gaps.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "{name}: record to the other instance's replay, {looks} trials: p50 {:?}, p99 {:?}, max {:?}",
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
}
