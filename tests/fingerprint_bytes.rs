//! Whatever a handler can observe of a request is bound byte for byte into its fingerprint: two
//! requests that decode differently (an invalid UTF-8 escape, `+` against `%20` where the
//! handler reads the raw text) are never answered with each other's response.

mod common;

use axum::body::Body;
use axum::extract::{Form, Query, RawForm, RawQuery};
use axum::http::{Request, StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use common::Reply;
use idem_runtime::idempotent;
use idem_runtime::store::MemoryStore;
use idem_runtime::Idempotency;
use tower::ServiceExt as _;

const KEY_REUSED: &str = "urn:idem:problem:key-reused";

/// Answers with the query exactly as it reached the handler.
#[idempotent(required)]
async fn raw_query(uri: Uri) -> (StatusCode, String) {
    (StatusCode::CREATED, uri.query().unwrap_or_default().to_owned())
}

/// Reads nothing of the request: only the target binds it.
#[idempotent(required)]
async fn nothing() -> (StatusCode, &'static str) {
    (StatusCode::CREATED, "done")
}

/// Answers with the decoded query pairs.
#[idempotent(required)]
async fn pairs(Query(pairs): Query<Vec<(String, String)>>) -> (StatusCode, String) {
    (StatusCode::CREATED, format!("{pairs:?}"))
}

/// Answers with the decoded form pairs.
#[idempotent(required)]
async fn form(Form(pairs): Form<Vec<(String, String)>>) -> (StatusCode, String) {
    (StatusCode::CREATED, format!("{pairs:?}"))
}

/// Answers with the raw query, as `RawQuery` hands it over.
#[idempotent(required)]
async fn raw(RawQuery(query): RawQuery) -> (StatusCode, String) {
    (StatusCode::CREATED, format!("{query:?}"))
}

/// Answers with the raw form body.
#[idempotent(required)]
async fn raw_form(RawForm(form): RawForm) -> (StatusCode, String) {
    (StatusCode::CREATED, format!("{form:?}"))
}

fn app() -> Router {
    Router::new()
        .route("/verify", post(raw_query))
        .route("/raw", post(raw))
        .route("/raw-form", post(raw_form))
        .route("/nothing", post(nothing))
        .route("/pairs", post(pairs))
        .route("/form", post(form))
        .layer(Idempotency::new(MemoryStore::new()))
}

async fn send(app: &Router, key: &str, target: &str, content_type: &str, body: &[u8]) -> Reply {
    let request = Request::post(target)
        .header("idempotency-key", key)
        .header("content-type", content_type)
        .body(Body::from(body.to_vec()))
        .unwrap();
    Reply::read(app.clone().oneshot(request).await.unwrap()).await
}

/// The first request runs; the second, with the same key, is refused as another request.
async fn first_runs_second_is_refused(app: &Router, first: &str, second: &str) -> Reply {
    let key = format!("key-for-{first}");
    let a = send(app, &key, first, "text/plain", b"").await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let b = send(app, &key, second, "text/plain", b"").await;
    assert!(!b.replayed(), "{second} got the response of {first}: {b:?}");
    b.assert_problem(422, KEY_REUSED);
    a
}

#[tokio::test]
async fn two_invalid_utf8_escapes_in_the_query_are_two_requests() {
    let app = app();
    let first = first_runs_second_is_refused(&app, "/verify?sig=%FF", "/verify?sig=%FE").await;
    assert_eq!(first.body, "sig=%FF");
}

#[tokio::test]
async fn the_target_binds_invalid_utf8_escapes_when_no_parameter_reads_it() {
    let app = app();
    first_runs_second_is_refused(&app, "/nothing?sig=%FF", "/nothing?sig=%FE").await;
    first_runs_second_is_refused(&app, "/nothing?%C3=1", "/nothing?%C4=1").await;
}

#[tokio::test]
async fn a_query_parameter_binds_the_decoded_bytes_exactly() {
    let app = app();
    first_runs_second_is_refused(&app, "/pairs?sig=%FF%FF", "/pairs?sig=%FE%FF").await;
}

#[tokio::test]
async fn a_handler_reading_the_raw_query_tells_plus_from_percent_20() {
    let app = app();
    let first = first_runs_second_is_refused(&app, "/verify?q=a+b", "/verify?q=a%20b").await;
    assert_eq!(first.body, "q=a+b");
}

#[tokio::test]
async fn decoded_pairs_are_one_request_however_they_are_encoded_and_ordered() {
    let app = app();
    let a = send(&app, "k-1", "/pairs?q=a+b&n=%41", "text/plain", b"").await;
    assert_eq!(a.status, StatusCode::CREATED);
    for same in ["/pairs?q=a%20b&n=A", "/pairs?n=A&q=a+b"] {
        let b = send(&app, "k-1", same, "text/plain", b"").await;
        assert!(b.replayed(), "{same}: {b:?}");
        assert_eq!(b.body, a.body);
    }
}

#[tokio::test]
async fn two_invalid_utf8_escapes_in_a_form_body_are_two_requests() {
    let app = app();
    const FORM: &str = "application/x-www-form-urlencoded";
    let a = send(&app, "k-1", "/form", FORM, b"sig=%FF").await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let b = send(&app, "k-1", "/form", FORM, b"sig=%FE").await;
    assert!(!b.replayed(), "sig=%FE got the response of sig=%FF: {b:?}");
    b.assert_problem(422, KEY_REUSED);
    // The same pairs written otherwise are the same form.
    let same = send(&app, "k-1", "/form", FORM, b"sig=%ff").await;
    assert!(same.replayed(), "{same:?}");
}

#[tokio::test]
async fn a_raw_query_parameter_binds_the_query_as_sent() {
    let app = app();
    first_runs_second_is_refused(&app, "/raw?", "/raw").await;
    first_runs_second_is_refused(&app, "/raw?a=1&b=2", "/raw?b=2&a=1").await;
    first_runs_second_is_refused(&app, "/raw?n=%41", "/raw?n=A").await;
    let a = send(&app, "k-1", "/raw?q=a+b", "text/plain", b"").await;
    assert_eq!(a.status, StatusCode::CREATED);
    let retry = send(&app, "k-1", "/raw?q=a+b", "text/plain", b"").await;
    assert!(retry.replayed(), "{retry:?}");
}

#[tokio::test]
async fn a_raw_form_parameter_binds_the_body_as_sent() {
    let app = app();
    const FORM: &str = "application/x-www-form-urlencoded";
    let a = send(&app, "k-1", "/raw-form", FORM, b"q=a+b").await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    for other in [&b"q=a%20b"[..], b"q=a+b&", b"q=a+B"] {
        let b = send(&app, "k-1", "/raw-form", FORM, other).await;
        b.assert_problem(422, KEY_REUSED);
    }
    assert!(send(&app, "k-1", "/raw-form", FORM, b"q=a+b").await.replayed());
}

#[tokio::test]
async fn a_uri_parameter_binds_the_authority_an_http2_uri_carries() {
    let app = app();
    let key = "k-authority";
    let a = send(&app, key, "http://a.example/verify?x=1", "text/plain", b"").await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let b = send(&app, key, "http://b.example/verify?x=1", "text/plain", b"").await;
    b.assert_problem(422, KEY_REUSED);
    assert!(send(&app, key, "http://a.example/verify?x=1", "text/plain", b"").await.replayed());
}
