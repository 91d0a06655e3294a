//! A service's defaults, stated once with `defaults!`: handlers that name them behave by them,
//! and a handler that overrides one argument keeps the others.

mod common;

use std::time::Duration;

use axum::extract::State;
use axum::http::{request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use common::{post_to, Shared};
use idem_runtime::store::{MemoryStore, TokioClock};
use idem_runtime::{defaults, idempotent, Defaults, Idempotency};

/// The service's defaults: a key is required, kept an hour per tenant, and a 409 is the
/// service's final answer (stored, where idem releases it by default).
const SERVICE: Defaults = defaults!(required, ttl = "1h", scope = header("X-Tenant"), keep_status(409));

/// Answers the status in the request body, and counts its runs under `name`.
async fn answer(hits: &Shared, name: &'static str, body: String) -> Response {
    let run = hits.hit(name);
    let status = StatusCode::from_u16(body.trim().parse().unwrap_or(201)).unwrap();
    (status, run.to_string()).into_response()
}

#[idempotent(defaults = SERVICE)]
async fn inherits(State(hits): State<Shared>, body: String) -> Response {
    answer(&hits, "inherits", body).await
}

#[idempotent(defaults = SERVICE, ttl = "10m")]
async fn shorter_ttl(State(hits): State<Shared>, body: String) -> Response {
    answer(&hits, "shorter_ttl", body).await
}

#[idempotent(defaults = SERVICE, optional)]
async fn optional(State(hits): State<Shared>, body: String) -> Response {
    answer(&hits, "optional", body).await
}

/// The status lists are one setting: this handler's replaces both of the defaults'.
#[idempotent(defaults = SERVICE, release_status(404))]
async fn own_statuses(State(hits): State<Shared>, body: String) -> Response {
    answer(&hits, "own_statuses", body).await
}

/// Scope by the `X-Org` header, refusing with 403 without it.
fn org(parts: &Parts) -> Result<Vec<u8>, StatusCode> {
    parts.headers.get("x-org").map(|v| v.as_bytes().to_vec()).ok_or(StatusCode::FORBIDDEN)
}

/// Defaults from the service's, with a `with(f)` scope.
const PER_ORG: Defaults = defaults!(defaults = SERVICE, scope = with(org));

#[idempotent(defaults = PER_ORG)]
async fn per_org(State(hits): State<Shared>, body: String) -> Response {
    answer(&hits, "per_org", body).await
}

/// The routes on a store that follows Tokio's clock, so that ttls run out at once.
fn app() -> (Router, Shared) {
    let hits = Shared::default();
    let store = MemoryStore::builder().clock(TokioClock::new()).build();
    let app = Router::new()
        .route("/inherits", post(inherits))
        .route("/shorter-ttl", post(shorter_ttl))
        .route("/optional", post(optional))
        .route("/own-statuses", post(own_statuses))
        .route("/per-org", post(per_org))
        .layer(Idempotency::new(store))
        .with_state(hits.clone());
    (app, hits)
}

fn tenant_post(uri: &str, tenant: &str) -> common::Req {
    post_to(uri).header("x-tenant", tenant).json("201")
}

#[tokio::test]
async fn a_handler_with_the_defaults_requires_a_key_and_scopes_by_tenant() {
    let (app, hits) = app();
    tenant_post("/inherits", "acme").send(&app).await.assert_problem(400, "urn:idem:problem:missing-key");
    post_to("/inherits").key("k").send(&app).await.assert_problem(401, "urn:idem:problem:scope-unresolved");
    assert_eq!(hits.get("inherits"), 0);

    assert_eq!(tenant_post("/inherits", "acme").key("k").send(&app).await.status, 201);
    assert!(tenant_post("/inherits", "acme").key("k").send(&app).await.replayed());
    let other_tenant = tenant_post("/inherits", "globex").key("k").send(&app).await;
    assert!(!other_tenant.replayed(), "one key, two tenants: two records");
    assert_eq!(hits.get("inherits"), 2);
}

#[tokio::test]
async fn a_handler_with_the_defaults_stores_the_409_they_keep() {
    let (app, hits) = app();
    let first = tenant_post("/inherits", "acme").key("k").json("409").send(&app).await;
    assert_eq!(first.status, 409);
    let retry = tenant_post("/inherits", "acme").key("k").json("409").send(&app).await;
    assert_eq!((retry.status.as_u16(), retry.replayed()), (409, true));
    assert_eq!(hits.get("inherits"), 1);
}

#[tokio::test(start_paused = true)]
async fn the_defaults_ttl_applies_and_a_handler_overriding_it_keeps_the_rest() {
    let (app, hits) = app();
    // One key per route: a key used on another route is a different request (422).
    let inherits = || tenant_post("/inherits", "acme").key("a");
    let shorter = || tenant_post("/shorter-ttl", "acme").key("b");
    assert_eq!(inherits().send(&app).await.status, 201);
    assert_eq!(shorter().send(&app).await.status, 201);
    // The override is the ttl alone: no key is still 400, no tenant still 401.
    tenant_post("/shorter-ttl", "acme").send(&app).await.assert_problem(400, "urn:idem:problem:missing-key");
    post_to("/shorter-ttl").key("b").send(&app).await.assert_problem(401, "urn:idem:problem:scope-unresolved");

    tokio::time::advance(Duration::from_secs(10 * 60)).await;
    assert!(inherits().send(&app).await.replayed(), "within the defaults' hour");
    assert!(!shorter().send(&app).await.replayed(), "past its own 10 minutes");

    tokio::time::advance(Duration::from_secs(50 * 60)).await;
    assert!(!inherits().send(&app).await.replayed(), "past the defaults' hour");
    assert_eq!((hits.get("inherits"), hits.get("shorter_ttl")), (2, 2));
}

#[tokio::test]
async fn a_handler_overriding_required_runs_without_a_key_and_keeps_the_scope() {
    let (app, hits) = app();
    for _ in 0..2 {
        assert_eq!(tenant_post("/optional", "acme").send(&app).await.status, 201);
    }
    assert_eq!(hits.get("optional"), 2);
    post_to("/optional").key("k").send(&app).await.assert_problem(401, "urn:idem:problem:scope-unresolved");
    assert_eq!(tenant_post("/optional", "acme").key("k").send(&app).await.status, 201);
    assert!(tenant_post("/optional", "acme").key("k").send(&app).await.replayed());
    assert_eq!(hits.get("optional"), 3);
}

#[tokio::test]
async fn a_handler_giving_a_status_list_replaces_both_lists_of_the_defaults() {
    let (app, hits) = app();
    for status in ["404", "409"] {
        for _ in 0..2 {
            let reply = tenant_post("/own-statuses", "acme").key(status).json(status).send(&app).await;
            assert_eq!(reply.status.as_str(), status);
            assert!(!reply.replayed(), "{status} is released");
        }
    }
    assert_eq!(hits.get("own_statuses"), 4);
}

#[tokio::test]
async fn defaults_made_from_other_defaults_keep_what_they_do_not_change() {
    let (app, hits) = app();
    let org_post = |org: &str| post_to("/per-org").header("x-org", org).json("201");
    org_post("acme").send(&app).await.assert_problem(400, "urn:idem:problem:missing-key");
    assert_eq!(post_to("/per-org").key("k").send(&app).await.status, 403, "the scope function's own refusal");
    assert_eq!(org_post("acme").key("k").send(&app).await.status, 201);
    assert!(org_post("acme").key("k").send(&app).await.replayed());
    assert!(!org_post("globex").key("k").send(&app).await.replayed());
    assert_eq!(hits.get("per_org"), 2);
}
