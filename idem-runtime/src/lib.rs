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
//! response with `Idempotent-Replayed: true`, and the handler does not run again. The
//! attribute's arguments are checked when the handler compiles; [`idempotent`] lists each of
//! them with an example.
//!
//! # What is covered
//!
//! Only handlers marked `#[idempotent]`, and of their requests only those with an unsafe
//! method (GET, HEAD, OPTIONS and TRACE pass straight through) that carry a key, or that lack
//! one on a `required` handler. The key is read from `Idempotency-Key` or `X-Idempotency-Key`
//! (plus one name of the handler's choice): 1 to 255 visible ASCII characters, bare or as a
//! quoted string; a UUID is a good key.
//!
//! A record is addressed by the key within a *scope*: by default the caller's `Authorization`
//! credential when there is one, so two accounts using one key never see each other's
//! responses (`scope = …` chooses another). Each request also has a *fingerprint*: a SHA-256
//! over the method, the route, the target as the client sent it and what the handler's
//! parameters read (JSON bodies in a canonical form, so key order and whitespace do not
//! matter). The same key with another fingerprint is another request, and refused. At rest a
//! store holds digests only, never a raw key or credential.
//!
//! # Outcomes
//!
//! | the request | the response |
//! | --- | --- |
//! | a new key | the handler runs; its response is returned as is, and stored |
//! | a retry of a completed request | the stored status, headers and body, with `Idempotent-Replayed: true` |
//! | a retry while the first still runs | `409` with `Retry-After` (or, with `on_conflict = "wait"`, the replay once it completes) |
//! | the key of another request (another body, route or target) | `422` |
//! | no key on a `required` handler, or a malformed key | `400` |
//! | a retry whose call began longer ago than the `ttl` (by its UUIDv7 key or `Repeatability-First-Sent`), its record gone | `412`: whether it ran is unknown, and it does not run again |
//! | a scope that cannot be resolved (`scope = "pat"` without `Authorization`) | `401` |
//! | the store is unreachable | `503` with `Retry-After`: fail closed ([`Idempotency::fail_open`] opts out) |
//! | the handler panics | `500`; the key is released and a retry runs the handler again |
//!
//! Responses with a 5xx status, 408, 409, 425 or 429 are not stored: the key is released so
//! that a retry runs the handler again (`keep_status` / `release_status` adjust this per
//! handler). A record is kept for the handler's `ttl` (24 h by default). A client that
//! disconnects does not cancel the handler; its retry gets the replay. A running handler holds
//! its key by a lease that is renewed while it runs, and that a crashed process's claim loses
//! after `lease` (30 s by default). Every response idem makes itself is an RFC 9457
//! `application/problem+json` with a stable `type` URI ([`problem::ProblemKind`]), which a
//! layer's [`hooks`] can reshape into the service's own error format; one `tracing` event and
//! span (target `idem`) report each covered request's outcome, and so do metrics with the
//! `metrics` feature.
//!
//! # Choosing a store
//!
//! With nothing set up, annotated handlers share an embedded, bounded in-memory store: right
//! for one instance, and for tests. One layer on the `Router`, [`Idempotency`], sets the store
//! for every annotated route added before it:
//!
//! | store | for |
//! | --- | --- |
//! | [`store::MemoryStore`] | one instance; the embedded default, with bounds of your choice |
//! | [`store::RedisStore`] (feature `redis`) | a fleet sharing one set of keys |
//! | [`store::PgStore`] (feature `postgres`) | a fleet, with records next to the data the handlers write; with [`postgres::Tx`], the handler's writes and its record commit in one transaction, so a crash never runs the side effect twice |
//! | [`store::LocalTier`] | in front of a shared store: replays on a warm instance without a round trip |
//! | your own [`store::Store`] | four atomic operations; the `testkit` feature checks it against the contract |
//!
//! ```
//! use axum::{routing::post, Router};
//! use idem_runtime::{idempotent, store::MemoryStore, Idempotency};
//!
//! #[idempotent]
//! async fn create() -> &'static str { "created" }
//!
//! let store = MemoryStore::builder().max_entries(200_000).build(); // or RedisStore, PgStore
//! let app: Router = Router::new().route("/things", post(create)).layer(Idempotency::new(store));
//! ```
//!
//! A route added after the layer, or merged in from a router without it, is behind no layer:
//! its covered requests use the embedded store, with a `warn` event naming the route. A handler
//! with `store = "layer"` refuses them instead (a 500 problem and an `error` event naming the
//! route), so that no request of a fleet is served from one instance's memory.
//!
//! # Defaults for a whole service
//!
//! [`defaults!`] states a service's arguments once, in a [`Defaults`] `const`; each handler
//! names it and gives only what differs:
//!
//! ```
//! use idem_runtime::{defaults, idempotent, Defaults};
//!
//! pub const IDEM: Defaults = defaults!(required, ttl = "24h", scope = "pat", store = "layer");
//!
//! #[idempotent(defaults = IDEM)]
//! async fn create_order() -> &'static str { "created" }
//!
//! #[idempotent(defaults = IDEM, ttl = "7d")]
//! async fn create_transfer() -> &'static str { "sent" }
//! ```
//!
//! # Features
//!
//! | feature | gives |
//! | --- | --- |
//! | `macros` (default) | the [`idempotent`] attribute and [`defaults!`] |
//! | `redis` | [`store::RedisStore`] |
//! | `redis-cluster` | [`store::RedisStore`] on a Redis Cluster |
//! | `postgres` | [`store::PgStore`], and [`postgres::Tx`]: the handler's writes and its record in one transaction |
//! | `utoipa` | [`openapi`]: annotated handlers describe their key header, replay header and problems in a utoipa document |
//! | `metrics` | counters and histograms per route and outcome, store latency and claims in flight, through the `metrics` facade |
//! | `client` | [`client`]: reqwest middleware that sends one key per logical call and retries safely |
//! | `testkit` | [`testkit`]: the store contract suite, for store implementers |
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
pub mod downstream;
pub mod fingerprint;
pub mod guide;
pub mod hooks;
pub mod key;
#[cfg(feature = "utoipa")]
#[cfg_attr(docsrs, doc(cfg(feature = "utoipa")))]
pub mod openapi;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
pub mod problem;
pub mod record;
pub mod scope;
pub mod steps;
pub mod store;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

// A request's way through idem, in order: the layer sets the store, the extractors read the key
// and fingerprint, the engine claims and runs, capture streams and stores the response, the
// lease keeper renews claims meanwhile, and every request ends in one outcome.
mod call;
mod canonical;
mod capture;
mod completion;
mod config;
mod engine;
mod extract;
mod layer;
mod lease;
mod lifetime;
mod mode;
mod observe;
mod outcome;
mod owner;
mod wake;

/// The crate README's code blocks (the page crates.io shows), compiled as doctests.
#[cfg(all(doctest, feature = "macros"))]
#[doc = include_str!("../README.md")]
struct CrateReadmeDoctests;

pub use config::Defaults;
pub use layer::{Idempotency, WithIdempotency};

#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
pub use idem_macros::idempotent;

#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
pub use idem_macros::defaults;

// The expansion's way in: `__private_<version>`, named by `build.rs`.
mod private;
include!(concat!(env!("OUT_DIR"), "/private_module.rs"));
