//! What the attribute's expansion uses, reached through the versioned module that `build.rs`
//! names (`__private_0_1_0`). Not public API.

pub use crate::config::{resolve_with, ScopeKind};
pub use crate::config::{HandlerConfig, HandlerSpec};
pub use crate::extract::{Fingerprinted, IdempotencyContext};
pub use crate::scope::Scope;
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

/// Fails to compile, at the handler's name, when the handler's future is not `Send`, with a
/// message that names the cause.
#[inline(always)]
pub fn handler_future_is_send<F: SendHandlerFuture<M>, M>(_: &F) {}

/// Follows [`handler_future_is_send`]: rustc's own error for this bound, at the handler's name
/// too, shows which value is held across which `.await`.
#[inline(always)]
pub fn assert_send<F: Send>(_: &F) {}

/// A handler's future that may move between threads, as axum and the engine need.
///
/// Two impls, one that never applies: with a single impl rustc would report its unmet `Send`
/// bound instead of this trait, and the message below would never be shown.
#[diagnostic::on_unimplemented(
    message = "the future of this `#[idempotent]` handler must be `Send`, and it is not",
    label = "a value that is not `Send` is held across an `.await` in this handler",
    note = "a handler may resume on another thread after an `.await`: drop such a value (a `std::sync::MutexGuard`, an `Rc`, a `RefCell` borrow) before the `.await`, or use one that is `Send` (`tokio::sync::Mutex`, `Arc`)"
)]
pub trait SendHandlerFuture<M> {}

/// Selects the impl of [`SendHandlerFuture`] that applies to every `Send` future.
#[derive(Debug)]
pub enum IsSend {}

/// Selects the impl of [`SendHandlerFuture`] that never applies: nothing implements
/// [`Unimplementable`].
#[derive(Debug)]
pub enum NeverApplies {}

/// Implemented by nothing.
pub trait Unimplementable {}

impl<F: std::future::Future + Send> SendHandlerFuture<IsSend> for F {}

impl<F: std::future::Future + Send + Unimplementable> SendHandlerFuture<NeverApplies> for F {}
