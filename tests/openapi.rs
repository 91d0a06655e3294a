//! What annotated handlers contribute to a utoipa OpenAPI document, and that it is what they
//! answer.

mod common;

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use common::post_to;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idem_runtime::store::{Clock as _, MemoryStore};
use idem_runtime::testkit::ManualClock;
use idem_runtime::{idempotent, openapi, Idempotency};
use serde_json::{json, Value};
use utoipa::openapi::{HttpMethod, OpenApi as Document};
use utoipa::OpenApi;

#[derive(serde::Deserialize, utoipa::ToSchema)]
struct NewOrder {
    item: String,
}

#[utoipa::path(post, path = "/orders", responses((status = 201, description = "The order was created")))]
#[idempotent(required, ttl = "24h", scope = "pat")]
async fn create_order(Json(order): Json<NewOrder>) -> (StatusCode, String) {
    (StatusCode::CREATED, order.item)
}

#[utoipa::path(post, path = "/orders/{id}/cancel", params(("id" = u32, Path)), responses((status = 204)))]
#[idempotent(optional, header = "X-Request-Key", scope = "global", ttl = "90s", on_expired_key = "run")]
async fn cancel_order(axum::extract::Path(id): axum::extract::Path<u32>) -> StatusCode {
    let _ = id;
    StatusCode::NO_CONTENT
}

/// The application documents axum's own rejections; idem's problems join them.
#[utoipa::path(
    put,
    path = "/notes",
    responses(
        (status = 200, description = "Stored"),
        (status = 404, description = "No such notebook"),
        (status = 422, description = "The body is not a note", content_type = "text/plain", body = String),
        (status = 400, description = "The application's problem", content_type = "application/problem+json", body = AppProblem),
    )
)]
#[idempotent(release_status(404), scope = header("X-Tenant"))]
async fn put_note(Json(note): Json<Value>) -> Json<Value> {
    Json(note)
}

#[utoipa::path(get, path = "/orders", responses((status = 200)))]
#[idempotent]
async fn list_orders() -> &'static str {
    "[]"
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct AppProblem {
    r#type: String,
}

#[derive(OpenApi)]
#[openapi(paths(create_order, cancel_order, put_note, list_orders))]
struct ApiDoc;

fn documented() -> Document {
    let mut api = ApiDoc::openapi();
    openapi::document(&mut api, "/orders", HttpMethod::Post, create_order).unwrap();
    openapi::document(&mut api, "/orders/{id}/cancel", HttpMethod::Post, cancel_order).unwrap();
    openapi::document(&mut api, "/notes", HttpMethod::Put, put_note).unwrap();
    openapi::document(&mut api, "/orders", HttpMethod::Get, list_orders).unwrap();
    api
}

/// The document as a client reads it.
fn as_json(api: &Document) -> Value {
    serde_json::to_value(api).unwrap()
}

fn operation<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
    &doc["paths"][path][method]
}

fn header_parameter<'a>(operation: &'a Value, name: &str) -> &'a Value {
    let parameters = operation["parameters"].as_array().expect("parameters");
    parameters.iter().find(|p| p["in"] == "header" && p["name"] == name).unwrap_or_else(|| panic!("no {name}"))
}

fn problem_examples(response: &Value) -> Vec<&str> {
    let examples = response["content"]["application/problem+json"]["examples"].as_object().expect("examples");
    examples.values().map(|e| e["value"]["type"].as_str().unwrap()).collect()
}

fn app() -> Router {
    Router::new()
        .route("/orders", post(create_order).get(list_orders))
        .route("/orders/{id}/cancel", post(cancel_order))
        .route("/notes", axum::routing::put(put_note))
}

#[test]
fn a_required_handler_documents_a_required_key_and_every_problem_it_can_answer() {
    let doc = as_json(&documented());
    let op = operation(&doc, "/orders", "post");

    let key = header_parameter(op, "Idempotency-Key");
    assert_eq!(key["required"], true);
    assert_eq!(key["schema"]["type"], "string");
    let description = key["description"].as_str().unwrap();
    assert!(description.contains("1 day") && description.contains("X-Idempotency-Key"), "{description}");

    let responses = op["responses"].as_object().unwrap();
    let statuses: Vec<&str> = responses.keys().map(String::as_str).collect();
    assert_eq!(statuses, ["201", "400", "401", "409", "412", "413", "422", "500", "503"]);
    assert_eq!(responses["201"]["headers"]["Idempotent-Replayed"]["schema"]["enum"], json!(["true"]));
    for status in ["400", "401", "409", "412", "413", "422", "500", "503"] {
        let problem = &responses[status]["content"]["application/problem+json"];
        assert_eq!(problem["schema"]["$ref"], "#/components/schemas/IdempotencyProblem", "{status}");
        assert!(responses[status]["headers"].get("Idempotent-Replayed").is_none(), "{status} is never replayed");
    }
    assert_eq!(
        problem_examples(&responses["400"]),
        [
            "urn:idem:problem:body-unreadable",
            "urn:idem:problem:key-from-future",
            "urn:idem:problem:malformed-first-sent",
            "urn:idem:problem:malformed-key",
            "urn:idem:problem:missing-key"
        ]
    );
    assert_eq!(problem_examples(&responses["412"]), ["urn:idem:problem:key-expired"]);
    assert_eq!(problem_examples(&responses["503"]).len(), 2, "unavailable and recovering");
    for status in ["409", "503"] {
        assert_eq!(responses[status]["headers"]["Retry-After"]["schema"]["type"], "integer", "{status}");
    }
    assert!(responses["422"]["headers"].get("Retry-After").is_none());

    let schema = &doc["components"]["schemas"]["IdempotencyProblem"];
    assert_eq!(schema["required"], json!(["type", "title", "status", "detail"]));
}

#[test]
fn an_optional_handler_documents_its_own_header_name_and_only_the_problems_it_can_answer() {
    let doc = as_json(&documented());
    let op = operation(&doc, "/orders/{id}/cancel", "post");
    let key = header_parameter(op, "X-Request-Key");
    assert_eq!(key["required"], false);
    let description = key["description"].as_str().unwrap();
    assert!(description.contains("90 seconds") && description.contains("`Idempotency-Key`"), "{description}");

    let responses = op["responses"].as_object().unwrap();
    let statuses: Vec<&str> = responses.keys().map(String::as_str).collect();
    // A global scope cannot fail (no 401); no body is read (no 413); late keys run (no 412).
    assert_eq!(statuses, ["204", "400", "409", "422", "500", "503"]);
    let headers = op["parameters"].as_array().unwrap().iter().filter(|p| p["in"] == "header");
    assert_eq!(headers.count(), 1, "no Repeatability-First-Sent: it is not read");
    assert_eq!(
        problem_examples(&responses["400"]),
        ["urn:idem:problem:malformed-key"],
        "an optional key is never missing"
    );
    assert!(responses["204"]["headers"].get("Idempotent-Replayed").is_some());
}

#[test]
fn a_handler_refusing_expired_keys_documents_when_a_call_began_and_the_refusal() {
    let doc = as_json(&documented());
    let op = operation(&doc, "/orders", "post");
    let key = header_parameter(op, "Idempotency-Key")["description"].as_str().unwrap();
    assert!(key.contains("UUIDv7") && key.contains("412"), "{key}");
    let first_sent = header_parameter(op, "Repeatability-First-Sent");
    assert_eq!(first_sent["required"], false);
    assert_eq!(first_sent["schema"]["type"], "string");
    let description = first_sent["description"].as_str().unwrap();
    assert!(description.contains("HTTP-date") && description.contains("1 day"), "{description}");
    let pattern = regex::Regex::new(first_sent["schema"]["pattern"].as_str().unwrap()).unwrap();
    assert!(pattern.is_match("Sun, 06 Nov 1994 08:49:37 GMT"));
    assert!(!pattern.is_match("1994-11-06T08:49:37Z"));
    let expired = &op["responses"]["412"];
    assert!(expired["description"].as_str().unwrap().contains("urn:idem:problem:key-expired"));
    assert!(expired["headers"].get("Retry-After").is_none(), "retrying does not help");
}

#[test]
fn responses_the_application_documents_keep_what_they_say_and_gain_idems() {
    let doc = as_json(&documented());
    let op = operation(&doc, "/notes", "put");
    let key = header_parameter(op, "Idempotency-Key");
    assert_eq!(key["required"], false);
    let responses = op["responses"].as_object().unwrap();

    let unprocessable = &responses["422"];
    assert_eq!(unprocessable["content"]["text/plain"]["schema"]["type"], "string");
    assert_eq!(
        unprocessable["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/IdempotencyProblem"
    );
    assert!(unprocessable["description"].as_str().unwrap().starts_with("The body is not a note"));
    // The application's 422 may be stored, so it may come back as a replay.
    assert!(unprocessable["headers"].get("Idempotent-Replayed").is_some());

    let bad_request = &responses["400"]["content"]["application/problem+json"]["schema"]["anyOf"];
    assert_eq!(
        bad_request,
        &json!([{ "$ref": "#/components/schemas/AppProblem" }, { "$ref": "#/components/schemas/IdempotencyProblem" }])
    );

    // `release_status(404)`: a 404 is never stored, so never replayed; 200 is.
    assert!(responses["404"]["headers"].get("Idempotent-Replayed").is_none());
    assert!(responses["200"]["headers"].get("Idempotent-Replayed").is_some());
    // `header("X-Tenant")` can fail, and says which header is missing.
    let unauthorized = responses["401"]["content"]["application/problem+json"]["examples"].as_object().unwrap();
    let detail = unauthorized["scope-unresolved"]["value"]["detail"].as_str().unwrap();
    assert!(detail.contains("x-tenant"), "{detail}");
}

#[test]
fn safe_methods_are_never_covered_and_are_left_as_they_are() {
    let untouched = as_json(&ApiDoc::openapi());
    let doc = as_json(&documented());
    assert_eq!(operation(&doc, "/orders", "get"), operation(&untouched, "/orders", "get"));
}

#[test]
fn describing_an_operation_twice_leaves_it_as_describing_it_once() {
    let once = documented();
    let mut twice = documented();
    openapi::document(&mut twice, "/orders", HttpMethod::Post, create_order).unwrap();
    openapi::document(&mut twice, "/notes", HttpMethod::Put, put_note).unwrap();
    assert_eq!(as_json(&twice), as_json(&once));
}

#[test]
fn a_route_missing_from_the_document_is_an_error_that_names_it() {
    let mut api = ApiDoc::openapi();
    let error = openapi::document(&mut api, "/order", HttpMethod::Post, create_order).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("`POST /order`") && message.contains("#[utoipa::path(post, path = \"/order\")]"),
        "{message}"
    );
    let error = openapi::document(&mut api, "/orders", HttpMethod::Delete, create_order).unwrap_err();
    assert!(error.to_string().contains("`DELETE /orders`"), "{error}");
}

/// The examples are the bodies idem answers with: each one a test can provoke comes back as
/// documented, status and all.
#[tokio::test]
async fn the_documented_problems_are_the_answers() {
    let doc = as_json(&documented());
    let example = |path: &str, method: &str, status: &str, name: &str| {
        let response = &operation(&doc, path, method)["responses"][status];
        response["content"]["application/problem+json"]["examples"][name]["value"].clone()
    };
    let app = app();
    let order = r#"{"item":"book"}"#;

    let missing = post_to("/orders").header("authorization", "Bearer a").json(order).send(&app).await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.json(), example("/orders", "post", "400", "missing-key"));

    let malformed = post_to("/orders").key("").header("authorization", "Bearer a").json(order).send(&app).await;
    assert_eq!(malformed.json(), example("/orders", "post", "400", "malformed-key"));

    let anonymous = post_to("/orders").key("k").json(order).send(&app).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json(), example("/orders", "post", "401", "scope-unresolved"));

    let first = post_to("/orders").key("k").header("authorization", "Bearer a").json(order).send(&app).await;
    assert_eq!(first.status, 201);
    let reused = post_to("/orders").key("k").header("authorization", "Bearer a").json(r#"{"item":"pen"}"#);
    let reused = reused.send(&app).await;
    assert_eq!(reused.status, 422);
    assert_eq!(reused.json(), example("/orders", "post", "422", "key-reused"));

    // On a clock the test holds, a key minted 25 hours ago (the ttl, plus an hour) is exactly
    // that old: the example's detail.
    let clock = ManualClock::new();
    let held = crate::app().layer(Idempotency::new(MemoryStore::builder().clock(clock.clone()).build()));
    let minted = |at: SystemTime| {
        let since = at.duration_since(UNIX_EPOCH).unwrap();
        uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos()))
            .to_string()
    };
    let day = Duration::from_secs(86_400);
    let hour = Duration::from_secs(3600);
    for (at, status, name) in
        [(clock.now() - day - hour, "412", "key-expired"), (clock.now() + hour, "400", "key-from-future")]
    {
        let reply =
            post_to("/orders").key(&minted(at)).header("authorization", "Bearer a").json(order).send(&held).await;
        assert_eq!(reply.status.as_str(), status);
        assert_eq!(reply.json(), example("/orders", "post", status, name));
    }
    let undated =
        post_to("/orders").key("k2").header("repeatability-first-sent", "soon").header("authorization", "Bearer a");
    let undated = undated.json(order).send(&app).await;
    assert_eq!(undated.json(), example("/orders", "post", "400", "malformed-first-sent"));

    let tenantless = post_to("/notes").method("PUT").key("k").json("{}").send(&app).await;
    assert_eq!(tenantless.status, 401);
    assert_eq!(tenantless.json(), example("/notes", "put", "401", "scope-unresolved"));
}

/// The key format in the document is the one the server applies: values the pattern accepts
/// are keys, values it refuses are answered 400.
#[tokio::test]
async fn the_documented_key_format_is_the_one_applied() {
    let doc = as_json(&documented());
    let pattern = header_parameter(operation(&doc, "/orders", "post"), "Idempotency-Key")["schema"]["pattern"]
        .as_str()
        .map(|p| regex::Regex::new(p).unwrap())
        .unwrap();
    let app = app();
    let long = "k".repeat(255);
    let too_long = "k".repeat(256);
    let quoted_long = format!("\"{long}\"");
    let cases: [(&str, bool); 12] = [
        ("8e03978e-40d5-43e8-bc93-6894a57f9324", true),
        ("\"abc\"", true),
        (r#""a\"b""#, true),
        (r#""a,b""#, true),
        ("!~", true),
        (&long, true),
        (&quoted_long, true),
        (&too_long, false),
        ("a,b", false),
        ("\"a b\"", false),
        ("\"\"", false),
        (r#""a\b""#, false),
    ];
    for (value, accepted) in cases {
        assert_eq!(pattern.is_match(value), accepted, "the pattern on {value:?}");
        let reply = post_to("/orders/7/cancel").key(value).send(&app).await;
        let expected = if accepted { 204 } else { 400 };
        assert_eq!(reply.status, expected, "the server on {value:?}");
    }
}
