//! The metric types without the `metrics` feature: nothing is measured or kept.

use std::time::Instant;

use http::Method;

use crate::hooks::OutcomeKind;

/// Measures nothing.
#[derive(Debug)]
pub(crate) struct Stopwatch;

impl Stopwatch {
    #[inline]
    pub(crate) fn new(_started: Instant) -> Self {
        Self
    }

    #[inline]
    pub(crate) fn pause(&mut self) {}

    #[inline]
    pub(crate) fn resume(&mut self) {}

    #[inline]
    pub(crate) fn digests(&self) -> Digests {
        Digests
    }
}

/// Times nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Digests;

impl Digests {
    #[inline]
    pub(crate) fn time<T>(&self, digest: impl FnOnce() -> T) -> T {
        digest()
    }
}

/// Counts nothing.
#[derive(Debug)]
pub(crate) struct HeldClaim;

impl HeldClaim {
    #[inline]
    pub(crate) fn new(_method: &Method, _route: &str) -> Self {
        Self
    }
}

/// The store as it is.
#[inline]
pub(crate) fn timed<S>(store: S) -> S {
    store
}

/// The store operations.
#[derive(Clone, Copy)]
#[cfg(feature = "postgres")]
pub(crate) enum Operation {
    Claim,
    Complete,
}

/// Runs a store operation, timing nothing.
#[inline]
#[cfg(feature = "postgres")]
pub(crate) async fn time_operation<T, F: std::future::Future<Output = T>>(
    _operation: Operation,
    start: impl FnOnce() -> F,
) -> T {
    start().await
}

/// Records nothing.
#[inline]
pub(crate) fn record(_method: &Method, _route: &str, _kind: OutcomeKind, _watch: &Stopwatch) {}
