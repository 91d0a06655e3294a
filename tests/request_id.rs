//! A replay carries the `X-Request-Id` of the request that did the work, whether the client sent
//! it or tower-http's request-id layers, outside or inside idem's layer, set it.

mod common;

use axum::http::{HeaderName, StatusCode};
use axum::routing::post;
use axum::Router;
use common::{post_to, Reply};
use idem_runtime::store::MemoryStore;
use idem_runtime::{idempotent, Idempotency};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

#[idempotent(required)]
async fn create() -> (StatusCode, &'static str) {
    (StatusCode::CREATED, "created")
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn request_id_layers(router: Router) -> Router {
    router
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
}

/// The first response and its retry's, each request given a fresh id by the layers.
async fn first_and_retry(app: &Router) -> (Reply, Reply) {
    let first = post_to("/orders").key("k").send(app).await;
    let retry = post_to("/orders").key("k").send(app).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(retry.replayed(), "{retry:?}");
    (first, retry)
}

#[tokio::test]
async fn request_id_layers_outside_idem() {
    let app = Router::new().route("/orders", post(create)).layer(Idempotency::new(MemoryStore::new()));
    let (first, retry) = first_and_retry(&request_id_layers(app)).await;
    let original = first.header("x-request-id").expect("the layers gave the first request an id");
    assert_eq!(retry.header("x-request-id"), Some(original), "the replay names the request that did the work");
}

#[tokio::test]
async fn request_id_layers_inside_idem() {
    let app =
        request_id_layers(Router::new().route("/orders", post(create))).layer(Idempotency::new(MemoryStore::new()));
    let (first, retry) = first_and_retry(&app).await;
    let original = first.header("x-request-id").expect("the layers gave the first request an id");
    assert_eq!(retry.header("x-request-id"), Some(original));
}

#[tokio::test]
async fn a_client_sent_request_id_is_the_one_replayed() {
    let app = Router::new().route("/orders", post(create)).layer(Idempotency::new(MemoryStore::new()));
    let first = post_to("/orders").key("k").header("x-request-id", "req-1").send(&app).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let retry = post_to("/orders").key("k").header("x-request-id", "req-2").send(&app).await;
    assert!(retry.replayed());
    assert_eq!(retry.header("x-request-id"), Some("req-1"));
    // Without an id on the first request, a replay carries none.
    post_to("/orders").key("k2").send(&app).await;
    let plain = post_to("/orders").key("k2").header("x-request-id", "req-3").send(&app).await;
    assert!(plain.replayed());
    assert_eq!(plain.header("x-request-id"), None);
}
