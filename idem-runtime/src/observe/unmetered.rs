//! The metric types without the `metrics` feature: nothing is measured or kept.

use std::time::Instant;

use http::Method;

use crate::outcome::OutcomeKind;

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

/// Records nothing.
#[inline]
pub(crate) fn record(_method: &Method, _route: &str, _kind: OutcomeKind, _watch: &Stopwatch) {}
