//! Which store a covered request uses: the one of the `Idempotency` layer its route is behind;
//! with `store = "layer"`, a route outside every layer is refused instead of served from the
//! process's embedded store; without it, zero configuration works.

mod common;

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use common::{post_to, Shared};
use idem_runtime::store::MemoryStore;
use idem_runtime::{defaults, idempotent, Defaults, Idempotency};

/// A service whose handlers use only the store its layer sets.
const SERVICE: Defaults = defaults!(required, store = "layer");

#[idempotent(defaults = SERVICE)]
async fn orders(State(hits): State<Shared>) -> String {
    hits.hit("orders").to_string()
}

#[idempotent(defaults = SERVICE)]
async fn refunds(State(hits): State<Shared>) -> String {
    hits.hit("refunds").to_string()
}

/// The service's defaults, but this handler may use the embedded store.
#[idempotent(defaults = SERVICE, store = "layer-or-embedded")]
async fn notes(State(hits): State<Shared>) -> String {
    hits.hit("notes").to_string()
}

/// Zero configuration.
#[idempotent(required)]
async fn plain(State(hits): State<Shared>) -> String {
    hits.hit("plain").to_string()
}

#[tokio::test]
async fn a_route_added_after_the_layer_is_refused_with_a_500_and_does_not_run() {
    let hits = Shared::default();
    let app = Router::new()
        .route("/orders", post(orders))
        .layer(Idempotency::new(MemoryStore::new()))
        .route("/refunds", post(refunds))
        .with_state(hits.clone());

    assert_eq!(post_to("/orders").key("k").send(&app).await.status, 200);
    for _ in 0..2 {
        let refused = post_to("/refunds").key("k").send(&app).await;
        refused.assert_problem(500, "urn:idem:problem:store-not-configured");
    }
    assert_eq!(hits.get("refunds"), 0);
    // A request refused before it is covered is answered as before.
    post_to("/refunds").send(&app).await.assert_problem(400, "urn:idem:problem:missing-key");
}

#[tokio::test]
async fn a_router_merged_in_without_the_layer_is_refused() {
    let hits = Shared::default();
    let payments = Router::new().route("/orders", post(orders)).layer(Idempotency::new(MemoryStore::new()));
    let back_office = Router::new().route("/refunds", post(refunds));
    let app = payments.merge(back_office).with_state(hits.clone());

    assert_eq!(post_to("/orders").key("k").send(&app).await.status, 200);
    post_to("/refunds").key("k").send(&app).await.assert_problem(500, "urn:idem:problem:store-not-configured");
    assert_eq!(hits.get("refunds"), 0);
}

#[tokio::test]
async fn routes_merged_or_nested_before_the_layer_use_its_store() {
    let hits = Shared::default();
    let store = MemoryStore::new();
    let back_office = Router::new().route("/refunds", post(refunds));
    let app = Router::new()
        .route("/orders", post(orders))
        .merge(back_office.clone())
        .nest("/v2", back_office)
        .layer(Idempotency::new(store.clone()))
        .with_state(hits.clone());
    // A second application on the same store sees what the first stored.
    let twin = Router::new().route("/refunds", post(refunds)).layer(Idempotency::new(store)).with_state(hits.clone());

    assert_eq!(post_to("/refunds").key("k").send(&app).await.status, 200);
    assert!(post_to("/refunds").key("k").send(&twin).await.replayed());
    assert_eq!(post_to("/v2/refunds").key("v2").send(&app).await.status, 200);
    assert!(post_to("/v2/refunds").key("v2").send(&app).await.replayed());
    assert_eq!(hits.get("refunds"), 2);
}

#[tokio::test]
async fn a_handler_may_take_the_embedded_store_back_from_its_defaults() {
    let hits = Shared::default();
    let app = Router::new().route("/notes", post(notes)).with_state(hits.clone());
    assert_eq!(post_to("/notes").key("k").send(&app).await.status, 200);
    assert!(post_to("/notes").key("k").send(&app).await.replayed());
    post_to("/notes").send(&app).await.assert_problem(400, "urn:idem:problem:missing-key");
    assert_eq!(hits.get("notes"), 1);
}

/// Two applications in one process, one with a layer and one without: each keeps working as
/// configured, whatever the other does and in whichever order they are built.
#[tokio::test]
async fn zero_configuration_works_beside_an_application_with_a_layer() {
    let hits = Shared::default();
    let internal = Router::new().route("/plain", post(plain)).with_state(hits.clone());
    let public = Router::new()
        .route("/orders", post(orders))
        .layer(Idempotency::new(MemoryStore::new()))
        .with_state(hits.clone());
    let internal_after = Router::new().route("/plain", post(plain)).with_state(hits.clone());

    assert_eq!(post_to("/orders").key("k").send(&public).await.status, 200);
    assert_eq!(post_to("/plain").key("zero-config").send(&internal).await.status, 200);
    // Both zero-configuration routers share the process's embedded store.
    assert!(post_to("/plain").key("zero-config").send(&internal_after).await.replayed());
    assert_eq!(hits.get("plain"), 1);
}
