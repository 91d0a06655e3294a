//! The orders demo and keys past their lifetime: `POST /orders` keeps responses 24 hours, so a
//! request whose call began 25 hours ago (a UUIDv7 key minted then, or a `Repeatability-First-Sent`
//! of then) is refused with `key-expired` and creates nothing, while a fresh UUIDv7 key creates
//! the order. A real demo process on a real socket, on each store.

mod common;

use std::time::{Duration, SystemTime};

use common::demo::{create, create_with, orders, start, unique_token};
use common::{v4, v7_at, Wire};

const BOOK: &str = r#"{"item":"book","qty":1}"#;

fn assert_key_expired(reply: &Wire) {
    assert_eq!(reply.status, 412, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/problem+json"));
    let problem = reply.json();
    assert_eq!(problem["type"], "urn:idem:problem:key-expired");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("25h") && detail.contains("24h") && detail.contains("new key"), "{detail}");
}

/// What the demo started with `args` answers: two late requests refused, one fresh one created.
fn refuses_late_keys_and_creates_for_fresh_ones(args: &[&str]) {
    let demo = start(args);
    let token = unique_token("late");
    let day_and_hour_ago = SystemTime::now() - Duration::from_secs(25 * 3600);

    assert_key_expired(&create(&demo, &token, Some(&v7_at(day_and_hour_ago)), BOOK));
    let first_sent = httpdate::fmt_http_date(day_and_hour_ago);
    let dated = create_with(&demo, &token, Some(&v4()), &[("Repeatability-First-Sent", &first_sent)], BOOK);
    assert_key_expired(&dated);
    assert_eq!(orders(&demo, &token), serde_json::json!([]), "nothing was created");

    let fresh = create(&demo, &token, Some(&v7_at(SystemTime::now())), BOOK);
    assert_eq!(fresh.status, 201, "{fresh:?}");
    assert_eq!(orders(&demo, &token).as_array().unwrap().len(), 1);
}

#[test]
fn post_orders_refuses_a_call_that_began_25_hours_ago_and_creates_a_fresh_one() {
    refuses_late_keys_and_creates_for_fresh_ones(&[]);
}

#[test]
fn post_orders_refuses_late_keys_with_redis() {
    let Some(url) = common::redis_url("post_orders_refuses_late_keys_with_redis") else { return };
    refuses_late_keys_and_creates_for_fresh_ones(&["--store", &url]);
}

/// With PostgreSQL the order is written through the request's transaction (`Tx`).
#[test]
fn post_orders_refuses_late_keys_in_a_transaction() {
    let Some(url) = common::server_url(
        "IDEM_TEST_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/test",
        "post_orders_refuses_late_keys_in_a_transaction",
    ) else {
        return;
    };
    refuses_late_keys_and_creates_for_fresh_ones(&["--store", &url]);
}

#[test]
fn the_demo_documents_the_refusal() {
    let demo = start(&[]);
    let doc = common::wire(demo.addr, "GET", "/openapi.json", &[], "").json();
    let create = &doc["paths"]["/orders"]["post"];
    let parameters = create["parameters"].as_array().unwrap();
    assert!(parameters.iter().any(|p| p["name"] == "Repeatability-First-Sent" && p["required"] == false));
    let expired = &create["responses"]["412"]["content"]["application/problem+json"]["examples"]["key-expired"];
    assert_eq!(expired["value"]["type"], "urn:idem:problem:key-expired");
    assert!(expired["value"]["detail"].as_str().unwrap().contains("24h"), "{expired}");
}
