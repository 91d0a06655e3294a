//! A layer's hooks through a real `Router`: idem's own problems shaped to a service's published
//! error format, what a shaping hook cannot change, and the outcome hook.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use common::{app_with_layer, eventually, post_to};
use idem_runtime::hooks::OutcomeKind;
use idem_runtime::problem::{Problem, ProblemKind};
use idem_runtime::store::MemoryStore;
use idem_runtime::{idempotent, Idempotency};

/// A service's published contract: a reused key is a `409` with its own error object.
fn contract_errors(problem: &Problem) -> Option<Response> {
    let body = serde_json::json!({
        "type": "error",
        "error": { "type": "conflict_error", "message": problem.detail() },
    });
    (problem.kind() == ProblemKind::KeyReused).then(|| (StatusCode::CONFLICT, Json(body)).into_response())
}

#[test]
fn a_reused_key_answers_the_contracts_409_conflict_error_and_every_other_problem_stays_idems() {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (app, hits) = app_with_layer(Idempotency::new(MemoryStore::new()).shape_problems(contract_errors));
        let first = post_to("/required").key("k").json(r#"{"n":1}"#).send(&app).await;
        assert_eq!(first.status, 201);
        assert!(post_to("/required").key("k").json(r#"{"n":1}"#).send(&app).await.replayed());

        let reused = post_to("/required").key("k").json(r#"{"n":2}"#).send(&app).await;
        assert_eq!(reused.status, 409);
        assert_eq!(reused.header("content-type"), Some("application/json"));
        assert_eq!(reused.header("retry-after"), None, "a final refusal: no client retries it");
        assert!(!reused.replayed());
        let body = reused.json();
        let message = body["error"]["message"].as_str().expect("a message").to_owned();
        assert!(message.contains("used for a different request"), "{message}");
        assert_eq!(
            body,
            serde_json::json!({ "type": "error", "error": { "type": "conflict_error", "message": message } })
        );
        assert_eq!(hits.get("required"), 1);

        // The same request still running is idem's 409 problem with Retry-After, as before.
        let running = tokio::spawn({
            let app = app.clone();
            async move { post_to("/gated").key("g").send(&app).await }
        });
        eventually(Duration::from_secs(5), || hits.get("gated_started") == 1).await;
        let conflict = post_to("/gated").key("g").send(&app).await;
        conflict.assert_problem(409, "urn:idem:problem:in-flight");
        assert_eq!(conflict.header("retry-after"), Some("1"));
        hits.open_gate();
        assert_eq!(running.await.unwrap().status, 201);
        post_to("/required").send(&app).await.assert_problem(400, "urn:idem:problem:missing-key");
    });
}

/// Answers every problem in the service's own format, keeping idem's status.
fn own_format(problem: &Problem) -> Option<Response> {
    let body = serde_json::json!({ "error": problem.kind().type_uri(), "message": problem.detail() });
    Some((problem.status(), [("x-error-source", "idem")], Json(body)).into_response())
}

#[idempotent(required, scope = "pat")]
async fn pat_echo(Json(body): Json<serde_json::Value>) -> Json<serde_json::Value> {
    Json(body)
}

#[test]
fn rejections_before_the_claim_are_shaped_too() {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let layer = Idempotency::new(MemoryStore::new()).shape_problems(own_format);
        let (app, _) = app_with_layer(layer.clone());
        let pat = Router::new().route("/pat", post(pat_echo)).layer(DefaultBodyLimit::max(8)).layer(layer);
        for (reply, status, uri) in [
            (post_to("/required").send(&app).await, 400, "urn:idem:problem:missing-key"),
            (post_to("/required").key("a, b").send(&app).await, 400, "urn:idem:problem:malformed-key"),
            (post_to("/pat").key("k").send(&pat).await, 401, "urn:idem:problem:scope-unresolved"),
            (
                post_to("/pat")
                    .key("k")
                    .header("authorization", "Bearer t")
                    .json(r#"{"long":"body"}"#)
                    .send(&pat)
                    .await,
                413,
                "urn:idem:problem:body-too-large",
            ),
        ] {
            assert_eq!(reply.status, status, "{uri}");
            assert_eq!(reply.header("x-error-source"), Some("idem"), "{uri}");
            assert_eq!(reply.json()["error"], uri);
        }
        // A `with(f)` scope function's rejection is the application's own, and stays as it is.
        let own = post_to("/with/t1").key("k").send(&app).await;
        assert_eq!((own.status, own.header("x-error-source")), (StatusCode::FORBIDDEN, None));
    });
}

#[test]
fn a_shaped_problem_keeps_its_status_class_idems_retry_after_and_no_replay_marker() {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (app, hits) = app_with_layer(Idempotency::new(MemoryStore::new()).shape_problems(|problem| {
            let mut response = match problem.kind() {
                // A refusal turned into a success: not sent.
                ProblemKind::MissingKey => StatusCode::OK.into_response(),
                // A final refusal turned into a retryable one: not sent.
                ProblemKind::MalformedKey => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                _ => (StatusCode::TOO_MANY_REQUESTS, "shaped").into_response(),
            };
            let headers = response.headers_mut();
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("99"));
            Some(response)
        }));
        post_to("/required").send(&app).await.assert_problem(400, "urn:idem:problem:missing-key");
        post_to("/required").key("a, b").send(&app).await.assert_problem(400, "urn:idem:problem:malformed-key");

        assert_eq!(post_to("/required").key("k").send(&app).await.status, 201);
        let reused = post_to("/required").key("k").json("[1]").send(&app).await;
        assert_eq!((reused.status, reused.body.as_ref()), (StatusCode::TOO_MANY_REQUESTS, &b"shaped"[..]));
        assert_eq!(reused.header("retry-after"), None, "a reused key carries no Retry-After");
        assert!(!reused.replayed());

        let running = tokio::spawn({
            let app = app.clone();
            async move { post_to("/gated").key("g").send(&app).await }
        });
        eventually(Duration::from_secs(5), || hits.get("gated_started") == 1).await;
        // Still running: the status stays 409, so clients keep asking (the body is the hook's).
        let conflict = post_to("/gated").key("g").send(&app).await;
        assert_eq!((conflict.status, conflict.header("retry-after")), (StatusCode::CONFLICT, Some("1")));
        assert_eq!(conflict.body.as_ref(), &b"shaped"[..]);
        assert!(!conflict.replayed());
        hits.open_gate();
        running.await.unwrap();
    });
}

#[test]
fn a_hook_cannot_turn_a_request_still_running_into_a_final_refusal() {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let layer = Idempotency::new(MemoryStore::new()).shape_problems(|_| {
            Some((StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": "no" }))).into_response())
        });
        let (app, hits) = app_with_layer(layer);
        let running = tokio::spawn({
            let app = app.clone();
            async move { post_to("/gated").key("g").send(&app).await }
        });
        eventually(Duration::from_secs(5), || hits.get("gated_started") == 1).await;
        // idem's client (and any client reading 409 + Retry-After) retries this until the first
        // attempt ends; a 400 would make it give up on a call that is still running.
        let conflict = post_to("/gated").key("g").send(&app).await;
        assert_eq!((conflict.status, conflict.header("retry-after")), (StatusCode::CONFLICT, Some("1")));
        assert_eq!(conflict.json()["error"], "no");
        hits.open_gate();
        assert_eq!(running.await.unwrap().status, 201);
        // A final refusal takes the hook's status.
        assert_eq!(post_to("/required").key("r").send(&app).await.status, 201);
        let reused = post_to("/required").key("r").json("[1]").send(&app).await;
        assert_eq!((reused.status, reused.header("retry-after")), (StatusCode::BAD_REQUEST, None));
    });
}

#[test]
fn a_panicking_hook_leaves_idems_problem_and_the_request_unharmed() {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let layer = Idempotency::new(MemoryStore::new())
            .shape_problems(|_| panic!("a bug in the shaping hook"))
            .on_outcome(|_| panic!("a bug in the outcome hook"));
        let (app, hits) = app_with_layer(layer);
        assert_eq!(post_to("/required").key("k").send(&app).await.status, 201);
        assert!(post_to("/required").key("k").send(&app).await.replayed());
        post_to("/required").key("k").json("[1]").send(&app).await.assert_problem(422, "urn:idem:problem:key-reused");
        assert_eq!(hits.get("required"), 1);
    });
}

/// What the outcome hook saw of one request, and its whole `Debug` text.
#[derive(Debug)]
struct Observed {
    kind: OutcomeKind,
    status: u16,
    method: String,
    route: String,
    problem: Option<ProblemKind>,
    request_id: Option<String>,
    debug: String,
}

#[test]
fn the_outcome_hook_sees_replays_conflicts_and_mismatches_and_no_key_or_credential() {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let layer = Idempotency::new(MemoryStore::new()).shape_problems(contract_errors).on_outcome({
            let seen = seen.clone();
            move |outcome| {
                seen.lock().unwrap().push(Observed {
                    kind: outcome.kind(),
                    status: outcome.status().as_u16(),
                    method: outcome.method().to_string(),
                    route: outcome.route().to_owned(),
                    problem: outcome.problem().map(Problem::kind),
                    request_id: outcome.request_id().map(|id| id.to_str().unwrap().to_owned()),
                    debug: format!("{outcome:?}"),
                })
            }
        });
        let (app, hits) = app_with_layer(layer);
        let pat = |body: &str| {
            post_to("/pat").key("secret-key-3").header("authorization", "Bearer secret-token-3").json(body)
        };
        assert_eq!(pat("{}").header("x-request-id", "req-1").send(&app).await.status, 201);
        assert!(pat("{}").send(&app).await.replayed());
        assert_eq!(pat("[1]").send(&app).await.status, 409);
        let running = tokio::spawn({
            let app = app.clone();
            async move { post_to("/gated").key("g").send(&app).await }
        });
        eventually(Duration::from_secs(5), || hits.get("gated_started") == 1).await;
        assert_eq!(post_to("/gated").key("g").send(&app).await.status, 409);
        hits.open_gate();
        running.await.unwrap();
        assert_eq!(post_to("/pat").key("secret-key-3").send(&app).await.status, 401);
        // Not covered: no outcome.
        assert_eq!(post_to("/optional").send(&app).await.status, 201);

        let seen = seen.lock().unwrap();
        let summary: Vec<(OutcomeKind, u16, &str, Option<ProblemKind>)> =
            seen.iter().map(|o| (o.kind, o.status, o.route.as_str(), o.problem)).collect();
        assert_eq!(
            summary,
            [
                (OutcomeKind::Executed, 201, "/pat", None),
                (OutcomeKind::Replayed, 201, "/pat", None),
                (OutcomeKind::Mismatch, 409, "/pat", Some(ProblemKind::KeyReused)),
                (OutcomeKind::Conflict, 409, "/gated", Some(ProblemKind::InFlight)),
                (OutcomeKind::Executed, 201, "/gated", None),
                (OutcomeKind::Rejected, 401, "/pat", Some(ProblemKind::ScopeUnresolved)),
            ]
        );
        assert_eq!(seen[0].request_id.as_deref(), Some("req-1"));
        assert!(seen.iter().all(|o| o.method == "POST"));
        assert_eq!(OutcomeKind::Mismatch.as_str(), "mismatch");
        for observed in seen.iter() {
            assert!(!observed.debug.contains("secret-key-3"), "{}", observed.debug);
            assert!(!observed.debug.contains("secret-token-3"), "{}", observed.debug);
        }
    });
}
