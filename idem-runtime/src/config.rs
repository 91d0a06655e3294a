//! A handler's configuration, as the attribute's expansion builds it.
//!
//! The expansion names nothing but `HandlerConfig::new()` and one `const fn` call per argument the
//! handler gives, so a field added here (with its default in [`HandlerConfig::new`]) leaves every
//! earlier expansion valid. Defaults and the rules they follow live in `idem_rules`.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{header, request::Parts, HeaderName};

use crate::problem::Problem;
use crate::scope::Scope;

/// A handler's arguments, as the attribute compiled them.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct HandlerConfig {
    pub(crate) required: bool,
    pub(crate) ttl: Duration,
    /// Always the lease in force: the one given, else the default for the ttl.
    pub(crate) lease: Duration,
    lease_given: bool,
    pub(crate) wait: bool,
    /// One more accepted key header, lower case.
    pub(crate) header: Option<&'static str>,
    pub(crate) scope: ScopeKind,
    /// Inclusive status ranges stored although the default releases them.
    pub(crate) keep_status: &'static [(u16, u16)],
    /// Inclusive status ranges released although the default stores them.
    pub(crate) release_status: &'static [(u16, u16)],
    /// When given, the only headers a replay repeats (lower case), besides the representation
    /// headers that describe the stored body.
    pub(crate) replay_headers: Option<&'static [&'static str]>,
    /// `store = "layer"`: a covered request that reaches the handler without an `Idempotency`
    /// layer is refused instead of served from the embedded store.
    pub(crate) layer_only: bool,
    /// `on_expired_key = "refuse"` (true): a request whose logical call began longer ago than
    /// the ttl, and whose record is gone, is refused instead of run.
    pub(crate) refuse_expired: bool,
    /// The handler takes `Steps`: a covered request gets where its steps' results are kept.
    pub(crate) steps: bool,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        Self::new()
    }
}

#[doc(hidden)]
impl HandlerConfig {
    /// The configuration of `#[idempotent]` without arguments.
    pub const fn new() -> Self {
        Self {
            required: false,
            ttl: idem_rules::DEFAULT_TTL,
            lease: idem_rules::default_lease(idem_rules::DEFAULT_TTL),
            lease_given: false,
            wait: false,
            header: None,
            scope: ScopeKind::Auto,
            keep_status: &[],
            release_status: &[],
            replay_headers: None,
            layer_only: false,
            refuse_expired: true,
            steps: false,
        }
    }

    /// The configuration a handler with `defaults = …` starts from.
    pub const fn from_defaults(defaults: Defaults) -> Self {
        defaults.0
    }

    /// What `defaults!(…)` makes of its arguments.
    pub const fn into_defaults(self) -> Defaults {
        Defaults(self)
    }

    /// The handler takes `Steps` (seen in its signature).
    pub const fn steps(self, steps: bool) -> Self {
        Self { steps, ..self }
    }

    /// `required` (true) or `optional` (false).
    pub const fn required(self, required: bool) -> Self {
        Self { required, ..self }
    }

    /// `ttl = "…"`; the lease follows it unless one is given.
    pub const fn ttl(self, ttl: Duration) -> Self {
        let lease = if self.lease_given { self.lease } else { idem_rules::default_lease(ttl) };
        Self { ttl, lease, ..self }
    }

    /// `lease = "…"`.
    pub const fn lease(self, lease: Duration) -> Self {
        Self { lease, lease_given: true, ..self }
    }

    /// `on_conflict = "wait"` (true) or `"reject"` (false).
    pub const fn wait(self, wait: bool) -> Self {
        Self { wait, ..self }
    }

    /// `header = "…"`, lower case.
    pub const fn header(self, header: &'static str) -> Self {
        assert!(idem_rules::is_lowercase_header_name(header), "the extra key header must be a lower-case header name");
        Self { header: Some(header), ..self }
    }

    /// `scope = …`.
    pub const fn scope(self, scope: ScopeKind) -> Self {
        if let ScopeKind::Header(name) = scope {
            assert!(idem_rules::is_lowercase_header_name(name), "the scope header must be a lower-case header name");
        }
        Self { scope, ..self }
    }

    /// `keep_status(…)`, as inclusive ranges.
    pub const fn keep_status(self, keep_status: &'static [(u16, u16)]) -> Self {
        Self { keep_status, ..self }
    }

    /// `release_status(…)`, as inclusive ranges.
    pub const fn release_status(self, release_status: &'static [(u16, u16)]) -> Self {
        Self { release_status, ..self }
    }

    /// `replay_headers(…)`, lower case.
    pub const fn replay_headers(self, replay_headers: &'static [&'static str]) -> Self {
        Self { replay_headers: Some(replay_headers), ..self }
    }

    /// `store = "layer"` (true) or `"layer-or-embedded"` (false).
    pub const fn layer_only(self, layer_only: bool) -> Self {
        Self { layer_only, ..self }
    }

    /// `on_expired_key = "refuse"` (true) or `"run"` (false).
    pub const fn refuse_expired(self, refuse_expired: bool) -> Self {
        Self { refuse_expired, ..self }
    }

    /// Checks, at compile time, a `ttl` given next to `defaults = …` against the lease it
    /// takes from them.
    #[track_caller]
    pub const fn ttl_outlasts_inherited_lease(self) -> Self {
        assert!(
            self.lease.as_nanos() < self.ttl.as_nanos(),
            "this `ttl` is not longer than the `lease` taken from the defaults; give a longer `ttl`, or a shorter `lease` next to it"
        );
        self
    }

    /// Checks, at compile time, a `lease` given next to `defaults = …` against the ttl it takes
    /// from them.
    #[track_caller]
    pub const fn lease_within_inherited_ttl(self) -> Self {
        assert!(
            self.lease.as_nanos() < self.ttl.as_nanos(),
            "this `lease` is not shorter than the `ttl` taken from the defaults; give a shorter `lease`, or a longer `ttl` next to it"
        );
        self
    }

    /// Whether a response with `status` is stored: the default rule, as this handler adjusts it.
    pub(crate) fn stores(&self, status: http::StatusCode) -> bool {
        let listed =
            |ranges: &[(u16, u16)]| ranges.iter().any(|&(first, last)| (first..=last).contains(&status.as_u16()));
        if listed(self.release_status) {
            false
        } else {
            listed(self.keep_status) || idem_rules::stored_by_default(status.as_u16())
        }
    }
}

/// A service's idempotency arguments, stated once and named by each handler's
/// `#[idempotent(defaults = …)]`.
///
/// Made by [`defaults!`](crate::defaults!) from the attribute's own arguments, checked as the
/// attribute checks them, and kept in a `const`:
///
/// ```
/// use axum::{routing::post, Router};
/// use idem_runtime::{defaults, idempotent, Defaults};
///
/// /// Every write of this service: a key is required, kept a week per credential.
/// pub const IDEM: Defaults = defaults!(required, ttl = "7d", scope = "pat");
///
/// #[idempotent(defaults = IDEM)]
/// async fn create_order() -> &'static str { "created" }
///
/// // Only what differs: this one accepts requests without a key, and keeps keys a day.
/// #[idempotent(defaults = IDEM, optional, ttl = "24h")]
/// async fn add_note() -> &'static str { "noted" }
///
/// let app: Router = Router::new().route("/orders", post(create_order)).route("/notes", post(add_note));
/// ```
///
/// An argument the handler gives replaces the same argument of the defaults; `keep_status` and
/// `release_status` are one setting (a handler giving either replaces both lists). The
/// handler's `ttl` or `lease` is checked against the `lease` or `ttl` it inherits when the
/// handler compiles:
///
/// ```compile_fail,E0080
/// use idem_runtime::{defaults, idempotent, Defaults};
///
/// const IDEM: Defaults = defaults!(lease = "1m");
///
/// #[idempotent(defaults = IDEM, ttl = "30s")] // error: not longer than the inherited lease
/// async fn create() -> &'static str { "created" }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Defaults(HandlerConfig);

/// Implemented by the attribute for one marker type per handler: the handler's configuration,
/// and how its scope is found.
#[doc(hidden)]
pub trait HandlerSpec: 'static {
    /// The handler's configuration.
    const CONFIG: HandlerConfig;

    /// The handler's scope.
    fn scope(parts: &Parts) -> Result<Scope, Response> {
        resolve_scope(Self::CONFIG.scope, parts)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{HeaderName, StatusCode};

    use super::*;

    #[test]
    fn defaults_come_from_the_rules() {
        let config = HandlerConfig::new();
        assert_eq!((config.ttl, config.lease), (idem_rules::DEFAULT_TTL, idem_rules::DEFAULT_LEASE));
        assert!(!config.required && !config.wait && config.header.is_none() && config.replay_headers.is_none());
        assert!(config.refuse_expired);
    }

    #[test]
    fn the_lease_follows_the_ttl_unless_given_in_any_order() {
        let short = Duration::from_secs(10);
        assert_eq!(HandlerConfig::new().ttl(short).lease, Duration::from_secs(5));
        let given = Duration::from_secs(2);
        assert_eq!(HandlerConfig::new().lease(given).ttl(short).lease, given);
        assert_eq!(HandlerConfig::new().ttl(short).lease(given).lease, given);
    }

    #[test]
    fn a_ttl_given_after_defaults_keeps_their_lease_or_sets_the_one_that_follows_it() {
        let (ttl, lease) = (Duration::from_secs(10), Duration::from_secs(2));
        let with_lease = HandlerConfig::new().lease(lease).into_defaults();
        assert_eq!(HandlerConfig::from_defaults(with_lease).ttl(ttl).lease, lease);
        let with_ttl = HandlerConfig::new().ttl(Duration::from_secs(3600)).into_defaults();
        assert_eq!(HandlerConfig::from_defaults(with_ttl).lease, idem_rules::DEFAULT_LEASE);
        assert_eq!(HandlerConfig::from_defaults(with_ttl).ttl(ttl).lease, Duration::from_secs(5));
    }

    #[test]
    fn handler_lists_adjust_the_default_status_rule() {
        let config = HandlerConfig::new().keep_status(&[(409, 409)]).release_status(&[(404, 404), (410, 418)]);
        for (status, stored) in [(201, true), (409, true), (404, false), (415, false), (429, false), (503, false)] {
            assert_eq!(config.stores(StatusCode::from_u16(status).unwrap()), stored, "{status}");
        }
    }

    /// The header names the configuration accepts are exactly those `HeaderName::from_static`
    /// (which reads them on every request) accepts.
    #[test]
    fn lowercase_header_names_are_what_http_takes_as_they_are() {
        for byte in 0..=u8::MAX {
            let Ok(name) = std::str::from_utf8(std::slice::from_ref(&byte)) else { continue };
            let http_takes_it = HeaderName::from_bytes(name.as_bytes()).is_ok_and(|h| h.as_str() == name);
            assert_eq!(idem_rules::is_lowercase_header_name(name), http_takes_it, "{name:?}");
        }
    }
}

/// How a handler's scope is found, as written in `scope = …`.
#[derive(Debug, Clone, Copy)]
pub enum ScopeKind {
    /// `pat` when `Authorization` is present, else `global`.
    Auto,
    /// One namespace.
    Global,
    /// The `Authorization` credential; 401 without it.
    Pat,
    /// The value of this (lower-case) header; 401 without it.
    Header(&'static str),
    /// A function of the request parts (`with(path)`), wrapped by the generated code.
    With(fn(&Parts) -> Result<Scope, Response>),
}

/// Resolves a handler's scope.
pub(crate) fn resolve_scope(kind: ScopeKind, parts: &Parts) -> Result<Scope, Response> {
    let auth = || parts.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()).filter(|v| !v.is_empty());
    match kind {
        ScopeKind::Global => Ok(Scope::global()),
        ScopeKind::Auto => Ok(auth().map_or_else(Scope::global, Scope::credential)),
        ScopeKind::Pat => auth().map(Scope::credential).ok_or_else(|| Problem::no_credential().into_response()),
        ScopeKind::Header(name) => {
            let name = HeaderName::from_static(name);
            match parts.headers.get(&name).filter(|v| !v.is_empty()) {
                Some(v) => Ok(Scope::header(&name, v.as_bytes())),
                None => Err(Problem::no_scope_header(&name).into_response()),
            }
        }
        ScopeKind::With(resolve) => resolve(parts),
    }
}

/// Calls a user's `with(f)` scope function.
pub fn resolve_with<T, R>(parts: &Parts, f: fn(&Parts) -> Result<T, R>) -> Result<Scope, Response>
where
    T: AsRef<[u8]>,
    R: IntoResponse,
{
    f(parts).map(Scope::custom).map_err(IntoResponse::into_response)
}
