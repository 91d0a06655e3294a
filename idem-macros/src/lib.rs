//! The `#[idempotent]` attribute for axum handlers.
//!
//! Depend on `idem-runtime`, which re-exports the attribute; this crate holds only the
//! macro.

use proc_macro::TokenStream;
use quote::ToTokens as _;

mod attr;
mod expand;
mod fallback;
mod steps;
mod validate;

/// Makes an axum handler idempotent: the first request with an `Idempotency-Key` runs it, every
/// retry with the same key gets the stored response.
///
/// ```
/// use axum::{http::StatusCode, routing::post, Json, Router};
/// use idem_runtime::idempotent;
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct NewOrder { item: String, qty: u32 }
///
/// #[idempotent(required, ttl = "24h", scope = "pat")]
/// async fn create_order(Json(order): Json<NewOrder>) -> (StatusCode, String) {
///     (StatusCode::CREATED, format!("{} x {}", order.qty, order.item))
/// }
///
/// let app: Router = Router::new().route("/orders", post(create_order));
/// ```
///
/// The function stays a handler, routed as before. It gains a hidden first parameter (the key
/// and scope are read before any other extractor runs) and returns `axum::response::Response`;
/// the function as written, with its parameters, patterns, generics and return type, becomes an
/// inner function of the same name that the routable one calls. Handlers must be free
/// `async fn`s with at most 15 parameters, and their future must be `Send` (no
/// `std::sync::MutexGuard` held across an `.await`: the error says so at the handler's name).
/// Safe methods (GET, HEAD, OPTIONS, TRACE) pass straight through.
///
/// ```compile_fail,E0277
/// # use idem_runtime::idempotent;
/// static ORDERS: std::sync::Mutex<u32> = std::sync::Mutex::new(0);
///
/// #[idempotent] // error at `create`: its future must be `Send`
/// async fn create() -> String {
///     let orders = ORDERS.lock().unwrap();
///     std::future::ready(()).await; // `orders` is held across this `.await`
///     orders.to_string()
/// }
/// ```
///
/// # Other attributes
///
/// An attribute written *below* `#[idempotent]` goes on the function as written, whose
/// parameters it sees: `#[tracing::instrument(skip(db))]` skips the `db` you bound, and its span
/// keeps the handler's name. Only these stay on the routable function: doc comments, `cfg`,
/// lint levels (`allow`, `warn`, `deny`, `forbid`, `expect`; the inner function inherits them),
/// `deprecated` and `must_use`. A `cfg_attr` is split by the same rule. An attribute macro
/// written *above* `#[idempotent]` runs first, on the function exactly as written.
///
/// ```
/// # use idem_runtime::idempotent;
/// use axum::extract::State;
///
/// #[derive(Clone)]
/// struct Db;
///
/// /// Stays on the routable function.
/// #[idempotent]
/// #[tracing::instrument(skip(db))]
/// async fn create(State(db): State<Db>, body: String) -> String {
///     body
/// }
/// ```
///
/// # Arguments
///
/// Every argument is optional.
///
/// ## `required` / `optional`
///
/// Whether a request without a key is rejected with a 400 problem (`required`) or runs
/// normally (`optional`, the default).
///
/// ```
/// # use idem_runtime::idempotent;
/// #[idempotent(required)]
/// async fn pay() -> &'static str { "paid" }
/// ```
///
/// ## `ttl = "24h"`
///
/// How long a completed response is replayed; humantime syntax (`"90s"`, `"15m"`, `"7d"`),
/// parsed at compile time. Default 24 h.
///
/// ```
/// # use idem_runtime::idempotent;
/// #[idempotent(ttl = "7d")]
/// async fn transfer() -> &'static str { "sent" }
/// ```
///
/// ```compile_fail
/// # use idem_runtime::idempotent;
/// #[idempotent(ttl = "0s")] // zero is an error, and so is anything humantime cannot parse
/// async fn transfer() -> &'static str { "sent" }
/// ```
///
/// ## `scope = "auto" | "pat" | "global" | header("X-Tenant") | with(path)`
///
/// Whose namespace a key lives in. `pat`: one per `Authorization` credential (401 without it).
/// `global`: one for everyone. `header("X")`: one per value of header X (401 without it).
/// `with(f)`: `f: fn(&http::request::Parts) -> Result<impl AsRef<[u8]>, impl IntoResponse>`
/// names it, or rejects the request. `auto` (default): `pat` when `Authorization` is present,
/// else `global`. Scopes are stored only as SHA-256 digests.
///
/// ```
/// # use idem_runtime::idempotent;
/// use axum::http::{request::Parts, StatusCode};
///
/// fn tenant(parts: &Parts) -> Result<String, StatusCode> {
///     parts.uri.host().map(str::to_owned).ok_or(StatusCode::BAD_REQUEST)
/// }
///
/// #[idempotent(scope = with(tenant))]
/// async fn create() -> &'static str { "created" }
///
/// #[idempotent(scope = header("X-Tenant"))]
/// async fn create_too() -> &'static str { "created" }
/// ```
///
/// ## `fingerprint(a, b)` / `skip(c)`
///
/// Which parameters make up the request fingerprint, named by their bindings (`Json(order)`
/// binds `order`). By default all of them; `State` and `Extension` contribute nothing. A
/// retry whose fingerprint differs gets 422. A parameter whose type cannot be fingerprinted
/// (see `idem_runtime::fingerprint::FingerprintSource`) must be skipped.
///
/// ```
/// # use idem_runtime::idempotent;
/// use axum::{extract::Path, Json};
///
/// #[idempotent(fingerprint(body))]
/// async fn update(Path(id): Path<u64>, Json(body): Json<serde_json::Value>) -> String {
///     format!("{id}: {body}")
/// }
/// ```
///
/// ```compile_fail
/// # use idem_runtime::idempotent;
/// # use axum::Json;
/// #[idempotent(skip(nope))] // `nope` is not a parameter
/// async fn update(Json(body): Json<serde_json::Value>) -> String { body.to_string() }
/// ```
///
/// ## `lease = "30s"`
///
/// How long an in-flight claim holds before another request may take over (a crashed
/// process's claim expires after it). A running handler renews its lease. Default 30 s, or half
/// the `ttl` when that is shorter; must be shorter than `ttl`.
///
/// ```
/// # use idem_runtime::idempotent;
/// #[idempotent(lease = "2m")]
/// async fn slow_report() -> &'static str { "done" }
/// ```
///
/// ## `on_conflict = "reject" | "wait"`
///
/// A duplicate arriving while the first request runs: 409 with `Retry-After` (`reject`,
/// default), or wait up to the lease for the first to finish and replay its response.
///
/// ```
/// # use idem_runtime::idempotent;
/// #[idempotent(on_conflict = "wait")]
/// async fn create() -> &'static str { "created" }
/// ```
///
/// ## `on_expired_key = "refuse" | "run"`
///
/// A request whose key is a UUIDv7 minted, or whose `Repeatability-First-Sent` is, longer ago
/// than the `ttl` (plus 5 minutes for clock skew) and whose response is no longer kept: refused
/// with a 412 problem (`urn:idem:problem:key-expired`; `refuse`, default), since whether it ran is
/// unknown, or run as a new request (`run`). Its stored response is replayed either way.
///
/// ```
/// # use idem_runtime::idempotent;
/// #[idempotent(on_expired_key = "run")] // late retries of this one are safe to run again
/// async fn touch() -> &'static str { "touched" }
/// ```
///
/// ## `header = "Request-Id"`
///
/// One more header name accepted for the key, besides `Idempotency-Key` and
/// `X-Idempotency-Key`.
///
/// ```
/// # use idem_runtime::idempotent;
/// #[idempotent(header = "Request-Id")]
/// async fn create() -> &'static str { "created" }
/// ```
///
/// ## `keep_status(...)` / `release_status(...)`
///
/// Which responses are stored, adjusted for this handler. By default a response is stored
/// and replayed unless its status is 408, 409, 425, 429 or 5xx; those release the key, so a
/// retry runs the handler again. `keep_status` lists statuses to store anyway (say, a 409 that
/// is your API's final answer), `release_status` statuses to release anyway (say, a 404 that
/// may turn into a 201 once the resource exists). Each takes codes from 200 to 599 and
/// inclusive ranges. Every entry must change something (`keep_status(201)` is an error: 201
/// is stored anyway), and a status may be listed only once across both lists.
///
/// ```
/// # use idem_runtime::idempotent;
/// use axum::http::StatusCode;
///
/// #[idempotent(keep_status(409), release_status(404, 410..=418))]
/// async fn book_seat() -> StatusCode { StatusCode::CONFLICT }
/// ```
///
/// ```compile_fail
/// # use idem_runtime::idempotent;
/// #[idempotent(keep_status(409), release_status(400..=410))] // 409 is in both
/// async fn book_seat() -> &'static str { "booked" }
/// ```
///
/// ## `replay_headers(...)`
///
/// The only response headers a replay repeats, an allow-list. By default a replay repeats every
/// header but the hop-by-hop ones, `Date` and `Set-Cookie`. With the list, it repeats just the
/// headers named (case-insensitive; `Set-Cookie` and `Date` may be named) plus `Content-Type`
/// and `Content-Encoding`, which describe the stored body. Hop-by-hop headers and
/// `Content-Length` (recomputed from the body) cannot be listed. Trailers sent after the body
/// are not narrowed by the list: a replay repeats them by the default rule.
///
/// ```
/// # use idem_runtime::idempotent;
/// #[idempotent(replay_headers("location", "set-cookie"))]
/// async fn sign_up() -> &'static str { "welcome" }
/// ```
///
/// ```compile_fail
/// # use idem_runtime::idempotent;
/// #[idempotent(replay_headers("transfer-encoding"))] // hop-by-hop
/// async fn sign_up() -> &'static str { "welcome" }
/// ```
///
/// ## `defaults = path`
///
/// Starts from a service's defaults, a `const` made with [`defaults!`]; the other arguments
/// given here replace the same arguments of the defaults (`keep_status` and `release_status`
/// are one setting: either replaces both lists). A `ttl` given here must outlast the `lease`
/// taken from the defaults, and a `lease` given here must be shorter than their `ttl`: the
/// compiler checks both, with the error at the argument.
///
/// ```
/// use idem_runtime::{defaults, idempotent, Defaults};
///
/// const IDEM: Defaults = defaults!(required, ttl = "7d", scope = "pat");
///
/// #[idempotent(defaults = IDEM)]
/// async fn create_order() -> &'static str { "created" }
///
/// #[idempotent(defaults = IDEM, optional)] // and the ttl and scope of `IDEM`
/// async fn add_note() -> &'static str { "noted" }
/// ```
///
/// ```compile_fail,E0308
/// # use idem_runtime::idempotent;
/// const IDEM: u32 = 7;
///
/// #[idempotent(defaults = IDEM)] // error at `IDEM`: expected `Defaults`
/// async fn create_order() -> &'static str { "created" }
/// ```
///
/// ## `store = "layer" | "layer-or-embedded"`
///
/// Where the handler's store comes from. `layer-or-embedded` (default): the `Idempotency`
/// layer the route is behind, else the process's embedded store, so that zero configuration
/// works. `layer`: only the layer's; a request with a key that reaches the handler without one
/// (a route added after `.layer(...)`, a router merged in without it) is refused with a 500
/// problem (`urn:idem:problem:store-not-configured`) and an `error` event naming the route,
/// and the handler does not run. State it once in the service's [`defaults!`].
///
/// ```
/// use axum::{routing::post, Router};
/// use idem_runtime::{idempotent, store::MemoryStore, Idempotency};
///
/// #[idempotent(store = "layer")]
/// async fn pay() -> &'static str { "paid" }
///
/// let app: Router = Router::new()
///     .route("/payments", post(pay))
///     .layer(Idempotency::new(MemoryStore::new()))
///     .route("/late", post(pay)); // refused: not behind the layer
/// ```
///
/// ## `crate = "path"`
///
/// Where `idem_runtime` is, when the dependency is renamed.
///
/// ```
/// # extern crate idem_runtime as my_idem;
/// # use my_idem::idempotent;
/// #[idempotent(crate = "my_idem")]
/// async fn create() -> &'static str { "created" }
/// ```
///
/// ## `state = Type`
///
/// The router's state type, used only for the compile-time check that every parameter is an
/// extractor. It is taken from a `State<T>` parameter when there is one, else `()`; name it
/// when a custom extractor needs the state but the handler takes no `State`.
///
/// ```
/// # use idem_runtime::idempotent;
/// #[derive(Clone)]
/// struct AppState;
///
/// #[idempotent(state = AppState)]
/// async fn create() -> &'static str { "created" }
/// ```
#[proc_macro_attribute]
pub fn idempotent(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = attr::Errors::default();
    let args = attr::Args::parse(args.into(), &mut errors);
    validate::arguments(&args, &mut errors);
    let func = match syn::parse::<syn::ItemFn>(item.clone()) {
        Ok(func) => func,
        Err(_) => return fallback::not_a_parsed_function(item.into(), errors).into(),
    };
    let handler = validate::handler(&args, &func, &mut errors);
    steps::check_names(&func, &handler.params, &mut errors);
    match errors.into_result() {
        Ok(()) => expand::expand(&args, &handler).into(),
        Err(error) => {
            // Keep the function as written so the rest of the crate (and the IDE) still sees it.
            let mut out = func.into_token_stream();
            out.extend(error.to_compile_error());
            out.into()
        }
    }
}

/// A service's `#[idempotent]` arguments, stated once: an `idem_runtime::Defaults` value for a
/// `const` that handlers name with `#[idempotent(defaults = path)]`.
///
/// ```
/// use axum::{routing::post, Router};
/// use idem_runtime::{defaults, idempotent, Defaults};
///
/// /// The idempotency of every write this service offers.
/// pub const IDEM: Defaults = defaults!(required, ttl = "24h", scope = "pat", store = "layer");
///
/// #[idempotent(defaults = IDEM)]
/// async fn create_order() -> &'static str { "created" }
///
/// #[idempotent(defaults = IDEM, ttl = "7d")] // only what differs
/// async fn transfer() -> &'static str { "sent" }
/// ```
///
/// It takes the attribute's arguments that describe a service rather than one handler —
/// `required`/`optional`, `ttl`, `lease`, `scope` (`with(f)` included), `on_conflict`,
/// `on_expired_key`, `header`, `keep_status`/`release_status`, `replay_headers`, `store`,
/// `crate` — with the same syntax and the same compile-time checks, and `defaults = path` to
/// start from other defaults. `fingerprint(...)`, `skip(...)` and `state` name one handler's
/// parameters or state, and are errors here:
///
/// ```compile_fail
/// # use idem_runtime::{defaults, Defaults};
/// const IDEM: Defaults = defaults!(required, skip(body)); // error at `skip`
/// ```
#[proc_macro]
pub fn defaults(args: TokenStream) -> TokenStream {
    let mut errors = attr::Errors::default();
    let args = attr::Args::parse(args.into(), &mut errors);
    validate::service_wide(&args, &mut errors);
    validate::arguments(&args, &mut errors);
    match errors.into_result() {
        Ok(()) => expand::defaults(&args).into(),
        Err(error) => {
            // A value still, so that the `const` it initializes raises no error of its own.
            let errors = error.to_compile_error();
            let fallback = expand::defaults_fallback(&args);
            quote::quote!({ #errors #fallback }).into()
        }
    }
}
