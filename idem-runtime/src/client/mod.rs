//! The client side (feature `client`): one idempotency key per logical call, sent unchanged on
//! every retry, and retries that fit an idem server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), reqwest_middleware::Error> {
//! use idem_runtime::client::{self, IdempotencyKeyExt as _};
//! use idem_runtime::key::IdempotencyKey;
//!
//! let http = client::wrap(reqwest::Client::new());
//! let response = http
//!     .post("http://127.0.0.1:3000/orders")
//!     .bearer_auth("alice")
//!     .json(&serde_json::json!({"item": "book", "qty": 1}))
//!     .send()
//!     .await?;
//! println!("{} replayed={}", response.status(), client::is_replayed(response.headers()));
//!
//! // A key of the caller's choosing, for this call only:
//! let key = IdempotencyKey::parse(b"order-2026-11-22-0001").expect("a valid key");
//! http.post("http://127.0.0.1:3000/orders").idempotency_key(key).send().await?;
//! # Ok(()) }
//! ```
//!
//! - [`IdempotencyKeyMiddleware`] adds a UUIDv7 key to every POST, PUT and PATCH that carries
//!   none, once per call. A key set as a header, or per call with
//!   [`IdempotencyKeyExt::idempotency_key`], wins. GET, HEAD, DELETE and OPTIONS get none.
//! - [`RetryMiddleware`] retries connection errors, timeouts, 5xx, 429 and idem's in-flight 409
//!   (a 409 with `Retry-After`), never sooner than `Retry-After` asks, within a deadline
//!   ([`DEFAULT_DEADLINE`], 40 s, longer than the server's default 30 s lease). While the
//!   deadline lasts, the caller is never handed an in-flight 409: the first attempt may still be
//!   running, and a new call with a new key would run the side effect a second time. Every other
//!   4xx is final.
//! - A key is never sent once it is older than the server keeps responses
//!   ([`ClientConfig::key_lifetime`], [`DEFAULT_KEY_LIFETIME`], a day, unless set): a call whose
//!   key (a UUIDv7 of the caller's, dated by its timestamp) is that old already fails with
//!   [`KeyExpired`] before anything is sent, and no retry starts once it is. Past that lifetime
//!   an idem server no longer knows whether the call ran, and refuses it (412 `key-expired`).
//! - [`ClientConfig`] sets both: the key header name, the key lifetime, the deadline, the retry
//!   policy.
//!
//! The key middleware must come *before* the retry middleware, so that the key is chosen
//! outside the retry loop. [`builder`], [`wrap`] and [`ClientConfig`] put them in that order;
//! with your own stack:
//!
//! ```no_run
//! use idem_runtime::client::{IdempotencyKeyMiddleware, RetryMiddleware};
//!
//! let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(IdempotencyKeyMiddleware::new())
//!     .with(RetryMiddleware::default())
//!     .build();
//! # drop(http);
//! ```
//!
//! A server that accepts the key under a name of its own (`#[idempotent(header = "X-Request-Key")]`)
//! gets it under that name, and only that name:
//!
//! ```no_run
//! use std::time::Duration;
//! use idem_runtime::client::ClientConfig;
//! use reqwest::header::HeaderName;
//!
//! let http = ClientConfig::new()
//!     .key_header(HeaderName::from_static("x-request-key"))
//!     .deadline(Duration::from_secs(90)) // the server's handlers have `lease = "60s"`
//!     .build(reqwest::Client::new());
//! # drop(http);
//! ```
//!
//! A call that ends with an in-flight 409 (its first attempt outlived the deadline) has not
//! failed: it is still running on the server. Ask again later *with the same key*; pass your own
//! key ([`IdempotencyKeyExt::idempotency_key`]) for calls you may need to resume that way.
//!
//! [`IdemRetryStrategy`] is the classification alone, as a `reqwest-retry` strategy for an
//! existing `RetryTransientMiddleware` stack; its docs say what that stack does not do.
//! Blocking callers get the same behaviour from [`blocking::Client`].

pub mod blocking;
mod key;
mod retry;

use std::time::Duration;

use http::{HeaderMap, HeaderName, Method};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::RetryPolicy;

pub use key::{IdempotencyKeyExt, IdempotencyKeyMiddleware, KeyExpired, DEFAULT_KEY_LIFETIME};
pub use retry::{classify_status, default_policy, retry_after, IdemRetryStrategy, RetryMiddleware, DEFAULT_DEADLINE};

use crate::key::IdempotencyKey;
use crate::record::IDEMPOTENT_REPLAYED;

impl IdempotencyKey {
    /// A fresh UUIDv7 key (time-ordered, so keys sort by creation).
    pub fn generate() -> Self {
        Self::parse(uuid::Uuid::now_v7().as_hyphenated().to_string().as_bytes()).expect("a UUID is a valid key")
    }
}

/// Whether a request with this method gets a key: POST, PUT and PATCH.
pub fn needs_key(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// Whether a response is a replay of an earlier execution (`Idempotent-Replayed: true`).
pub fn is_replayed(headers: &HeaderMap) -> bool {
    headers.get(IDEMPOTENT_REPLAYED).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
}

/// How a client sends keys and retries, for the async client ([`build`](Self::build)) and
/// the blocking one ([`blocking::Client::with_config`]).
///
/// The defaults: keys under `Idempotency-Key`, sent for a [`DEFAULT_KEY_LIFETIME`] of a day, a
/// [`DEFAULT_DEADLINE`] of 40 s, and the [`default_policy`] (100 ms to 5 s apart, at most 5
/// retries) for failures other than an in-flight 409. See [`RetryMiddleware`] for how the
/// deadline and the policy share the work.
///
/// ```no_run
/// use std::time::Duration;
/// use idem_runtime::client::{blocking, ClientConfig};
/// use reqwest::header::HeaderName;
///
/// let config = ClientConfig::new()
///     .key_header(HeaderName::from_static("x-request-key"))
///     .deadline(Duration::from_secs(60))
///     .max_retries(3);
/// let http = config.clone().build(reqwest::Client::new());
/// let blocking = blocking::Client::with_config(reqwest::blocking::Client::new(), config);
/// # drop((http, blocking));
/// ```
#[derive(Debug, Clone)]
pub struct ClientConfig<P = ExponentialBackoff> {
    key: IdempotencyKeyMiddleware,
    retry: RetryMiddleware<P>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self { key: IdempotencyKeyMiddleware::new(), retry: RetryMiddleware::default() }
    }
}

impl ClientConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Retries failures other than an in-flight 409 at most `retries` times (default 5).
    /// In-flight 409s are retried until the deadline whatever this count.
    #[must_use]
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.retry = self.retry.max_retries(retries);
        self
    }
}

impl<P: RetryPolicy> ClientConfig<P> {
    /// Sends keys under `header` instead of `Idempotency-Key`: the name the server accepts with
    /// `#[idempotent(header = "…")]`. See [`IdempotencyKeyMiddleware::with_header`].
    #[must_use]
    pub fn key_header(mut self, header: HeaderName) -> Self {
        self.key = self.key.header(header);
        self
    }

    /// Never sends a key older than `lifetime`, the `ttl` of the server's handlers (default
    /// [`DEFAULT_KEY_LIFETIME`], a day): a call whose key is that old already fails with
    /// [`KeyExpired`] before anything is sent, and no retry starts once it is. See
    /// [`IdempotencyKeyMiddleware::lifetime`].
    #[must_use]
    pub fn key_lifetime(mut self, lifetime: Duration) -> Self {
        self.key = self.key.lifetime(lifetime);
        self
    }

    /// Sets how long after its first attempt a call's last attempt may start (default
    /// [`DEFAULT_DEADLINE`]). Keep it longer than the server's lease.
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.retry = self.retry.deadline(deadline);
        self
    }

    /// Backs off and counts failures other than an in-flight 409 with `policy` (any
    /// `reqwest_retry::RetryPolicy`) instead of the [`default_policy`].
    pub fn policy<Q: RetryPolicy>(self, policy: Q) -> ClientConfig<Q> {
        ClientConfig { key: self.key, retry: self.retry.with_policy(policy) }
    }

    /// `inner` with the key middleware, then the retry middleware, ready for more middleware.
    pub fn builder(self, inner: reqwest::Client) -> ClientBuilder
    where
        P: Send + Sync + 'static,
    {
        ClientBuilder::new(inner).with(self.key).with(self.retry)
    }

    /// [`builder`](Self::builder), built.
    pub fn build(self, inner: reqwest::Client) -> ClientWithMiddleware
    where
        P: Send + Sync + 'static,
    {
        self.builder(inner).build()
    }
}

/// `inner` with the key middleware, then the retry middleware, with the defaults of
/// [`ClientConfig`], ready for more middleware.
pub fn builder(inner: reqwest::Client) -> ClientBuilder {
    ClientConfig::new().builder(inner)
}

/// Wraps `inner`: one key per call, retries within the [`DEFAULT_DEADLINE`]. The defaults of
/// [`ClientConfig`]; use it to change them.
pub fn wrap(inner: reqwest::Client) -> ClientWithMiddleware {
    ClientConfig::new().build(inner)
}
