//! Isolation: one key used by many callers runs once per caller and never replays
//! one caller's response to another; what reaches Redis holds no raw key or credential.

mod common;

use common::{app, app_with, post_to, RedisServer};
use idem_runtime::store::RedisStore;

#[tokio::test]
async fn the_same_key_under_1000_tokens_runs_1000_times_without_cross_scope_replay() {
    let (app, hits) = app();
    // Caller `i` sends the same key with its own token and body.
    let call = |i: u32| {
        post_to("/pat")
            .key("shared-key")
            .header("authorization", &format!("Bearer token-{i}"))
            .json(&format!("{{\"i\":{i}}}"))
    };
    for i in 0..1000 {
        let reply = call(i).send(&app).await;
        assert_eq!(reply.status, 201);
        assert!(!reply.replayed(), "token {i} got someone else's response");
        assert_eq!(reply.json()["body"]["i"], i);
    }
    assert_eq!(hits.get("pat"), 1000);
    // And each caller's retry replays its own response.
    for i in [0, 499, 999] {
        let reply = call(i).send(&app).await;
        assert!(reply.replayed());
        assert_eq!(reply.json()["body"]["i"], i);
    }
}

#[tokio::test]
async fn no_redis_key_or_value_holds_a_raw_key_or_credential() {
    let Some(server) = RedisServer::start("no_redis_key_or_value_holds_a_raw_key_or_credential") else { return };
    let (app, _) = app_with(RedisStore::builder(server.url()).new_key_space().connect().await.unwrap());
    for i in 0..20 {
        let key = format!("raw-key-{i:04}");
        let auth = format!("Bearer credential-{i:04}");
        post_to("/pat").key(&key).header("authorization", &auth).send(&app).await;
        post_to("/tenant").key(&key).header("x-tenant", &format!("tenant-{i:04}")).send(&app).await;
    }
    let mut conn = redis::Client::open(server.url()).unwrap().get_connection().unwrap();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    let mut everything = Vec::new();
    let mut records = 0;
    for key in &keys {
        everything.extend_from_slice(key);
        let kind: String = redis::cmd("TYPE").arg(key).query(&mut conn).unwrap();
        if kind == "string" {
            records += 1;
            let value: Vec<u8> = redis::cmd("GET").arg(key).query(&mut conn).unwrap();
            everything.extend_from_slice(&value);
        } else {
            let fields: Vec<Vec<u8>> = redis::cmd("HGETALL").arg(key).query(&mut conn).unwrap();
            fields.iter().for_each(|f| everything.extend_from_slice(f));
        }
    }
    assert_eq!(records, 40, "one record per (scope, key)");
    assert_eq!(keys.len(), 40 + 256, "and the key space's markers, one per bucket");
    common::assert_holds_no_secret(&everything, &[b"raw-key-", b"credential-", b"Bearer", b"tenant-"]);
}
