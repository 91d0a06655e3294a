//! OpenAPI: what an annotated handler adds to its operation in a [utoipa] document.
//!
//! Document the handler with `#[utoipa::path]` as usual (above `#[idempotent]`, so that utoipa
//! reads the parameters as written), then hand the document, the route and the handler to
//! [`document`]. The handler's own arguments decide what is added, so nothing is repeated:
//!
//! - the key header: `Idempotency-Key` (or the name given with `header = "…"`), required or
//!   optional as the handler is, with its format and how long responses are kept;
//! - unless the handler says `on_expired_key = "run"`, the optional `Repeatability-First-Sent`
//!   header (an HTTP-date), and what a request past the handler's lifetime gets;
//! - an `Idempotent-Replayed` header on every response the handler's status rule stores, since
//!   any of them may come back as a replay;
//! - the problem responses idem can give for this handler, each `application/problem+json`
//!   with the [`PROBLEM_SCHEMA`] schema and one example per problem type: 400 (missing key
//!   when `required`, malformed key, and unless `on_expired_key = "run"` a malformed
//!   `Repeatability-First-Sent` or a request dated in the future), 401 when the scope can fail
//!   (`pat`, `header("…")`), 409 with `Retry-After`, 412 for a key past its lifetime (unless
//!   `on_expired_key = "run"`), 413 and an unreadable body when the operation has a request
//!   body, 422, 500 when the handler panics, 503 with `Retry-After`.
//!
//! A response the operation documents already, such as axum's own 400 or 422 rejections, keeps
//! what it says; idem's problem content is added next to it (as an `anyOf` when both are
//! `application/problem+json`). Responses given by reference (`$ref`) are left as they are.
//!
//! ```
//! use axum::{http::StatusCode, routing::post, Json, Router};
//! use idem_runtime::{idempotent, openapi};
//! use utoipa::openapi::HttpMethod;
//! use utoipa::OpenApi;
//!
//! #[utoipa::path(post, path = "/orders", responses((status = 201, description = "created")))]
//! #[idempotent(required, scope = "pat")]
//! async fn create_order(Json(order): Json<serde_json::Value>) -> StatusCode {
//!     # drop(order);
//!     StatusCode::CREATED
//! }
//!
//! #[derive(OpenApi)]
//! #[openapi(paths(create_order))]
//! struct ApiDoc;
//!
//! let mut api = ApiDoc::openapi();
//! openapi::document(&mut api, "/orders", HttpMethod::Post, create_order).unwrap();
//!
//! let app: Router = Router::new().route("/orders", post(create_order));
//! # drop(app);
//! let operation = api.paths.get_path_operation("/orders", HttpMethod::Post).unwrap();
//! assert!(operation.responses.responses.contains_key("409"));
//! ```
//!
//! `document` runs once per route, next to the route itself; a [`utoipa::Modify`] that calls it
//! for every annotated route fits `#[openapi(modifiers(…))]` as well.

use std::fmt;
use std::time::Duration;

use http::{HeaderName, StatusCode};
use serde_json::Value;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{AnyOfBuilder, Schema};
use utoipa::openapi::{Components, Content, HttpMethod, OpenApi, Ref, RefOr, Response};

use crate::config::{HandlerConfig, HandlerSpec, ScopeKind};
use crate::extract::IdempotencyContext;
use crate::key::KeyError;
use crate::lifetime::{Early, Late, Source};
use crate::problem::{Problem, PROBLEM_JSON};

mod fragments;

use fragments::{first_sent_parameter, key_parameter, problem_schema, replayed_header, retry_after_header};

/// The name of the problem schema [`document`] adds to the document's components: RFC 9457's
/// `type`, `title`, `status` and `detail`, all present in every problem idem answers with.
pub const PROBLEM_SCHEMA: &str = "IdempotencyProblem";

/// The response header that marks a replay.
const REPLAYED: &str = "Idempotent-Replayed";

/// A function annotated with `#[idempotent]`. `M` stands for its parameters and is inferred.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a handler annotated with `#[idempotent]`",
    label = "expected a function annotated with `#[idempotent]`",
    note = "only annotated handlers have idempotency to document: pass the function itself, as it is routed"
)]
pub trait IdempotentHandler<M> {
    /// The handler's configuration, as its attribute compiled it.
    #[doc(hidden)]
    const CONFIG: HandlerConfig;
}

macro_rules! idempotent_handler {
    ($($param:ident),*) => {
        impl<F, Fut, S, $($param,)*> IdempotentHandler<(S, $($param,)*)> for F
        where
            F: FnOnce(IdempotencyContext<S>, $($param,)*) -> Fut,
            S: HandlerSpec,
        {
            const CONFIG: HandlerConfig = S::CONFIG;
        }
    };
}

idempotent_handler!();
idempotent_handler!(T1);
idempotent_handler!(T1, T2);
idempotent_handler!(T1, T2, T3);
idempotent_handler!(T1, T2, T3, T4);
idempotent_handler!(T1, T2, T3, T4, T5);
idempotent_handler!(T1, T2, T3, T4, T5, T6);
idempotent_handler!(T1, T2, T3, T4, T5, T6, T7);
idempotent_handler!(T1, T2, T3, T4, T5, T6, T7, T8);
idempotent_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9);
idempotent_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10);
idempotent_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11);
idempotent_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12);
idempotent_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13);
idempotent_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13, T14);
idempotent_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13, T14, T15);

/// The document has no operation for the route given to [`document`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingOperation {
    method: &'static str,
    path: String,
}

impl fmt::Display for MissingOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the OpenAPI document has no `{} {}` operation: document the handler with \
             `#[utoipa::path({}, path = \"{}\")]` and list it in the document before describing its idempotency",
            self.method.to_ascii_uppercase(),
            self.path,
            self.method,
            self.path
        )
    }
}

impl std::error::Error for MissingOperation {}

/// Adds what the annotated `handler` routed at `method path` does to that operation of
/// `openapi`: its key header, the `Idempotent-Replayed` header and idem's problem responses
/// (see the [module](self) documentation), and the [`PROBLEM_SCHEMA`] schema to the
/// components.
///
/// A safe method (GET, HEAD, OPTIONS, TRACE) is never covered, so its operation is left as it
/// is. Describing an operation twice leaves it as describing it once.
///
/// # Errors
///
/// [`MissingOperation`] when the document has no such operation.
pub fn document<H, M>(openapi: &mut OpenApi, path: &str, method: HttpMethod, handler: H) -> Result<(), MissingOperation>
where
    H: IdempotentHandler<M>,
{
    let _ = handler;
    let (name, safe) = method_name(&method);
    let operation = openapi
        .paths
        .paths
        .get_mut(path)
        .and_then(|item| operation_mut(item, &method))
        .ok_or_else(|| MissingOperation { method: name, path: path.to_owned() })?;
    if safe {
        return Ok(());
    }
    describe(operation, &H::CONFIG);
    let components = openapi.components.get_or_insert_with(Components::new);
    components.schemas.insert(PROBLEM_SCHEMA.to_owned(), RefOr::T(problem_schema()));
    Ok(())
}

fn method_name(method: &HttpMethod) -> (&'static str, bool) {
    match method {
        HttpMethod::Get => ("get", true),
        HttpMethod::Head => ("head", true),
        HttpMethod::Options => ("options", true),
        HttpMethod::Trace => ("trace", true),
        HttpMethod::Post => ("post", false),
        HttpMethod::Put => ("put", false),
        HttpMethod::Patch => ("patch", false),
        HttpMethod::Delete => ("delete", false),
    }
}

fn operation_mut<'a>(item: &'a mut utoipa::openapi::PathItem, method: &HttpMethod) -> Option<&'a mut Operation> {
    match method {
        HttpMethod::Get => item.get.as_mut(),
        HttpMethod::Head => item.head.as_mut(),
        HttpMethod::Options => item.options.as_mut(),
        HttpMethod::Trace => item.trace.as_mut(),
        HttpMethod::Post => item.post.as_mut(),
        HttpMethod::Put => item.put.as_mut(),
        HttpMethod::Patch => item.patch.as_mut(),
        HttpMethod::Delete => item.delete.as_mut(),
    }
}

fn describe(operation: &mut Operation, config: &HandlerConfig) {
    key_parameter(operation, config);
    if config.refuse_expired {
        first_sent_parameter(operation, config);
    }
    for (status, response) in &mut operation.responses.responses {
        if let RefOr::T(response) = response {
            // idem's own problems are never stored; what the application answers may be.
            if may_be_replayed(status, config) && !only_idem_problems(response) {
                response.headers.insert(REPLAYED.to_owned(), RefOr::T(replayed_header()));
            }
        }
    }
    let problems = problems(config, operation.request_body.is_some());
    let mut statuses: Vec<StatusCode> = problems.iter().map(Problem::status).collect();
    statuses.dedup();
    for status in statuses {
        let group: Vec<&Problem> = problems.iter().filter(|p| p.status() == status).collect();
        add_problem_response(operation, status, &group);
    }
}

/// Every problem idem can answer this handler with, in status order, as it answers them.
fn problems(config: &HandlerConfig, has_body: bool) -> Vec<Problem> {
    let mut problems = Vec::new();
    if config.required {
        problems.push(Problem::missing_key());
    }
    problems.push(Problem::malformed_key(&KeyError::Empty));
    if config.refuse_expired {
        // A key minted an hour before it could be kept, or an hour ahead.
        let hour = Duration::from_secs(3600);
        let age = config.ttl.saturating_add(hour);
        problems.push(Problem::malformed_first_sent());
        problems.push(Problem::key_from_future(&Early { ahead: hour, source: Source::Key }));
        problems.push(Problem::key_expired(&Late { age, source: Source::Key, ttl: config.ttl }));
    }
    if has_body {
        let error = axum::Error::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        problems.push(Problem::body_unreadable(&error));
    }
    match config.scope {
        ScopeKind::Pat => problems.push(Problem::no_credential()),
        ScopeKind::Header(name) => problems.push(Problem::no_scope_header(&HeaderName::from_static(name))),
        // `with(f)` answers with whatever `f` rejects with: the application documents it.
        ScopeKind::Auto | ScopeKind::Global | ScopeKind::With(_) => {}
    }
    problems.push(Problem::in_flight());
    if has_body {
        problems.push(Problem::body_too_large());
    }
    problems.push(Problem::key_reused());
    problems.push(Problem::handler_panicked());
    problems.push(Problem::store_unavailable());
    problems.push(Problem::store_recovering(config.lease));
    problems.sort_by_key(|p| p.status());
    problems
}

/// Whether a documented response (`"201"`, `"2XX"`, `"default"`) may be a replay.
fn may_be_replayed(status: &str, config: &HandlerConfig) -> bool {
    let stores = |code: u16| StatusCode::from_u16(code).is_ok_and(|s| config.stores(s));
    match status.as_bytes() {
        [class @ b'1'..=b'5', b'X' | b'x', b'X' | b'x'] => {
            let first = u16::from(class - b'0') * 100;
            (first..first + 100).any(stores)
        }
        _ => status.parse::<u16>().map_or(status == "default", stores),
    }
}

fn add_problem_response(operation: &mut Operation, status: StatusCode, problems: &[&Problem]) {
    let ours = problems.iter().map(|p| format!("{} (`{}`)", p.kind().title(), p.kind().type_uri()));
    let description = format!("{}.", ours.collect::<Vec<_>>().join(". "));
    let retry_after = problems.iter().any(|p| p.retry_after_seconds().is_some());
    let our_ref = RefOr::Ref(Ref::from_schema_name(PROBLEM_SCHEMA));
    let examples = problems.iter().map(|p| {
        let slug = p.kind().type_uri().rsplit(':').next().unwrap_or_default().to_owned();
        let value: Value = serde_json::from_str(&p.to_json()).expect("a problem is JSON");
        (slug, ExampleBuilder::new().summary(p.kind().title()).value(Some(value)).build())
    });
    let response =
        operation.responses.responses.entry(status.as_str().to_owned()).or_insert_with(|| RefOr::T(Response::new("")));
    let RefOr::T(response) = response else { return };
    let content =
        response.content.entry(PROBLEM_JSON.to_owned()).or_insert_with(|| RefOr::T(Content::new(None::<Schema>)));
    let RefOr::T(content) = content else { return };
    content.schema = match content.schema.take() {
        None => Some(our_ref.clone()),
        Some(schema) if mentions(&schema, &our_ref) => Some(schema),
        Some(theirs) => Some(RefOr::T(AnyOfBuilder::new().item(theirs).item(our_ref.clone()).build().into())),
    };
    for (name, example) in examples {
        content.examples.entry(name).or_insert(RefOr::T(example));
    }
    if !response.description.contains(&description) {
        response.description = if response.description.is_empty() {
            description
        } else {
            format!("{}\n\n{description}", response.description)
        };
    }
    if retry_after {
        response.headers.entry("Retry-After".to_owned()).or_insert_with(|| RefOr::T(retry_after_header()));
    }
}

/// Whether a response says nothing but what [`add_problem_response`] adds.
fn only_idem_problems(response: &Response) -> bool {
    let ours = RefOr::Ref(Ref::from_schema_name(PROBLEM_SCHEMA));
    response.content.len() == 1
        && matches!(response.content.get(PROBLEM_JSON), Some(RefOr::T(c)) if c.schema.as_ref() == Some(&ours))
}

/// Whether `schema` is `wanted` or an `anyOf` holding it.
fn mentions(schema: &RefOr<Schema>, wanted: &RefOr<Schema>) -> bool {
    schema == wanted || matches!(schema, RefOr::T(Schema::AnyOf(any)) if any.items.contains(wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_default_may_be_replayed_when_a_status_in_them_is_stored() {
        let config = HandlerConfig::new();
        for (status, replayed) in
            [("201", true), ("409", false), ("503", false), ("2XX", true), ("5XX", false), ("default", true)]
        {
            assert_eq!(may_be_replayed(status, &config), replayed, "{status}");
        }
    }
}
