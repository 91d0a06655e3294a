//! One key per logical call, chosen before the retry loop, and never sent past its lifetime.

use std::fmt;
use std::time::{Duration, SystemTime};

use http::{Extensions, HeaderMap, HeaderName, Method};
use reqwest_middleware::{Middleware, Next, RequestBuilder};

use super::needs_key;
use crate::key::{IdempotencyKey, IDEMPOTENCY_KEY, X_IDEMPOTENCY_KEY};
use crate::lifetime::compact;

/// How long a call's key is sent by default: a day, an idem server's default `ttl`.
pub const DEFAULT_KEY_LIFETIME: Duration = idem_rules::DEFAULT_TTL;

/// Gives every POST, PUT and PATCH that carries no key one: the per-call key
/// ([`IdempotencyKeyExt::idempotency_key`]) if given, else a fresh UUIDv7. Put it before any
/// retry middleware, so that every retry carries the same key.
///
/// The key goes under `Idempotency-Key`, or under the name given to
/// [`with_header`](Self::with_header). A request that already carries a key, under that name or
/// under `Idempotency-Key` or `X-Idempotency-Key`, is left as it is: a request never carries two
/// keys.
///
/// A key is never sent once it is older than its [`lifetime`](Self::lifetime) (the server's
/// `ttl`; [`DEFAULT_KEY_LIFETIME`] unless set), counted from the time a UUIDv7 key carries, or
/// for any other key from the call's first attempt: a call whose key is too old already fails
/// with [`KeyExpired`] before anything is sent, and [`RetryMiddleware`](super::RetryMiddleware)
/// starts no attempt after the key's lifetime has passed.
#[derive(Debug, Clone)]
pub struct IdempotencyKeyMiddleware {
    header: HeaderName,
    lifetime: Duration,
}

impl Default for IdempotencyKeyMiddleware {
    fn default() -> Self {
        Self { header: IDEMPOTENCY_KEY, lifetime: DEFAULT_KEY_LIFETIME }
    }
}

/// The time after which a call's key is not sent any more, for the retry middleware.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyExpires(pub(crate) SystemTime);

/// A call's key is older than the lifetime the client was told (the server's `ttl`): the server
/// no longer keeps the response of an attempt made under it, so whether such an attempt took
/// effect is unknown, and the call was not sent.
///
/// The async client returns it as a `reqwest_middleware::Error::Middleware`, the blocking one
/// likewise; `downcast_ref::<KeyExpired>()` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyExpired {
    age: Duration,
    lifetime: Duration,
}

impl KeyExpired {
    /// How long ago the key was minted (its UUIDv7 time).
    pub fn age(&self) -> Duration {
        self.age
    }

    /// The lifetime the client was told.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

impl fmt::Display for KeyExpired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "this call's idempotency key was minted {} ago, longer than the {} the server keeps responses: whether \
             an earlier attempt under it took effect is unknown, so the call was not sent; check whether the \
             operation happened before sending it again under a new key",
            compact(self.age),
            compact(self.lifetime)
        )
    }
}

impl std::error::Error for KeyExpired {}

impl IdempotencyKeyMiddleware {
    /// Sends keys under `Idempotency-Key`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends keys under `header` instead: the name a server accepts with
    /// `#[idempotent(header = "X-Request-Key")]`.
    ///
    /// ```
    /// use idem_runtime::client::IdempotencyKeyMiddleware;
    /// use reqwest::header::HeaderName;
    ///
    /// let keys = IdempotencyKeyMiddleware::with_header(HeaderName::from_static("x-request-key"));
    /// # drop(keys);
    /// ```
    pub fn with_header(header: HeaderName) -> Self {
        Self { header, ..Self::default() }
    }

    /// Never sends a key older than `lifetime`: the `ttl` of the server's handlers (default
    /// [`DEFAULT_KEY_LIFETIME`], a day). Past it the server keeps no response of the call, and
    /// an idem server refuses the request (412 `key-expired`) rather than run it again.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem_runtime::client::IdempotencyKeyMiddleware;
    ///
    /// let keys = IdempotencyKeyMiddleware::new().lifetime(Duration::from_secs(7 * 24 * 3600)); // ttl = "7d"
    /// # drop(keys);
    /// ```
    #[must_use]
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Sends keys under `header`, keeping the lifetime.
    pub(crate) fn header(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// Sets the key on `headers` unless the request carries one or needs none, and gives the
    /// time after which the key is not sent any more (`None`: no key, or never). A key older than
    /// the lifetime already is refused.
    pub(crate) fn ensure_key(
        &self,
        method: &Method,
        headers: &mut HeaderMap,
        per_call: Option<&IdempotencyKey>,
    ) -> Result<Option<KeyExpires>, KeyExpired> {
        let present = [&IDEMPOTENCY_KEY, &X_IDEMPOTENCY_KEY, &self.header].into_iter().find_map(|n| headers.get(n));
        let minted = match present {
            // A key the server will refuse as malformed carries no time either.
            Some(value) => IdempotencyKey::parse(value.as_bytes()).ok().and_then(|key| key.uuid_v7_time()),
            None if needs_key(method) => {
                let key = per_call.cloned().unwrap_or_else(IdempotencyKey::generate);
                let minted = key.uuid_v7_time();
                headers.insert(self.header.clone(), key.to_header_value());
                minted
            }
            None => return Ok(None),
        };
        let now = SystemTime::now();
        // A key without a time is as old as the call.
        let minted = minted.unwrap_or(now);
        let Some(expires) = minted.checked_add(self.lifetime) else { return Ok(None) };
        if now > expires {
            let age = now.duration_since(minted).unwrap_or_default();
            return Err(KeyExpired { age, lifetime: self.lifetime });
        }
        Ok(Some(KeyExpires(expires)))
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
        match self.ensure_key(&method, req.headers_mut(), extensions.get::<IdempotencyKey>()) {
            Ok(Some(expires)) => drop(extensions.insert(expires)),
            Ok(None) => {}
            Err(expired) => return Err(reqwest_middleware::Error::middleware(expired)),
        }
        next.run(req, extensions).await
    }
}

/// Per-call key for [`reqwest_middleware::RequestBuilder`].
pub trait IdempotencyKeyExt {
    /// Sends `key` as this call's key, on every attempt, under the header name the
    /// [`IdempotencyKeyMiddleware`] uses. A key header set on the request wins.
    fn idempotency_key(self, key: IdempotencyKey) -> Self;
}

impl IdempotencyKeyExt for RequestBuilder {
    fn idempotency_key(self, key: IdempotencyKey) -> Self {
        self.with_extension(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(
        middleware: &IdempotencyKeyMiddleware,
        method: Method,
        pairs: &[(&'static str, &'static str)],
    ) -> HeaderMap {
        let mut headers: HeaderMap =
            pairs.iter().map(|(name, value)| (name.parse().unwrap(), value.parse().unwrap())).collect();
        middleware.ensure_key(&method, &mut headers, None).unwrap();
        headers
    }

    #[test]
    fn a_key_goes_under_the_configured_name_only_when_no_accepted_name_has_one() {
        let custom = IdempotencyKeyMiddleware::with_header(HeaderName::from_static("x-request-key"));
        let headers = keyed(&custom, Method::POST, &[]);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-request-key"));
        for name in ["x-request-key", "idempotency-key", "x-idempotency-key"] {
            let headers = keyed(&custom, Method::PUT, &[(name, "mine")]);
            assert_eq!(headers.len(), 1, "{name}: {headers:?}");
            assert_eq!(headers[name], "mine");
        }
        let standard = IdempotencyKeyMiddleware::new();
        assert!(keyed(&standard, Method::PATCH, &[]).contains_key("idempotency-key"));
        assert!(keyed(&standard, Method::GET, &[]).is_empty());
        assert!(keyed(&standard, Method::DELETE, &[]).is_empty());
    }
}
