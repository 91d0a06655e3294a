//! What is retried, how long to wait, and when to stop: one budget per logical call.

use std::time::{Duration, Instant, SystemTime};

use http::{header, Extensions, HeaderMap, StatusCode};
use reqwest_middleware::{Middleware, Next};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::{Jitter, RetryDecision, RetryPolicy, Retryable, RetryableStrategy};

use super::key::KeyExpires;

/// How long a call keeps retrying by default: 40 s from its first attempt.
///
/// An idem server's default lease is 30 s: a first attempt whose process died holds its key for
/// at most that long before a retry may take over and run the handler, and a first attempt that
/// is alive answers within the time its handler takes. The 10 s on top of the lease leave room
/// for the last `Retry-After` wait (idem asks for 1 s), the round trips and a loaded server, so
/// that the attempt following the lease's expiry still starts before the deadline. Raise it with
/// [`ClientConfig::deadline`](super::ClientConfig::deadline) for a server whose lease is longer.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(40);

/// The shortest wait before asking again about a call still in flight, whatever its
/// `Retry-After` says, so that a server asking for no wait gets no busy loop.
const MIN_IN_FLIGHT_WAIT: Duration = Duration::from_millis(100);

/// How a response status fits an idem server: `None` for success, `Transient` for 5xx, 429 and
/// an in-flight 409 (one with `Retry-After`), `Fatal` for every other 4xx.
pub fn classify_status(status: StatusCode, headers: &HeaderMap) -> Option<Retryable> {
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || is_in_flight(status, headers) {
        Some(Retryable::Transient)
    } else if status.is_client_error() {
        Some(Retryable::Fatal)
    } else {
        None
    }
}

/// idem's answer to a request whose key is held by an attempt still running: 409 with `Retry-After`.
fn is_in_flight(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::CONFLICT && headers.contains_key(header::RETRY_AFTER)
}

/// The delay a response asks for in `Retry-After`: seconds, or an HTTP date (a date in the past
/// asks for none).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    match value.parse::<u64>() {
        Ok(seconds) => Some(Duration::from_secs(seconds)),
        Err(_) => Some(httpdate::parse_http_date(value).ok()?.duration_since(SystemTime::now()).unwrap_or_default()),
    }
}

/// The retry classification of an idem server, as a `reqwest-retry` strategy, for a stack built
/// on `reqwest_retry::RetryTransientMiddleware`: connection errors and timeouts (as
/// `reqwest-retry` classifies them), 5xx, 429 and an in-flight 409 are transient; every other
/// 4xx is fatal.
///
/// A strategy only classifies. The waiting and the budget belong to `RetryTransientMiddleware`,
/// which (as of `reqwest-retry` 0.9) does not do what [`RetryMiddleware`] does:
///
/// - It does not read `Retry-After`. It waits its policy's backoff, which can be shorter than
///   what the server asked for.
/// - Its policy's budget covers in-flight 409s too. With `build_with_max_retries(n)` it gives up
///   after `n` retries even while the first attempt is still running, and hands the caller an
///   in-flight 409. A caller that then starts over with a new key runs the side effect twice.
///   `build_with_total_retry_duration(DEFAULT_DEADLINE)` gives a time budget instead, but it is
///   checked only before each wait, so the last wait can run past it.
/// - It fails a request whose body cannot be cloned (a stream) with an error. [`RetryMiddleware`]
///   sends such a request once.
///
/// Use [`RetryMiddleware`] for the full behaviour; [`builder`](super::builder) and
/// [`wrap`](super::wrap) install it.
///
/// ```no_run
/// use idem_runtime::client::{IdemRetryStrategy, IdempotencyKeyMiddleware, DEFAULT_DEADLINE};
/// use reqwest_retry::{policies::ExponentialBackoff, RetryTransientMiddleware};
///
/// let policy = ExponentialBackoff::builder().build_with_total_retry_duration(DEFAULT_DEADLINE);
/// let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(IdempotencyKeyMiddleware::new()) // first: the key, once per call
///     .with(RetryTransientMiddleware::new_with_policy_and_strategy(policy, IdemRetryStrategy))
///     .build();
/// # drop(http);
/// ```
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

/// The default backoff for failures other than an in-flight 409: from 100 ms to 5 s apart,
/// with bounded jitter, at most 5 retries.
pub fn default_policy() -> ExponentialBackoff {
    ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(100), Duration::from_secs(5))
        .jitter(Jitter::Bounded)
        .build_with_max_retries(5)
}

/// Retries what [`IdemRetryStrategy`] calls transient, within a deadline.
///
/// - **The deadline** ([`DEFAULT_DEADLINE`] unless set with [`deadline`](Self::deadline)) bounds
///   the whole call, counted from its first attempt: no attempt starts after it, and no wait
///   runs past it. An attempt under way when it passes is not cut short; bound a single attempt
///   with `reqwest::ClientBuilder::timeout`.
/// - **An in-flight 409** means the call's first attempt is still running. It is asked again
///   after the `Retry-After` the server sent, for as long as the deadline allows, however many
///   attempts that takes; the call ends with the 409 only when the next attempt could not start
///   before the deadline.
/// - **Other transient failures** (connection errors, timeouts, 5xx, 429) are retried with the
///   policy's backoff, never sooner than their `Retry-After`, until the policy gives up (by
///   default after 5 retries; see [`max_retries`](Self::max_retries)) or the deadline comes.
///   A wait that would end past the deadline is cut to end at it, unless the server's
///   `Retry-After` asks for longer: then the call ends there with that response.
///
/// A request whose body cannot be cloned (a stream) is sent once.
#[derive(Debug, Clone)]
pub struct RetryMiddleware<P = ExponentialBackoff> {
    policy: P,
    deadline: Duration,
}

impl Default for RetryMiddleware {
    fn default() -> Self {
        Self::new(default_policy())
    }
}

impl RetryMiddleware {
    /// Retries failures other than an in-flight 409 at most `retries` times (default 5).
    /// In-flight 409s are retried until the deadline whatever this count.
    #[must_use]
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.policy.max_n_retries = Some(retries);
        self
    }
}

impl<P: RetryPolicy> RetryMiddleware<P> {
    /// Retries with `policy`'s backoff and count, within [`DEFAULT_DEADLINE`].
    pub fn new(policy: P) -> Self {
        Self { policy, deadline: DEFAULT_DEADLINE }
    }

    /// Sets the deadline of every call: how long after its first attempt the last one may start.
    /// Keep it longer than the server's lease (`lease = "…"` on the handler, 30 s by default).
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Retries with `policy` instead, keeping the deadline.
    pub(crate) fn with_policy<Q: RetryPolicy>(self, policy: Q) -> RetryMiddleware<Q> {
        RetryMiddleware { policy, deadline: self.deadline }
    }

    /// The budget of a call whose first attempt starts now.
    pub(crate) fn budget(&self) -> Budget<'_, P> {
        Budget {
            policy: &self.policy,
            started: SystemTime::now(),
            deadline: Instant::now().checked_add(self.deadline),
            retries: 0,
        }
    }
}

/// What is left of one call's retries.
pub(crate) struct Budget<'a, P> {
    policy: &'a P,
    /// For the policy, which counts in wall-clock time.
    started: SystemTime,
    /// `None`: too far away to represent, so never.
    deadline: Option<Instant>,
    /// Retries so far of failures other than an in-flight 409, as the policy counts them.
    retries: u32,
}

impl<P: RetryPolicy> Budget<'_, P> {
    /// Starts no attempt after `at` either: the call's key is not sent past its lifetime.
    pub(crate) fn end_by(&mut self, at: SystemTime) {
        let by = Instant::now().checked_add(at.duration_since(SystemTime::now()).unwrap_or_default());
        self.deadline = match (self.deadline, by) {
            (Some(deadline), Some(by)) => Some(deadline.min(by)),
            (deadline, by) => deadline.or(by),
        };
    }

    /// The wait before the next attempt, after a transient failure: `response` holds the failed
    /// response's status and headers, `None` for a request that got no response. `None` when the
    /// call ends with this failure.
    pub(crate) fn next_wait(&mut self, response: Option<(StatusCode, &HeaderMap)>) -> Option<Duration> {
        let asked = response.and_then(|(_, headers)| retry_after(headers)).unwrap_or_default();
        // The shortest wait the server accepts, and the wait chosen.
        let (least, wait) = if response.is_some_and(|(status, headers)| is_in_flight(status, headers)) {
            let least = asked.max(MIN_IN_FLIGHT_WAIT);
            (least, least)
        } else {
            let RetryDecision::Retry { execute_after } = self.policy.should_retry(self.started, self.retries) else {
                return None;
            };
            self.retries += 1;
            (asked, asked.max(execute_after.duration_since(SystemTime::now()).unwrap_or_default()))
        };
        let left = self.deadline.map_or(Duration::MAX, |deadline| deadline.saturating_duration_since(Instant::now()));
        (!left.is_zero() && least <= left).then(|| wait.min(left))
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
        let mut budget = self.budget();
        if let Some(&KeyExpires(at)) = extensions.get::<KeyExpires>() {
            budget.end_by(at);
        }
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let Some(request) = req.try_clone() else {
                return next.run(req, extensions).await;
            };
            let result = next.clone().run(request, extensions).await;
            if !matches!(IdemRetryStrategy.handle(&result), Some(Retryable::Transient)) {
                return result;
            }
            let Some(wait) = budget.next_wait(result.as_ref().ok().map(|r| (r.status(), r.headers()))) else {
                return result;
            };
            tracing::debug!(target: "idem::client", attempt, ?wait, "retrying a transient failure");
            drop(result);
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (name.parse().unwrap(), value.parse().unwrap())).collect()
    }

    fn in_flight(seconds: &'static str) -> (StatusCode, HeaderMap) {
        (StatusCode::CONFLICT, headers(&[("retry-after", seconds)]))
    }

    #[test]
    fn an_in_flight_409_is_retried_past_the_count_until_the_deadline() {
        let retry = RetryMiddleware::default().max_retries(0).deadline(Duration::from_secs(3600));
        let mut budget = retry.budget();
        let (status, headers) = in_flight("1");
        for _ in 0..100 {
            assert_eq!(budget.next_wait(Some((status, &headers))), Some(Duration::from_secs(1)));
        }
        assert_eq!(budget.next_wait(Some((StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new()))), None);
        assert_eq!(budget.next_wait(None), None, "a request error counts like a 5xx");
    }

    #[test]
    fn a_retry_after_past_the_deadline_ends_the_call_and_a_backoff_is_cut_to_it() {
        let retry = RetryMiddleware::default().deadline(Duration::from_secs(10));
        let (status, headers) = in_flight("11");
        assert_eq!(retry.budget().next_wait(Some((status, &headers))), None, "asking before 11 s would be refused");
        let (status, headers) = in_flight("9");
        assert_eq!(retry.budget().next_wait(Some((status, &headers))), Some(Duration::from_secs(9)));
        let slow = ExponentialBackoff::builder().retry_bounds(Duration::from_secs(60), Duration::from_secs(60));
        let retry =
            RetryMiddleware::new(slow.jitter(Jitter::None).build_with_max_retries(1)).deadline(Duration::from_secs(10));
        let wait = retry.budget().next_wait(None).unwrap();
        assert!(wait <= Duration::from_secs(10) && wait > Duration::from_secs(9), "cut to the deadline: {wait:?}");
    }

    #[test]
    fn a_passed_deadline_ends_the_call() {
        let retry = RetryMiddleware::default().deadline(Duration::ZERO);
        let (status, headers) = in_flight("0");
        assert_eq!(retry.budget().next_wait(Some((status, &headers))), None);
        assert_eq!(retry.budget().next_wait(None), None);
    }

    #[test]
    fn waits_honour_retry_after_and_an_in_flight_409_never_busy_loops() {
        let retry = RetryMiddleware::default();
        let (status, conflict) = in_flight("0");
        assert_eq!(retry.budget().next_wait(Some((status, &conflict))), Some(MIN_IN_FLIGHT_WAIT));
        let busy = headers(&[("retry-after", "3")]);
        let wait = retry.budget().next_wait(Some((StatusCode::SERVICE_UNAVAILABLE, &busy)));
        assert_eq!(wait, Some(Duration::from_secs(3)), "longer than the policy's backoff");
        let wait = retry.budget().next_wait(Some((StatusCode::BAD_GATEWAY, &HeaderMap::new()))).unwrap();
        assert!(wait <= Duration::from_millis(100), "the policy's first backoff: {wait:?}");
    }

    #[test]
    fn the_key_lifetime_ends_the_call_before_the_deadline() {
        let retry = RetryMiddleware::default().deadline(Duration::from_secs(3600));
        let mut budget = retry.budget();
        budget.end_by(SystemTime::now() + Duration::from_secs(2));
        let (status, headers) = in_flight("1");
        assert_eq!(budget.next_wait(Some((status, &headers))), Some(Duration::from_secs(1)));
        let (status, headers) = in_flight("3");
        assert_eq!(budget.next_wait(Some((status, &headers))), None, "the key would be sent past its lifetime");
        let mut budget = retry.budget();
        budget.end_by(SystemTime::now() - Duration::from_secs(1));
        assert_eq!(budget.next_wait(None), None);
    }

    #[test]
    fn the_count_applies_to_other_failures() {
        let retry = RetryMiddleware::default().max_retries(2);
        let mut budget = retry.budget();
        assert!(budget.next_wait(None).is_some());
        assert!(budget.next_wait(Some((StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new()))).is_some());
        assert_eq!(budget.next_wait(None), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after(&headers(&[("retry-after", "120")])), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(&headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")])), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
