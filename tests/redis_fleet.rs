//! The Redis store under a real `redis-server` the tests start themselves: round trips per
//! request, and an outage with the server stopped and restarted.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use common::{echo, post_to, RedisServer};
use idem_runtime::store::{LocalTier, RedisStore};
use idem_runtime::Idempotency;

/// A store on a server the test just started: its key space is new.
async fn fresh(url: &str) -> RedisStore {
    RedisStore::builder(url).new_key_space().connect().await.unwrap()
}

/// `INFO commandstats` as command → calls.
fn command_stats(url: &str) -> HashMap<String, u64> {
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut conn).unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// Commands sent by clients (not by scripts) between two snapshots, INFO itself excluded.
fn round_trips(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> u64 {
    // What the scripts call internally is counted by Redis too; it is not a round trip.
    // (`publish`: a completion or release wakes the requests waiting for the key.)
    const FROM_SCRIPTS: [&str; 7] = ["get", "set", "del", "time", "hget", "hset", "publish"];
    after
        .iter()
        .filter(|(name, _)| name.as_str() != "info" && !FROM_SCRIPTS.contains(&name.as_str()))
        .map(|(name, calls)| calls - before.get(name).copied().unwrap_or(0))
        .sum()
}

async fn measure(url: &str, app: &Router, key: &str) -> (u64, bool) {
    let before = command_stats(url);
    let reply = post_to("/echo").key(key).json(r#"{"n":1}"#).send(app).await;
    assert_eq!(reply.status, 200);
    (round_trips(&before, &command_stats(url)), reply.replayed())
}

#[tokio::test]
async fn a_miss_costs_two_round_trips_a_replay_one_and_a_warm_local_replay_none() {
    let Some(server) = RedisServer::start("round trips") else { return };
    let url = server.url();
    let redis = fresh(&url).await;
    let plain = Router::new().route("/echo", post(echo)).layer(Idempotency::new(redis.clone()));
    let tiered = Router::new().route("/echo", post(echo)).layer(Idempotency::new(LocalTier::new(redis.clone())));
    let cold = Router::new().route("/echo", post(echo)).layer(Idempotency::new(LocalTier::new(redis)));

    assert_eq!(measure(&url, &plain, "a").await, (2, false), "miss: claim + complete");
    assert_eq!(measure(&url, &plain, "a").await, (1, true), "replay: claim");
    assert_eq!(measure(&url, &tiered, "b").await, (2, false), "miss through the tier");
    assert_eq!(measure(&url, &tiered, "b").await, (0, true), "replay from the warm tier");
    assert_eq!(measure(&url, &cold, "b").await, (1, true), "replay on a cold instance");
    assert_eq!(measure(&url, &cold, "b").await, (0, true), "then warm");
    println!("round trips: miss 2, replay 1, warm local replay 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_answers_503_and_service_resumes_without_a_restart() {
    // With persistence: the restart is an outage, not a loss (see tests/amnesia.rs for that).
    let Some(mut server) = RedisServer::start_persistent("outage") else { return };
    let (app, hits) = common::app_with(fresh(&server.url()).await);
    let open = common::app_with_layer(Idempotency::new(fresh(&server.url()).await).fail_open(true));
    assert_eq!(post_to("/required").key("before").send(&app).await.status, 201);

    server.stop();
    for i in 0..3 {
        let reply = post_to("/required").key(&format!("during-{i}")).send(&app).await;
        reply.assert_problem(503, "urn:idem:problem:store-unavailable");
        assert!(reply.header("retry-after").is_some());
    }
    assert_eq!(hits.get("required"), 1, "nothing ran while the store was away");
    // Fail-open runs the handler without idempotency.
    let (open_app, open_hits) = open;
    assert_eq!(post_to("/required").key("open").send(&open_app).await.status, 201);
    assert_eq!(open_hits.get("required"), 1);

    server.resume();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = post_to("/required").key("after").send(&app).await;
        if reply.status == 201 {
            break;
        }
        reply.assert_problem(503, "urn:idem:problem:store-unavailable");
        assert!(Instant::now() < deadline, "the store did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(post_to("/required").key("after").send(&app).await.replayed());
    assert_eq!(hits.get("required"), 2, "one execution for 'after', none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_under_load_runs_nothing_twice() {
    let Some(mut server) = RedisServer::start_persistent("outage under load") else { return };
    let (app, hits) = common::app_with(fresh(&server.url()).await);
    // 40 requests whose handlers (400 ms each) are running when Redis goes away.
    let running: Vec<_> = (0..40)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move { post_to("/slow").key(&format!("k{i}")).send(&app).await })
        })
        .collect();
    common::eventually(Duration::from_secs(5), || hits.get("slow_started") == 40).await;
    server.stop();
    // While it is away: new requests are 503; the running handlers finish and answer.
    for i in 40..60 {
        post_to("/slow")
            .key(&format!("k{i}"))
            .send(&app)
            .await
            .assert_problem(503, "urn:idem:problem:store-unavailable");
    }
    for reply in running {
        let reply = reply.await.unwrap();
        assert_eq!(reply.status, 201, "the handler's own answer reaches its client");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.resume();
    // Every key is retried until it settles: the 40 that ran replay (once their responses are
    // stored), the 20 that met the outage run now, once.
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0..60 {
        loop {
            let reply = post_to("/slow").key(&format!("k{i}")).send(&app).await;
            match reply.status.as_u16() {
                201 if i < 40 => {
                    assert!(reply.replayed(), "k{i} ran before the outage and must not run again");
                    break;
                }
                201 => break,
                409 | 503 => {
                    assert!(Instant::now() < deadline, "k{i} did not settle: {reply:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("k{i}: unexpected {other}"),
            }
        }
    }
    assert_eq!(hits.get("slow"), 60, "every key ran exactly once across the outage");
}

#[tokio::test]
async fn a_value_in_a_layout_the_store_does_not_read_is_an_error_never_a_record() {
    use idem_runtime::store::{Claim, Store as _, StoreError};
    use idem_runtime::testkit::{fingerprint, fresh_key};

    let Some(server) = RedisServer::start("foreign layout") else { return };
    let store = fresh(&server.url()).await;
    let mut conn = redis::Client::open(server.url()).unwrap().get_connection().unwrap();
    let lease = Duration::from_secs(30);
    // A later layout's value (an unknown first byte), and a hash as the earlier layout kept.
    let later = fresh_key();
    let mut value = vec![9u8];
    value.extend_from_slice(&[0; 200]);
    redis::cmd("SET").arg(store.redis_key(&later)).arg(value).exec(&mut conn).unwrap();
    let hash = fresh_key();
    redis::cmd("HSET").arg(store.redis_key(&hash)).arg("s").arg("c").exec(&mut conn).unwrap();
    for key in [later, hash] {
        match store.claim(&key, &fingerprint(1), lease).await {
            Err(StoreError::Unavailable(error)) => println!("refused: {error}"),
            other => panic!("a foreign value was read as {other:?}"),
        }
    }
    // The store's own values are read as before.
    let own = fresh_key();
    assert!(matches!(store.claim(&own, &fingerprint(1), lease).await, Ok(Claim::Acquired(_))));
}

#[test]
#[should_panic(expected = "holds a brace")]
fn a_prefix_with_a_brace_is_refused() {
    // Its brace would make the prefix, not the store's bucket, the hash tag of every key.
    let _ = RedisStore::builder("redis://127.0.0.1:6379").prefix("shop:{idem}:");
}
