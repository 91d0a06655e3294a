//! Every outcome of a covered request (the outcome table of the guide's semantics chapter), through a real `Router`.

mod common;

use common::{app, eventually, post_to};

#[tokio::test]
async fn no_key_on_required_is_400_and_the_handler_does_not_run() {
    let (app, hits) = app();
    let reply = post_to("/required").send(&app).await;
    let problem = reply.assert_problem(400, "urn:idem:problem:missing-key");
    assert_eq!(problem["title"], "Idempotency-Key is missing");
    assert_eq!(hits.get("required"), 0);
}

#[tokio::test]
async fn no_key_on_optional_runs_the_handler_each_time() {
    let (app, hits) = app();
    for run in 1..=2 {
        let reply = post_to("/optional").send(&app).await;
        assert_eq!(reply.status, 201);
        assert_eq!(reply.json()["run"], run);
        assert!(!reply.replayed());
    }
    assert_eq!(hits.get("optional"), 2);
}

#[tokio::test]
async fn malformed_keys_are_400_problems() {
    let (app, hits) = app();
    let cases: &[&[(&str, &str)]] = &[
        &[("idempotency-key", "")],
        &[("idempotency-key", "a,b")],
        &[("idempotency-key", "\"unterminated")],
        &[("idempotency-key", "\"has space\"")],
        &[("idempotency-key", "a"), ("idempotency-key", "a")],
        &[("idempotency-key", "a"), ("x-idempotency-key", "b")],
    ];
    for headers in cases {
        let mut req = post_to("/optional");
        for (k, v) in *headers {
            req = req.header(k, v);
        }
        req.send(&app).await.assert_problem(400, "urn:idem:problem:malformed-key");
    }
    let long = "k".repeat(256);
    post_to("/optional").key(&long).send(&app).await.assert_problem(400, "urn:idem:problem:malformed-key");
    assert_eq!(hits.get("optional"), 0);
}

#[tokio::test]
async fn non_utf8_key_bytes_are_400() {
    let (app, _) = app();
    let mut request = post_to("/required").build();
    request.headers_mut().insert("idempotency-key", axum::http::HeaderValue::from_bytes(b"caf\xe9").unwrap());
    let reply = common::Reply::read(tower::ServiceExt::oneshot(app, request).await.unwrap()).await;
    reply.assert_problem(400, "urn:idem:problem:malformed-key");
}

#[tokio::test]
async fn quoted_and_bare_forms_and_both_header_names_are_one_key() {
    let (app, hits) = app();
    let first = post_to("/required").key("\"abc\"").send(&app).await;
    assert_eq!(first.status, 201);
    let second = post_to("/required").header("x-idempotency-key", "abc").send(&app).await;
    assert!(second.replayed());
    let third = post_to("/required").key("abc").header("x-idempotency-key", "\"abc\"").send(&app).await;
    assert!(third.replayed());
    assert_eq!(hits.get("required"), 1);
}

#[tokio::test]
async fn extra_header_name_is_accepted() {
    let (app, hits) = app();
    assert_eq!(post_to("/extra-header").header("request-id", "r-1").send(&app).await.status, 201);
    assert!(post_to("/extra-header").key("r-1").send(&app).await.replayed());
    post_to("/extra-header").send(&app).await.assert_problem(400, "urn:idem:problem:missing-key");
    assert_eq!(hits.get("extra_header"), 1);
}

#[tokio::test]
async fn pat_scope_without_authorization_is_401() {
    let (app, hits) = app();
    post_to("/pat").key("k").send(&app).await.assert_problem(401, "urn:idem:problem:scope-unresolved");
    post_to("/tenant").key("k").send(&app).await.assert_problem(401, "urn:idem:problem:scope-unresolved");
    assert_eq!(hits.get("pat") + hits.get("tenant_header"), 0);
}

#[tokio::test]
async fn with_scope_rejection_is_the_functions_own() {
    let (app, hits) = app();
    let reply = post_to("/with/t").key("k").send(&app).await;
    assert_eq!(reply.status, 403);
    assert_eq!(&reply.body[..], b"no org");
    let org = |org| post_to("/with/t").key("k").header("x-org", org);
    assert_eq!(org("acme").send(&app).await.status, 201);
    assert!(org("acme").send(&app).await.replayed());
    assert!(!org("globex").send(&app).await.replayed());
    assert_eq!(hits.get("with_scope"), 2);
}

#[tokio::test]
async fn extractor_rejection_is_returned_and_nothing_is_stored() {
    let (app, hits) = app();
    let bad = post_to("/required").key("k").json("{not json").send(&app).await;
    assert_eq!(bad.status, 400);
    assert_eq!(hits.get("required"), 0);
    // The same key with a corrected request runs the handler.
    let good = post_to("/required").key("k").json(r#"{"a":1}"#).send(&app).await;
    assert_eq!(good.status, 201);
    assert!(!good.replayed());
    assert_eq!(hits.get("required"), 1);
}

#[tokio::test]
async fn retry_with_same_key_replays_201_and_location() {
    let (app, hits) = app();
    let first = post_to("/required").key("k1").json(r#"{"item":"book","qty":1}"#).send(&app).await;
    assert_eq!(first.status, 201);
    assert!(!first.replayed(), "the executing response carries no replay marker");
    assert_eq!(first.header("location"), Some("/things/1"));
    // Key order and whitespace do not matter.
    let retry = post_to("/required").key("k1").json(r#"{ "qty": 1, "item": "book" }"#).send(&app).await;
    assert_eq!(retry.status, 201);
    assert!(retry.replayed());
    assert_eq!(retry.header("location"), Some("/things/1"));
    assert_eq!(retry.header("x-run"), Some("1"));
    assert_eq!(retry.body, first.body);
    assert_eq!(hits.get("required"), 1);
}

#[tokio::test]
async fn same_key_other_body_is_422_and_changes_nothing() {
    let (app, hits) = app();
    post_to("/required").key("k").json(r#"{"qty":1}"#).send(&app).await;
    let problem = post_to("/required")
        .key("k")
        .json(r#"{"qty":2}"#)
        .send(&app)
        .await
        .assert_problem(422, "urn:idem:problem:key-reused");
    assert_eq!(problem["title"], "Idempotency-Key is already used");
    let retry = post_to("/required").key("k").json(r#"{"qty":1}"#).send(&app).await;
    assert!(retry.replayed());
    assert_eq!(hits.get("required"), 1);
}

#[tokio::test]
async fn same_key_on_another_route_or_other_path_and_query_is_422() {
    let (app, hits) = app();
    let a = "Bearer a";
    assert_eq!(post_to("/pat").key("k").header("authorization", a).send(&app).await.status, 201);
    post_to("/other-pat")
        .key("k")
        .header("authorization", a)
        .send(&app)
        .await
        .assert_problem(422, "urn:idem:problem:key-reused");
    assert_eq!(post_to("/items/1?n=2").key("q").send(&app).await.status, 201);
    assert!(post_to("/items/1?n=2").key("q").send(&app).await.replayed());
    post_to("/items/2?n=2").key("q").send(&app).await.assert_problem(422, "urn:idem:problem:key-reused");
    post_to("/items/1?n=3").key("q").send(&app).await.assert_problem(422, "urn:idem:problem:key-reused");
    assert_eq!(hits.get("pat"), 1);
    assert_eq!(hits.get("query_path"), 1);
}

#[tokio::test]
async fn fingerprint_selection_ignores_unselected_parameters() {
    let (app, hits) = app();
    assert_eq!(post_to("/only-path/7").key("k").json(r#"{"a":1}"#).send(&app).await.status, 201);
    let other_body = post_to("/only-path/7").key("k").json(r#"{"a":2}"#).send(&app).await;
    assert!(other_body.replayed());
    post_to("/only-path/8")
        .key("k")
        .json(r#"{"a":1}"#)
        .send(&app)
        .await
        .assert_problem(422, "urn:idem:problem:key-reused");
    assert_eq!(hits.get("only_path"), 1);
}

#[tokio::test]
async fn raw_bytes_are_fingerprinted_as_is() {
    let (app, hits) = app();
    assert_eq!(post_to("/bytes").key("k").raw_body(b"abc".to_vec()).send(&app).await.status, 201);
    assert!(post_to("/bytes").key("k").raw_body(b"abc".to_vec()).send(&app).await.replayed());
    post_to("/bytes")
        .key("k")
        .raw_body(b"abd".to_vec())
        .send(&app)
        .await
        .assert_problem(422, "urn:idem:problem:key-reused");
    assert_eq!(hits.get("bytes"), 1);
}

#[tokio::test]
async fn in_flight_duplicate_is_409_with_retry_after_then_replays() {
    let (app, hits) = app();
    let first = {
        let app = app.clone();
        tokio::spawn(async move { post_to("/slow").key("k").send(&app).await })
    };
    common::eventually(std::time::Duration::from_secs(5), || hits.get("slow_started") == 1).await;
    let dup = post_to("/slow").key("k").send(&app).await;
    dup.assert_problem(409, "urn:idem:problem:in-flight");
    assert!(dup.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok()));
    // A different body while in flight is a mismatch, as for a completed key.
    post_to("/slow")
        .key("k")
        .json(r#"{"other":true}"#)
        .send(&app)
        .await
        .assert_problem(422, "urn:idem:problem:key-reused");
    let first = first.await.unwrap();
    assert_eq!(first.status, 201);
    assert!(post_to("/slow").key("k").send(&app).await.replayed());
    assert_eq!(hits.get("slow"), 1);
}

#[tokio::test]
async fn on_conflict_wait_replays_once_the_first_completes() {
    let (app, hits) = app();
    let first = {
        let app = app.clone();
        tokio::spawn(async move { post_to("/wait").key("k").send(&app).await })
    };
    eventually(std::time::Duration::from_secs(5), || hits.get("wait_started") == 1).await;
    let dup = post_to("/wait").key("k").send(&app).await;
    assert_eq!(dup.status, 201);
    assert!(dup.replayed());
    assert_eq!(first.await.unwrap().body, dup.body);
    assert_eq!(hits.get("wait"), 1);
}

#[tokio::test]
async fn scopes_keep_callers_apart() {
    let (app, hits) = app();
    let alice = post_to("/pat").key("k").header("authorization", "Bearer alice").send(&app).await;
    let bob = post_to("/pat").key("k").header("authorization", "Bearer bob").send(&app).await;
    assert!(!alice.replayed() && !bob.replayed());
    assert_ne!(alice.body, bob.body);
    assert!(post_to("/pat").key("k").header("authorization", "Bearer alice").send(&app).await.replayed());
    assert_eq!(hits.get("pat"), 2);

    post_to("/tenant").key("k").header("x-tenant", "acme").send(&app).await;
    assert!(post_to("/tenant").key("k").header("x-tenant", "acme").send(&app).await.replayed());
    assert!(!post_to("/tenant").key("k").header("x-tenant", "globex").send(&app).await.replayed());

    // `global`: one namespace whatever the caller.
    post_to("/global").key("g").header("authorization", "Bearer alice").send(&app).await;
    assert!(post_to("/global").key("g").header("authorization", "Bearer bob").send(&app).await.replayed());
    assert_eq!(hits.get("global"), 1);
}

#[tokio::test]
async fn default_auto_scope_separates_authorized_callers_from_anonymous_ones() {
    let (app, hits) = app();
    post_to("/required").key("k").send(&app).await;
    let with_auth = post_to("/required").key("k").header("authorization", "Bearer a").send(&app).await;
    assert!(!with_auth.replayed());
    assert!(post_to("/required").key("k").send(&app).await.replayed());
    assert_eq!(hits.get("required"), 2);
}

#[tokio::test]
async fn safe_methods_pass_through_even_when_annotated() {
    let (app, hits) = app();
    for _ in 0..2 {
        let reply = post_to("/annotated-get").method("GET").key("k").send(&app).await;
        assert_eq!(reply.status, 201);
        assert!(!reply.replayed());
    }
    // A required handler does not demand a key on GET.
    assert_eq!(post_to("/annotated-get").method("GET").send(&app).await.status, 201);
    assert_eq!(hits.get("annotated_get"), 3);
    // PUT is covered.
    post_to("/annotated-get").method("PUT").key("p").send(&app).await;
    assert!(post_to("/annotated-get").method("PUT").key("p").send(&app).await.replayed());
    assert_eq!(hits.get("annotated_get"), 4);
}

#[tokio::test]
async fn a_body_arriving_in_chunks_fingerprints_as_the_same_body_in_one_piece() {
    use axum::body::{Body, Bytes};
    use tower::ServiceExt as _;

    let (app, hits) = app();
    let chunks =
        ["{\"item\":", "\"book\",", "\"qty\":1}"].map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c.as_bytes())));
    let request = axum::http::Request::post("/required")
        .header("content-type", "application/json")
        .header("idempotency-key", "chunked")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    let first = common::Reply::read(app.clone().oneshot(request).await.unwrap()).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.json()["body"], serde_json::json!({"item": "book", "qty": 1}));
    let retry = post_to("/required").key("chunked").json(r#"{"qty":1,"item":"book"}"#).send(&app).await;
    assert!(retry.replayed());
    assert_eq!(retry.body, first.body);
    assert_eq!(hits.get("required"), 1);
}
