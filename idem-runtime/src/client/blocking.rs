//! The same guarantees for blocking callers, over `reqwest::blocking`.
//!
//! ```no_run
//! use idem_runtime::client::blocking::Client;
//!
//! let client = Client::new(reqwest::blocking::Client::new());
//! let response = client
//!     .post("http://127.0.0.1:3000/orders")
//!     .bearer_auth("alice")
//!     .json(&serde_json::json!({"item": "book", "qty": 1}))
//!     .send()?;
//! println!("{}", response.status());
//! # Ok::<(), reqwest_middleware::Error>(())
//! ```
//!
//! [`Client::with_config`] takes the same [`ClientConfig`] as the async client: the key header
//! name, the deadline, the retry policy.

use http::Method;
use reqwest::blocking::{Body, Response};
use reqwest::IntoUrl;
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::{RetryPolicy, Retryable};
use serde::Serialize;

use super::key::KeyExpires;
use super::{classify_status, ClientConfig};
use crate::key::IdempotencyKey;

/// A blocking client that sends one key per call and retries like
/// [`RetryMiddleware`](super::RetryMiddleware): in-flight 409s until the deadline, other
/// transient failures as the policy allows, waits honouring `Retry-After`.
#[derive(Debug, Clone)]
pub struct Client<P = ExponentialBackoff> {
    inner: reqwest::blocking::Client,
    config: ClientConfig<P>,
}

impl Client {
    /// Wraps `inner` with the defaults of [`ClientConfig`].
    pub fn new(inner: reqwest::blocking::Client) -> Self {
        Self::with_config(inner, ClientConfig::new())
    }
}

impl<P: RetryPolicy> Client<P> {
    /// Wraps `inner`, sending keys and retrying as `config` says.
    pub fn with_config(inner: reqwest::blocking::Client, config: ClientConfig<P>) -> Self {
        Self { inner, config }
    }

    /// A request of any method.
    pub fn request(&self, method: Method, url: impl IntoUrl) -> RequestBuilder<'_, P> {
        RequestBuilder { client: self, inner: self.inner.request(method, url), key: None }
    }

    /// A POST.
    pub fn post(&self, url: impl IntoUrl) -> RequestBuilder<'_, P> {
        self.request(Method::POST, url)
    }

    /// A PUT.
    pub fn put(&self, url: impl IntoUrl) -> RequestBuilder<'_, P> {
        self.request(Method::PUT, url)
    }

    /// A PATCH.
    pub fn patch(&self, url: impl IntoUrl) -> RequestBuilder<'_, P> {
        self.request(Method::PATCH, url)
    }

    /// A GET (never gets a key).
    pub fn get(&self, url: impl IntoUrl) -> RequestBuilder<'_, P> {
        self.request(Method::GET, url)
    }
}

/// A request being built; [`send`](RequestBuilder::send) runs the call with its retries.
#[derive(Debug)]
pub struct RequestBuilder<'a, P> {
    client: &'a Client<P>,
    inner: reqwest::blocking::RequestBuilder,
    key: Option<IdempotencyKey>,
}

impl<P: RetryPolicy> RequestBuilder<'_, P> {
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.inner = self.inner.header(name, value);
        self
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer_auth(mut self, token: impl std::fmt::Display) -> Self {
        self.inner = self.inner.bearer_auth(token);
        self
    }

    /// A JSON body.
    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Self {
        self.inner = self.inner.json(body);
        self
    }

    /// A raw body.
    pub fn body(mut self, body: impl Into<Body>) -> Self {
        self.inner = self.inner.body(body);
        self
    }

    /// Sends `key` as this call's key, on every attempt, under the configured header name.
    /// A key header set on the request wins.
    pub fn idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Sends the request, retrying transient failures with the same key.
    ///
    /// # Errors
    ///
    /// `reqwest_middleware::Error::Reqwest` for what `reqwest` fails with, and
    /// `reqwest_middleware::Error::Middleware` holding [`KeyExpired`](super::KeyExpired) when
    /// the call's key is older than its lifetime already (nothing was sent): the errors of the
    /// async client.
    pub fn send(self) -> Result<Response, reqwest_middleware::Error> {
        let Client { inner: client, config } = self.client;
        let mut request = self.inner.build()?;
        let method = request.method().clone();
        let expires = config
            .key
            .ensure_key(&method, request.headers_mut(), self.key.as_ref())
            .map_err(reqwest_middleware::Error::middleware)?;
        let mut budget = config.retry.budget();
        if let Some(KeyExpires(at)) = expires {
            budget.end_by(at);
        }
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let Some(copy) = request.try_clone() else {
                return Ok(client.execute(request)?);
            };
            let (transient, result) = match client.execute(copy) {
                Ok(response) => {
                    let class = classify_status(response.status(), response.headers());
                    (matches!(class, Some(Retryable::Transient)), Ok(response))
                }
                Err(error) => {
                    let (transient, error) = classify_error(error);
                    (transient, Err(error))
                }
            };
            if !transient {
                return Ok(result?);
            }
            let Some(wait) = budget.next_wait(result.as_ref().ok().map(|r| (r.status(), r.headers()))) else {
                return Ok(result?);
            };
            tracing::debug!(target: "idem::client", attempt, ?wait, "retrying a transient failure");
            drop(result);
            std::thread::sleep(wait);
        }
    }
}

/// Whether `error` is transient, as `reqwest-retry` classifies it (connection errors,
/// timeouts, a connection closed before the response).
fn classify_error(error: reqwest::Error) -> (bool, reqwest::Error) {
    let wrapped = reqwest_middleware::Error::Reqwest(error);
    let transient = matches!(reqwest_retry::default_on_request_failure(&wrapped), Some(Retryable::Transient));
    match wrapped {
        reqwest_middleware::Error::Reqwest(error) => (transient, error),
        reqwest_middleware::Error::Middleware(_) => unreachable!("wrapped as Reqwest above"),
    }
}
