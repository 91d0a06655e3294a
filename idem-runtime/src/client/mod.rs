//! The client side (feature `client`, SPEC §9): one `Idempotency-Key` per logical call, sent
//! unchanged on every retry, and a retry policy that fits an idem server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), reqwest_middleware::Error> {
//! use idem_runtime::client::{self, IdempotencyKeyExt as _};
//! use idem_runtime::key::IdempotencyKey;
//!
//! let http = client::client(reqwest::Client::new());
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
//!   (a 409 with `Retry-After`), with jittered exponential backoff, waiting at least what
//!   `Retry-After` asks (up to a minute). Every other 4xx is final.
//! - [`IdemRetryStrategy`] is that classification as a `reqwest-retry` strategy, to use with
//!   `reqwest_retry::RetryTransientMiddleware` in an existing stack.
//!
//! The key middleware must come *before* the retry middleware, so that the key is chosen
//! outside the retry loop. [`builder`] puts them in that order; with your own stack:
//!
//! ```no_run
//! use idem_runtime::client::{IdemRetryStrategy, IdempotencyKeyMiddleware};
//! use reqwest_retry::{policies::ExponentialBackoff, RetryTransientMiddleware};
//!
//! let policy = ExponentialBackoff::builder().build_with_max_retries(4);
//! let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(IdempotencyKeyMiddleware)
//!     .with(RetryTransientMiddleware::new_with_policy_and_strategy(policy, IdemRetryStrategy))
//!     .build();
//! # drop(http);
//! ```
//!
//! Blocking callers get the same behaviour from [`blocking::Client`].

pub mod blocking;

use std::time::{Duration, SystemTime};

use http::{header, Extensions, HeaderMap, Method, StatusCode};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next, RequestBuilder};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::{Jitter, RetryDecision, RetryPolicy, Retryable, RetryableStrategy};

use crate::key::{IdempotencyKey, IDEMPOTENCY_KEY, X_IDEMPOTENCY_KEY};
use crate::record::IDEMPOTENT_REPLAYED;

/// The longest `Retry-After` honoured; a server asking for more gets this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

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

/// Sets the `Idempotency-Key` of a request that needs one and has none: the per-call key
/// (a request extension) if given, else a fresh UUIDv7. Put it before any retry middleware.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdempotencyKeyMiddleware;

/// Sets the key on `headers` unless the request has one or needs none.
pub(crate) fn ensure_key(method: &Method, headers: &mut HeaderMap, per_call: Option<&IdempotencyKey>) {
    if needs_key(method) && !headers.contains_key(IDEMPOTENCY_KEY) && !headers.contains_key(X_IDEMPOTENCY_KEY) {
        let key = per_call.cloned().unwrap_or_else(IdempotencyKey::generate);
        headers.insert(IDEMPOTENCY_KEY, key.to_header_value());
    }
}

#[async_trait::async_trait]
impl Middleware for IdempotencyKeyMiddleware {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let method = req.method().clone();
        ensure_key(&method, req.headers_mut(), extensions.get::<IdempotencyKey>());
        next.run(req, extensions).await
    }
}

/// Per-call key for [`reqwest_middleware::RequestBuilder`].
pub trait IdempotencyKeyExt {
    /// Sends `key` as this call's `Idempotency-Key`, on every attempt.
    fn idempotency_key(self, key: IdempotencyKey) -> Self;
}

impl IdempotencyKeyExt for RequestBuilder {
    fn idempotency_key(self, key: IdempotencyKey) -> Self {
        self.with_extension(key)
    }
}

/// How a response status fits an idem server: `None` for success, `Transient` for 5xx, 429 and
/// an in-flight 409 (one with `Retry-After`), `Fatal` for every other 4xx.
pub fn classify_status(status: StatusCode, headers: &HeaderMap) -> Option<Retryable> {
    let in_flight = status == StatusCode::CONFLICT && headers.contains_key(header::RETRY_AFTER);
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || in_flight {
        Some(Retryable::Transient)
    } else if status.is_client_error() {
        Some(Retryable::Fatal)
    } else {
        None
    }
}

/// The delay a response asks for in `Retry-After` (seconds or an HTTP date), capped at
/// [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value).ok()?.duration_since(SystemTime::now()).unwrap_or_default(),
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// The retry classification of an idem server, as a `reqwest-retry` strategy: connection
/// errors and timeouts (as `reqwest-retry` classifies them), 5xx, 429 and an in-flight 409
/// are transient; every other 4xx is fatal.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdemRetryStrategy;

impl RetryableStrategy for IdemRetryStrategy {
    fn handle(&self, res: &Result<reqwest::Response, reqwest_middleware::Error>) -> Option<Retryable> {
        match res {
            Ok(response) => classify_status(response.status(), response.headers()),
            Err(error) => reqwest_retry::default_on_request_failure(error),
        }
    }
}

/// The default policy: up to 5 retries, from 100 ms to 5 s apart, with bounded jitter.
pub fn default_policy() -> ExponentialBackoff {
    ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(100), Duration::from_secs(5))
        .jitter(Jitter::Bounded)
        .build_with_max_retries(5)
}

/// The wait before retry `n` (counting from 0): the policy's backoff, at least `Retry-After`.
/// `None` when the policy gives up.
pub(crate) fn next_delay(
    policy: &impl RetryPolicy,
    started: SystemTime,
    n: u32,
    headers: Option<&HeaderMap>,
) -> Option<Duration> {
    match policy.should_retry(started, n) {
        RetryDecision::DoNotRetry => None,
        RetryDecision::Retry { execute_after } => {
            let backoff = execute_after.duration_since(SystemTime::now()).unwrap_or_default();
            Some(backoff.max(headers.and_then(retry_after).unwrap_or_default()))
        }
    }
}

/// Retries what [`IdemRetryStrategy`] calls transient, with `policy`'s backoff and honouring
/// `Retry-After`. A request whose body cannot be cloned (a stream) is sent once.
#[derive(Debug, Clone)]
pub struct RetryMiddleware<P = ExponentialBackoff> {
    policy: P,
}

impl Default for RetryMiddleware {
    fn default() -> Self {
        Self { policy: default_policy() }
    }
}

impl<P: RetryPolicy> RetryMiddleware<P> {
    /// Retries with `policy`.
    pub fn new(policy: P) -> Self {
        Self { policy }
    }
}

#[async_trait::async_trait]
impl<P: RetryPolicy + Send + Sync + 'static> Middleware for RetryMiddleware<P> {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let started = SystemTime::now();
        let mut retries = 0;
        loop {
            let Some(attempt) = req.try_clone() else {
                return next.run(req, extensions).await;
            };
            let result = next.clone().run(attempt, extensions).await;
            if !matches!(IdemRetryStrategy.handle(&result), Some(Retryable::Transient)) {
                return result;
            }
            let Some(delay) = next_delay(&self.policy, started, retries, result.as_ref().ok().map(|r| r.headers()))
            else {
                return result;
            };
            tracing::debug!(target: "idem::client", retry = retries + 1, ?delay, "retrying a transient failure");
            tokio::time::sleep(delay).await;
            retries += 1;
        }
    }
}

/// `inner` with the key middleware, then the retry middleware with the [default policy].
///
/// [default policy]: default_policy
pub fn builder(inner: reqwest::Client) -> ClientBuilder {
    ClientBuilder::new(inner).with(IdempotencyKeyMiddleware).with(RetryMiddleware::default())
}

/// [`builder`], built.
pub fn client(inner: reqwest::Client) -> ClientWithMiddleware {
    builder(inner).build()
}
