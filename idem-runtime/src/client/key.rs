//! One key per logical call, chosen before the retry loop.

use http::{Extensions, HeaderMap, HeaderName, Method};
use reqwest_middleware::{Middleware, Next, RequestBuilder};

use super::needs_key;
use crate::key::{IdempotencyKey, IDEMPOTENCY_KEY, X_IDEMPOTENCY_KEY};

/// Gives every POST, PUT and PATCH that carries no key one: the per-call key
/// ([`IdempotencyKeyExt::idempotency_key`]) if given, else a fresh UUIDv7. Put it before any
/// retry middleware, so that every retry carries the same key.
///
/// The key goes under `Idempotency-Key`, or under the name given to
/// [`with_header`](Self::with_header). A request that already carries a key, under that name or
/// under `Idempotency-Key` or `X-Idempotency-Key`, is left as it is: a request never carries two
/// keys.
#[derive(Debug, Clone)]
pub struct IdempotencyKeyMiddleware {
    header: HeaderName,
}

impl Default for IdempotencyKeyMiddleware {
    fn default() -> Self {
        Self { header: IDEMPOTENCY_KEY }
    }
}

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
        Self { header }
    }

    /// Sets the key on `headers` unless the request carries one or needs none.
    pub(crate) fn ensure_key(&self, method: &Method, headers: &mut HeaderMap, per_call: Option<&IdempotencyKey>) {
        let has_key = [&IDEMPOTENCY_KEY, &X_IDEMPOTENCY_KEY, &self.header].into_iter().any(|n| headers.contains_key(n));
        if needs_key(method) && !has_key {
            let key = per_call.cloned().unwrap_or_else(IdempotencyKey::generate);
            headers.insert(self.header.clone(), key.to_header_value());
        }
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
        self.ensure_key(&method, req.headers_mut(), extensions.get::<IdempotencyKey>());
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
        middleware.ensure_key(&method, &mut headers, None);
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
