//! The Redis store on a real Redis Cluster of three masters the tests start on free loopback
//! ports: the contract suite, the spread of buckets over the masters, and one shard restarted
//! empty while the others keep what they hold. The model-based check runs on a cluster in
//! `tests/store_protocol.rs`, the demo in `tests/demo.rs`.

mod cluster_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_common::RedisCluster;
use idem_runtime::store::{Claim, LocalTier, RecordKey, RedisStore, Store as _, StoreError};
use idem_runtime::testkit::{check_store, fingerprint, record};

async fn store(cluster: &RedisCluster, prefix: &str) -> RedisStore {
    RedisStore::cluster_builder(cluster.urls()).prefix(prefix).new_key_space().connect().await.expect("the cluster")
}

/// A key of bucket `bucket` (a digest's first byte picks its bucket), distinct per `n`.
fn key_in(bucket: u8, n: u8) -> RecordKey {
    let mut digest = [n; 32];
    digest[0] = bucket;
    RecordKey::from_digest(digest)
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_passes_the_contract_on_a_three_master_cluster() {
    let Some(cluster) = RedisCluster::start("contract on a cluster") else { return };
    check_store(Arc::new(store(&cluster, "contract:").await)).await;
    check_store(Arc::new(LocalTier::new(store(&cluster, "tiered:").await))).await;
}

#[tokio::test]
async fn the_buckets_spread_evenly_over_the_masters() {
    let Some(cluster) = RedisCluster::start("buckets over masters") else { return };
    let store = store(&cluster, "spread:").await;
    let mut markers = [0; 3];
    for marker in store.marker_keys() {
        markers[cluster.node_of(marker.as_bytes())] += 1;
    }
    // 256 buckets, one per stretch of 64 slots, over three ranges of about 5 461 slots: a
    // third each, within the bucket or two that straddle a range's ends.
    assert!(markers.iter().all(|n| (84..=87).contains(n)), "markers per master: {markers:?}");
    // A record lives with its bucket's marker.
    for bucket in 0..=255u8 {
        let key = key_in(bucket, 1);
        let marker = &store.marker_keys()[usize::from(bucket)];
        assert_eq!(cluster.node_of(&store.redis_key(&key)), cluster.node_of(marker.as_bytes()));
    }
}

/// Claims until the cluster answers (a restarted node may refuse connections for a moment).
async fn claim_answered(store: &RedisStore, key: &RecordKey, fp: u8) -> Result<Claim, StoreError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.claim(key, &fingerprint(fp), LONG).await {
            Err(StoreError::Unavailable(error)) => {
                assert!(Instant::now() < deadline, "the cluster did not come back: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answer => return answer,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_restarted_empty_holds_back_its_own_keys_only_and_its_running_claims_come_back() {
    let Some(mut cluster) = RedisCluster::start("shard restart") else { return };
    let a = store(&cluster, "shard:").await;
    let b = store(&cluster, "shard:").await;
    let node_of = |key: &RecordKey| cluster.node_of(&a.redis_key(key));
    let buckets: Vec<(u8, usize)> = (0..=255u8).map(|bucket| (bucket, node_of(&key_in(bucket, 0)))).collect();
    let lost = 1;

    // A completed record in every bucket, and a handler running on A in a bucket of the shard
    // that will restart.
    for &(bucket, _) in &buckets {
        let key = key_in(bucket, 0);
        let Claim::Acquired(token) = a.claim(&key, &fingerprint(1), LONG).await.unwrap() else { panic!("acquired") };
        a.complete(&key, token, record(fingerprint(1), LONG, Some(bytes::Bytes::from_static(b"{}")))).await.unwrap();
    }
    let (running_bucket, _) = *buckets.iter().find(|(_, node)| *node == lost).unwrap();
    let running = key_in(running_bucket, 1);
    let Claim::Acquired(owner) = a.claim(&running, &fingerprint(1), LONG).await.unwrap() else { panic!("acquired") };

    cluster.restart_empty(lost);

    // The first request on the restarted shard notices: a new claim there waits out the leases
    // that may still run, on every bucket of that shard at once.
    let (first_bucket, _) = *buckets.iter().rev().find(|(_, node)| *node == lost).unwrap();
    match claim_answered(&b, &key_in(first_bucket, 2), 1).await {
        Err(StoreError::Recovering { retry_after }) => {
            assert!(retry_after > Duration::from_secs(20), "{retry_after:?}")
        }
        other => panic!("a new claim on the restarted shard got {other:?}"),
    }
    let client = redis::Client::open(cluster.urls()[lost].as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    for (marker, &(_, node)) in b.marker_keys().iter().zip(&buckets) {
        if node == lost {
            let exists: bool = redis::cmd("EXISTS").arg(marker).query(&mut conn).unwrap();
            assert!(exists, "the loss quarantined every bucket of the shard at once ({marker})");
        }
    }
    for &(bucket, node) in &buckets {
        let fresh = claim_answered(&b, &key_in(bucket, 3), 1).await;
        let kept = claim_answered(&b, &key_in(bucket, 0), 1).await;
        if node == lost {
            assert!(matches!(fresh, Err(StoreError::Recovering { .. })), "bucket {bucket}: {fresh:?}");
            assert!(matches!(kept, Err(StoreError::Recovering { .. })), "bucket {bucket}'s record is gone: {kept:?}");
        } else {
            // The other shards kept their keys and go on as before.
            assert!(matches!(fresh, Ok(Claim::Acquired(_))), "bucket {bucket}: {fresh:?}");
            assert!(matches!(kept, Ok(Claim::Completed(_))), "bucket {bucket}: {kept:?}");
        }
    }

    // The running handler's renewal re-asserts its claim: a retry on B is a conflict, never a
    // second execution, and then replays what A stores.
    a.renew(&running, owner, LONG).await.expect("the owner re-asserts its forgotten claim");
    assert!(matches!(b.claim(&running, &fingerprint(1), LONG).await, Ok(Claim::InFlight { .. })));
    let stored = record(fingerprint(1), LONG, Some(bytes::Bytes::from_static(b"{\"run\":1}")));
    a.complete(&running, owner, stored.clone()).await.expect("the owner stores its response");
    match b.claim(&running, &fingerprint(1), LONG).await {
        Ok(Claim::Completed(replayed)) => assert_eq!(*replayed, stored),
        other => panic!("expected the replay, got {other:?}"),
    }
}
