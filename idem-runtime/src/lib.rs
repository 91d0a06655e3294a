//! Stripe-grade idempotency for axum handlers, with one attribute.
//!
//! ```
//! use axum::{http::StatusCode, response::IntoResponse, routing::post, Json, Router};
//! use idem_runtime::idempotent;
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct NewOrder { item: String, qty: u32 }
//!
//! #[idempotent(required, ttl = "24h", scope = "pat")]
//! async fn create_order(Json(order): Json<NewOrder>) -> impl IntoResponse {
//!     (StatusCode::CREATED, format!("{} x {}", order.qty, order.item))
//! }
//!
//! let app: Router = Router::new().route("/orders", post(create_order));
//! ```
//!
//! A client sends `Idempotency-Key: <unique value>` with a POST. The first request runs the
//! handler; every retry with the same key (same caller, same request) receives the stored
//! response with `Idempotent-Replayed: true`, and the handler does not run again. A retry
//! while the first is still running gets `409` (or waits, with `on_conflict = "wait"`); the
//! same key with a different request gets `422`. Every response idem makes itself is an
//! RFC 9457 problem ([`problem`]).
//!
//! Records live in an embedded, bounded in-memory store by default; [`Idempotency`] swaps in
//! another [`store::Store`] for a whole router.

#[cfg(feature = "client")]
pub mod client;
pub mod fingerprint;
pub mod key;
pub mod problem;
pub mod record;
pub mod scope;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

// A request's way through idem, in order: the layer sets the store, the extractors read the key
// and fingerprint, the engine claims and runs, capture streams and stores the response, the
// lease keeper renews claims meanwhile, and every request ends in one outcome.
mod canonical;
mod capture;
mod config;
mod engine;
mod extract;
mod layer;
mod lease;
mod outcome;

/// The README's code blocks, compiled as doctests.
#[cfg(all(doctest, feature = "client"))]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

pub use config::Defaults;
pub use layer::{Idempotency, WithIdempotency};

/// Makes an axum handler idempotent. See the crate README for the full semantics.
///
/// ```
/// use axum::{routing::post, Router};
/// use idem_runtime::idempotent;
///
/// #[idempotent(required, ttl = "24h", scope = "pat")]
/// async fn create() -> &'static str { "created" }
///
/// let app: Router = Router::new().route("/things", post(create));
/// ```
#[cfg(feature = "macros")]
pub use idem_macros::idempotent;

#[cfg(feature = "macros")]
pub use idem_macros::defaults;

// The expansion's way in: `__private_<version>`, named by `build.rs`.
mod private;
include!(concat!(env!("OUT_DIR"), "/private_module.rs"));
