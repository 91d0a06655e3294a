//! The guide: what idem does to a request, how to configure it, and each store and integration,
//! one chapter each. Every example in it is compiled by `cargo test --doc`, and run unless it
//! needs a server (Redis, PostgreSQL, an HTTP service).
//!
//! ```rust
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Clone)]
//! # struct Db;
//! # #[derive(Deserialize)]
//! # struct NewOrder { item: String, qty: u32 }
//! # #[derive(Serialize)]
//! # struct Order { id: u64, item: String, qty: u32 }
//! # impl Db {
//! #     async fn insert(&self, order: NewOrder) -> Order { Order { id: 1, item: order.item, qty: order.qty } }
//! # }
//! # let db = Db;
//! use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::post, Json, Router};
//! use idem_runtime::idempotent;
//!
//! #[idempotent(required, ttl = "24h", scope = "pat")]
//! async fn create_order(State(db): State<Db>, Json(order): Json<NewOrder>) -> impl IntoResponse {
//!     let order = db.insert(order).await;
//!     (StatusCode::CREATED, [("location", format!("/orders/{}", order.id))], Json(order))
//! }
//!
//! let app = Router::new().route("/orders", post(create_order)).with_state(db);
//! # let _: Router = app;
//! ```
//!
//! A client sends `Idempotency-Key: <unique value>` with its POST. The first request runs the
//! handler; every retry with the same key, from the same caller and for the same request, gets
//! the stored response with `Idempotent-Replayed: true`, and the handler does not run again.
//! Depend on `idem-runtime` alone: it re-exports the attribute. With nothing else set up,
//! annotated handlers share an embedded, bounded in-memory store.
//!
//! # Chapters
//!
//! | chapter | what it covers | feature |
//! | --- | --- | --- |
//! | [`semantics`] | which requests are covered; the key, every outcome, what is stored and for how long, scope, the fingerprint, concurrency and crashes | |
//! | [`configuration`] | the attribute's arguments, defaults for a whole service, the problem types | |
//! | [`stores`] | the embedded store, swapping it, routes outside the layer, time in tests, a store of your own | |
//! | [`stores::redis`] | a fleet sharing Redis or a Redis Cluster | `redis`, `redis-cluster` |
//! | [`stores::postgres`] | a fleet sharing a PostgreSQL table | `postgres` |
//! | [`tx`] | exactly once with the database: the handler's writes and its record in one transaction | `postgres` |
//! | [`client`] | the client side: one key per logical call, reused on every retry | `client` |
//! | [`chained`] | handlers that call other services: derived keys, steps, `Tx`, and what each survives | |
//! | [`openapi`] | annotated handlers documenting themselves in a utoipa document | `utoipa` |
//! | [`observability`] | hooks that shape idem's responses and observe outcomes, tracing, metrics | `metrics` for the metrics |
//! | [`testing`] | testing your handlers, with leases and ttls on a paused clock | |
//! | [`choices`] | the choices made where the expected behaviour left room | |
//! | [`architecture`] | how idem is built: its layers, the path of a request, where a change goes | |
//!
//! A chapter that needs a cargo feature is built with it: `cargo doc --open -p idem-runtime
//! --all-features` shows them all, as docs.rs does.

pub mod semantics {
    #![doc = include_str!("semantics.md")]
}

pub mod configuration {
    #![doc = include_str!("configuration.md")]
}

pub mod stores {
    #![doc = include_str!("stores.md")]

    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub mod redis {
        #![doc = include_str!("redis.md")]
    }

    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub mod postgres {
        #![doc = include_str!("postgres.md")]
    }
}

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod tx {
    #![doc = include_str!("tx.md")]
}

#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client {
    #![doc = include_str!("client.md")]
}

#[cfg(feature = "utoipa")]
#[cfg_attr(docsrs, doc(cfg(feature = "utoipa")))]
pub mod openapi {
    #![doc = include_str!("openapi.md")]
}

pub mod chained {
    #![doc = include_str!("chained.md")]
}

pub mod observability {
    #![doc = include_str!("observability.md")]
}

pub mod testing {
    #![doc = include_str!("testing.md")]
}

pub mod choices {
    #![doc = include_str!("choices.md")]
}

pub mod architecture {
    #![doc = include_str!("architecture.md")]
}
