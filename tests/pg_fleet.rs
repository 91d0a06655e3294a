//! Two routers, each with a `PgStore` on a pool of its own (as two processes would have), on
//! one database: a key is claimed once across both, and either answers the other's replay.

mod common;
mod pg_common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{app_with, post_to};
use pg_common::TestSchema;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_key_sent_fifty_times_to_two_routers_runs_once() {
    let Some(schema) = TestSchema::create("one_key_sent_fifty_times_to_two_routers_runs_once").await else { return };
    let (a, hits_a) = app_with(schema.store().await);
    let (b, hits_b) = app_with(schema.store().await);
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (app, barrier) = (if i % 2 == 0 { a.clone() } else { b.clone() }, barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                post_to("/slow").key("fleet").json(r#"{"n":1}"#).send(&app).await
            })
        })
        .collect();
    let mut executed = Vec::new();
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.status.as_u16() {
            201 if !reply.replayed() => executed.push(reply.body),
            201 => {}
            409 => {
                reply.assert_problem(409, "urn:idem:problem:in-flight");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(executed.len(), 1, "one request ran the handler");
    assert_eq!(hits_a.get("slow") + hits_b.get("slow"), 1, "across both routers");
    // Once it completed, both routers replay it.
    for app in [&a, &b] {
        let reply = post_to("/slow").key("fleet").json(r#"{"n":1}"#).send(app).await;
        assert!(reply.replayed());
        assert_eq!(reply.body, executed[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_keys_with_duplicates_across_two_routers_run_once_each() {
    let Some(schema) = TestSchema::create("many_keys_with_duplicates_across_two_routers").await else { return };
    let (a, hits_a) = app_with(schema.store().await);
    let (b, hits_b) = app_with(schema.store().await);
    const KEYS: usize = 100;
    const COPIES: usize = 4;
    let tasks: Vec<_> = (0..KEYS * COPIES)
        .map(|i| {
            let app = if i % 2 == 0 { a.clone() } else { b.clone() };
            let key = format!("k{}", i % KEYS);
            tokio::spawn(async move {
                let reply = post_to("/required").key(&key).json(r#"{"n":1}"#).send(&app).await;
                (key, reply)
            })
        })
        .collect();
    let mut first: HashMap<String, bytes::Bytes> = HashMap::new();
    for task in tasks {
        let (key, reply) = task.await.unwrap();
        match reply.status.as_u16() {
            201 if !reply.replayed() => {
                assert!(first.insert(key.clone(), reply.body.clone()).is_none(), "{key} ran twice");
            }
            201 => {}
            409 => {
                reply.assert_problem(409, "urn:idem:problem:in-flight");
            }
            other => panic!("{key}: unexpected status {other}"),
        }
    }
    assert_eq!(first.len(), KEYS, "every key ran once");
    assert_eq!(hits_a.get("required") + hits_b.get("required"), KEYS);
    // Every retry, on either router, replays the one response.
    for (i, (key, body)) in first.iter().enumerate() {
        let app = if i % 2 == 0 { &a } else { &b };
        let reply = post_to("/required").key(key).json(r#"{"n":1}"#).send(app).await;
        assert!(reply.replayed(), "{key}");
        assert_eq!(&reply.body, body, "{key}");
    }
}
