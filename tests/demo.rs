//! The orders demo as the README drives it: a real process on a real socket.

mod cluster_common;
mod common;

use std::process::Command;

use common::demo::{
    create, demo_binary, example_binary, openapi_document, orders, start, unique_token, Demo, Scratch, JSON,
};
use common::{wire, Wire};

#[test]
fn the_readme_session() {
    let demo = start(&[]);
    let book = r#"{"item":"book","qty":1}"#;
    let first = create(&demo, "alice", Some("order-1"), book);
    assert_eq!(first.status, 201, "{first:?}");
    let id = first.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(first.header("location"), Some(format!("/orders/{id}").as_str()));
    assert!(!first.replayed());

    let retry = create(&demo, "alice", Some("order-1"), book);
    assert_eq!(retry.status, 201);
    assert!(retry.replayed());
    assert_eq!(retry.body, first.body);

    let other = create(&demo, "alice", Some("order-1"), r#"{"item":"pen","qty":3}"#);
    assert_eq!(other.status, 422);
    assert_eq!(other.json()["type"], "urn:idem:problem:key-reused");

    let no_key = create(&demo, "alice", None, book);
    assert_eq!(no_key.status, 400);
    assert_eq!(no_key.json()["type"], "urn:idem:problem:missing-key");

    let no_auth = wire(demo.addr, "POST", "/orders", &[JSON, ("Idempotency-Key", "x")], book);
    assert_eq!(no_auth.status, 401);
    assert_eq!(no_auth.header("content-type"), Some("application/problem+json"));

    assert_eq!(orders(&demo, "alice").as_array().unwrap().len(), 1);
    assert_eq!(orders(&demo, "bob"), serde_json::json!([]));

    // The same key under another token is another order, with a distinct id.
    let bob = create(&demo, "bob", Some("order-1"), book);
    assert_eq!(bob.status, 201);
    assert!(!bob.replayed());
    assert_ne!(bob.json()["id"], first.json()["id"]);
}

#[test]
fn notes_take_an_optional_key() {
    let demo = start(&[]);
    let auth = [("Authorization", "Bearer carol"), JSON];
    let note = |key: Option<&str>| {
        let mut headers = auth.to_vec();
        if let Some(key) = key {
            headers.push(("Idempotency-Key", key));
        }
        wire(demo.addr, "POST", "/notes", &headers, r#"{"text":"hi"}"#)
    };
    assert_eq!(note(None).status, 201);
    assert_eq!(note(None).status, 201);
    assert_eq!(note(Some("n")).status, 201);
    assert!(note(Some("n")).replayed());
    let notes = wire(demo.addr, "GET", "/notes", &[auth[0]], "").json();
    assert_eq!(notes.as_array().unwrap().len(), 3);
}

#[test]
fn fail_first_is_not_stored_and_the_retry_creates_one_order() {
    let demo = start(&["--fail-first", "1"]);
    let body = r#"{"item":"book","qty":2}"#;
    assert_eq!(create(&demo, "dave", Some("k"), body).status, 500);
    let retry = create(&demo, "dave", Some("k"), body);
    assert_eq!(retry.status, 201);
    assert!(!retry.replayed());
    assert!(create(&demo, "dave", Some("k"), body).replayed());
    assert_eq!(orders(&demo, "dave").as_array().unwrap().len(), 1);
}

#[test]
fn in_flight_duplicates_get_409_and_one_order_exists() {
    let demo = start(&["--handler-delay-ms", "500"]);
    let addr = demo.addr;
    let body = r#"{"item":"book","qty":1}"#;
    let replies: Vec<Wire> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(move || {
                    wire(
                        addr,
                        "POST",
                        "/orders",
                        &[("Authorization", "Bearer erin"), JSON, ("Idempotency-Key", "k")],
                        body,
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let executed = replies.iter().filter(|r| r.status == 201 && !r.replayed()).count();
    assert_eq!(executed, 1, "{replies:?}");
    assert!(replies.iter().all(|r| r.status == 201 || r.status == 409), "{replies:?}");
    assert!(replies.iter().filter(|r| r.status == 409).all(|r| r.header("retry-after").is_some()));
    assert_eq!(orders(&demo, "erin").as_array().unwrap().len(), 1);
}

#[test]
fn unknown_options_and_stores_exit_with_a_message() {
    let bin = demo_binary();
    for args in [&["--store", "memcached://x"][..], &["--bogus"], &["--addr", "nowhere"]] {
        let output = Command::new(&bin).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty(), "{args:?} printed nothing");
    }
    // A Redis that does not answer is a clear failure at start-up.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for store in [format!("redis://127.0.0.1:{port}"), format!("redis-cluster://127.0.0.1:{port},127.0.0.1:{port}")] {
        let output = Command::new(&bin).args(["--store", &store]).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{store}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach Redis"), "{store}");
    }
}

#[test]
fn two_instances_sharing_redis_behave_as_one_service() {
    let Some(url) = common::redis_url("two_instances_sharing_redis_behave_as_one_service") else { return };
    two_instances_behave_as_one_service(&url);
}

#[test]
fn two_instances_sharing_a_redis_cluster_behave_as_one_service() {
    let Some(cluster) = cluster_common::RedisCluster::start("demo on a cluster") else { return };
    // The cluster started moments ago: a store connecting now cannot tell its empty key space
    // from one lost in a restart, and would hold claims back for a lease. Open it as new, as a
    // first deployment does.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(idem_runtime::store::RedisStore::cluster_builder(cluster.urls()).new_key_space().connect())
        .unwrap();
    two_instances_behave_as_one_service(&cluster.store_arg());
    // The README session, on one instance.
    let demo = start(&["--store", &cluster.store_arg()]);
    let token = unique_token("cluster");
    let book = r#"{"item":"book","qty":1}"#;
    let first = create(&demo, &token, Some("order-1"), book);
    assert_eq!(first.status, 201, "{first:?}");
    let retry = create(&demo, &token, Some("order-1"), book);
    assert!(retry.replayed());
    assert_eq!(retry.body, first.body);
    assert_eq!(create(&demo, &token, Some("order-1"), r#"{"item":"pen","qty":3}"#).status, 422);
}

/// Two demo instances on `store`: a replay across instances, a reused key, and concurrent
/// duplicates over both running the handler once.
fn two_instances_behave_as_one_service(store: &str) {
    let a = start(&["--store", store, "--handler-delay-ms", "300"]);
    let b = start(&["--store", store, "--handler-delay-ms", "300"]);
    let token = unique_token("fleet");
    let book = r#"{"item":"book","qty":1}"#;

    let created = create(&a, &token, Some("k1"), book);
    assert_eq!(created.status, 201, "{created:?}");
    let replay = create(&b, &token, Some("k1"), book);
    assert_eq!(replay.status, 201);
    assert!(replay.replayed(), "the other instance replays");
    assert_eq!(replay.body, created.body);
    let other = create(&b, &token, Some("k1"), r#"{"item":"pen","qty":3}"#);
    assert_eq!(other.status, 422);

    // Concurrent duplicates spread over both instances run the handler once.
    let (addr_a, addr_b) = (a.addr, b.addr);
    let auth = format!("Bearer {token}");
    let replies: Vec<Wire> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let addr = if i % 2 == 0 { addr_a } else { addr_b };
                let auth = auth.clone();
                s.spawn(move || {
                    wire(addr, "POST", "/orders", &[("Authorization", &auth), JSON, ("Idempotency-Key", "k2")], book)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(replies.iter().filter(|r| r.status == 201 && !r.replayed()).count(), 1, "{replies:?}");
    assert!(replies.iter().all(|r| r.status == 201 || r.status == 409), "{replies:?}");
    let total = orders(&a, &token).as_array().unwrap().len() + orders(&b, &token).as_array().unwrap().len();
    assert_eq!(total, 2, "k1 and k2 each created one order, across both instances");
}

#[test]
fn the_retrying_client_behind_a_response_losing_proxy_creates_one_order() {
    let demo = start(&[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The first two responses are lost after the server executed the request.
    let proxy = runtime.block_on(common::lossy_proxy(demo.addr, 2));
    let output = Command::new(example_binary("retrying_client"))
        .args(["--server", &format!("http://{proxy}"), "--token", "frank"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("status: 201 Created"), "{stdout}");
    assert!(stdout.contains("replayed: true"), "{stdout}");
    assert_eq!(orders(&demo, "frank").as_array().unwrap().len(), 1, "exactly one order");
}

/// A scrape of `GET /metrics`: each sample's value by its name and labels (sorted, so that a
/// sample is found whatever order the exporter writes its labels in).
fn scrape(demo: &Demo) -> std::collections::BTreeMap<String, f64> {
    let reply = wire(demo.addr, "GET", "/metrics", &[], "");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.header("content-type").is_some_and(|t| t.starts_with("text/plain")), "{reply:?}");
    reply
        .body
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
            let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
            let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').filter(|l| !l.is_empty()).collect();
            labels.sort_unstable();
            (sample(name, &labels), value.parse().unwrap_or_else(|_| panic!("not a value: {line}")))
        })
        .collect()
}

fn sample(name: &str, labels: &[&str]) -> String {
    format!("{name}{{{}}}", labels.join(","))
}

/// The name and labels of a per-request sample of `POST route`, as [`scrape`] keys it.
fn request_sample(name: &str, route: &str, outcome: Option<&str>) -> String {
    let route = format!("route=\"{route}\"");
    let outcome = outcome.map(|o| format!("outcome=\"{o}\""));
    let mut labels = vec!["method=\"POST\"", route.as_str()];
    labels.extend(outcome.as_deref());
    labels.sort_unstable();
    sample(name, &labels)
}

#[test]
fn metrics_count_a_scripted_session_exactly() {
    let demo = start(&["--handler-delay-ms", "200"]);
    let book = r#"{"item":"book","qty":1}"#;
    assert_eq!(create(&demo, "alice", Some("order-1"), book).status, 201);
    assert!(create(&demo, "alice", Some("order-1"), book).replayed());
    assert_eq!(create(&demo, "alice", Some("order-1"), r#"{"item":"pen","qty":3}"#).status, 422);
    assert_eq!(create(&demo, "alice", None, book).status, 400);
    assert_eq!(create(&demo, "alice", Some("a, b"), book).status, 400);
    assert_eq!(create(&demo, "bob", Some("order-1"), book).status, 201);
    // Concurrent duplicates: one runs; each other one is a conflict or, once it is done, a replay.
    let addr = demo.addr;
    let replies: Vec<Wire> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let headers = [("Authorization", "Bearer carol"), JSON, ("Idempotency-Key", "k")];
                s.spawn(move || wire(addr, "POST", "/orders", &headers, book))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let conflicts = replies.iter().filter(|r| r.status == 409).count() as f64;
    let concurrent_replays = replies.iter().filter(|r| r.replayed()).count() as f64;
    assert_eq!(replies.iter().filter(|r| r.status == 201 && !r.replayed()).count(), 1, "{replies:?}");
    // Notes: one executed, one replayed; without a key a note is not covered and not counted.
    let note = |key: Option<&str>| {
        let mut headers = vec![("Authorization", "Bearer dave"), JSON];
        headers.extend(key.map(|key| ("Idempotency-Key", key)));
        wire(demo.addr, "POST", "/notes", &headers, r#"{"text":"hi"}"#)
    };
    assert!(!note(Some("n")).replayed());
    assert!(note(Some("n")).replayed());
    assert_eq!(note(None).status, 201);
    assert_eq!(orders(&demo, "alice").as_array().unwrap().len(), 1);

    let metrics = scrape(&demo);
    let requests: Vec<(&String, &f64)> =
        metrics.iter().filter(|(name, _)| name.starts_with("idem_requests_total{")).collect();
    let expected = [
        ("/orders", "executed", 3.0),
        ("/orders", "replayed", 1.0 + concurrent_replays),
        ("/orders", "mismatch", 1.0),
        ("/orders", "rejected", 2.0),
        ("/orders", "conflict", conflicts),
        ("/notes", "executed", 1.0),
        ("/notes", "replayed", 1.0),
    ];
    let mut expected: Vec<(String, f64)> = expected
        .iter()
        .filter(|(_, _, count)| *count > 0.0)
        .map(|(route, outcome, count)| (request_sample("idem_requests_total", route, Some(outcome)), *count))
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let requests: Vec<(String, f64)> = requests.into_iter().map(|(name, value)| (name.clone(), *value)).collect();
    assert_eq!(requests, expected, "every idem_requests_total sample, exactly");
    for (name, count) in &expected {
        let added = name.replace("idem_requests_total{", "idem_added_seconds_count{");
        assert_eq!(metrics.get(&added), Some(count), "{added}");
    }
    let covered: f64 = expected.iter().map(|(_, count)| count).sum();
    let claims = covered - 2.0; // every covered request but the two rejections claimed its key
    let store = |operation: &str| {
        let labels = [format!("operation=\"{operation}\""), "result=\"ok\"".to_owned()];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        metrics.get(&sample("idem_store_operation_seconds_count", &labels)).copied()
    };
    assert_eq!(store("claim"), Some(claims));
    assert_eq!(store("complete"), Some(4.0));
    for route in ["/orders", "/notes"] {
        assert_eq!(metrics.get(&request_sample("idem_claims_in_flight", route, None)), Some(&0.0), "{route}");
    }
}

#[test]
fn the_openapi_document_is_valid_openapi_and_shows_idempotency() {
    let demo = start(&[]);
    let scratch = Scratch::new("openapi-valid");
    let (doc, file) = openapi_document(&demo, &scratch);
    let create = &doc["paths"]["/orders"]["post"];
    let key = create["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "Idempotency-Key").unwrap();
    assert_eq!(key["required"], true);
    assert!(create["responses"]["201"]["headers"].get("Idempotent-Replayed").is_some());
    assert!(doc["paths"]["/notes"]["post"]["responses"]["409"]["headers"].get("Retry-After").is_some());

    let Some(validator) = common::server_url(
        "IDEM_TEST_OPENAPI_SPEC_VALIDATOR",
        "~/.cache/idem-openapi-venv/bin/openapi-spec-validator (.ci/run installs it)",
        "the_openapi_document_is_valid_openapi_and_shows_idempotency",
    ) else {
        return;
    };
    let output = Command::new(&validator).arg(&file).output().expect("openapi-spec-validator runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && text.contains("OK"), "{text}");
}

/// A contract-testing run against the live demo: schemathesis generates requests from the
/// document (valid and invalid ones), sends them, and checks every response against it.
#[test]
fn schemathesis_finds_no_response_that_contradicts_the_document() {
    let Some(schemathesis) = common::server_url(
        "IDEM_TEST_SCHEMATHESIS",
        "~/.cache/idem-openapi-venv/bin/schemathesis (.ci/run installs it)",
        "schemathesis_finds_no_response_that_contradicts_the_document",
    ) else {
        return;
    };
    let demo = start(&[]);
    let scratch = Scratch::new("schemathesis");
    let (_, file) = openapi_document(&demo, &scratch);
    let checks = [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "missing_required_header",
    ];
    let output = Command::new(&schemathesis)
        .current_dir(&scratch.0)
        .arg("run")
        .arg(&file)
        .args(["--url", &format!("http://{}", demo.addr)])
        .args(["--header", "Authorization: Bearer contract"])
        .args(["--checks", &checks.join(",")])
        // Fixed and small: the same cases on every run, within a few seconds.
        .args(["--max-examples", "50", "--seed", "1", "--workers", "1", "--generation-database", "none"])
        .args(["--request-timeout", "10"])
        .env("NO_COLOR", "1")
        .output()
        .expect("schemathesis runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{text}");
    let counts = regex::Regex::new(r"(\d+) generated, (\d+) passed").unwrap();
    let (generated, passed) = counts
        .captures(&text)
        .map(|c| (c[1].parse::<u32>().unwrap(), c[2].parse::<u32>().unwrap()))
        .unwrap_or_else(|| panic!("no test case count in: {text}"));
    assert!(generated > 0 && passed == generated, "{text}");
}
