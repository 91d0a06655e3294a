//! What the attribute's expansion uses, reached through the versioned module that `build.rs`
//! names (`__private_0_1_0`). Not public API.

pub use crate::config::{HandlerConfig, HandlerSpec};
pub use crate::engine::{Fingerprinted, IdempotencyContext};
pub use crate::scope::{resolve_with, Scope, ScopeKind};
pub use ::axum::extract::{FromRequest, FromRequestParts};
pub use ::axum::response::{IntoResponse, Response};
pub use ::core::time::Duration;
pub use ::http::request::Parts;

/// Fails to compile, at the parameter's type, when it cannot be fingerprinted.
#[inline(always)]
pub fn assert_fingerprint_source<T: crate::fingerprint::FingerprintSource>() {}

/// Fails to compile, at the parameter's type, when it is no extractor of the request head.
#[inline(always)]
pub fn assert_parts_extractor<T: FromRequestParts<S>, S>() {}

/// Fails to compile, at the parameter's type, when it is no extractor.
#[inline(always)]
pub fn assert_extractor<T: FromRequest<S, M>, S, M>() {}
