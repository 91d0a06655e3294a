//! Whose namespace a key lives in.
//!
//! A [`Scope`] is a SHA-256 digest: credentials and tenant values are never kept in memory past
//! the request, and never reach a store.

use axum::response::{IntoResponse, Response};
use http::{header, request::Parts, HeaderName};
use sha2::{Digest, Sha256};

use crate::problem::Problem;

/// The namespace a key belongs to, as a digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scope([u8; 32]);

impl Scope {
    fn tagged(tag: &[u8], value: &[u8]) -> Self {
        // `credential` writes the same framing with the tag `pat`.
        let mut h = Sha256::new();
        h.update((tag.len() as u32).to_be_bytes());
        h.update(tag);
        h.update(value);
        Self(h.finalize().into())
    }

    /// One namespace shared by every caller.
    pub fn global() -> Self {
        static GLOBAL: std::sync::OnceLock<Scope> = std::sync::OnceLock::new();
        *GLOBAL.get_or_init(|| Self::tagged(b"global", b""))
    }

    /// The namespace of one credential: an `Authorization` value. The auth scheme is
    /// case-insensitive (`Bearer t` and `bearer t` are one caller) and the spaces after it do
    /// not count; the credential after the scheme is compared exactly.
    pub fn credential(credential: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(3u32.to_be_bytes());
        h.update(b"pat");
        match credential.iter().position(|&b| b == b' ') {
            Some(space) => {
                let (scheme, rest) = credential.split_at(space);
                let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
                h.update(scheme.to_ascii_lowercase());
                h.update(b" ");
                h.update(&rest[start..]);
            }
            // A value without a scheme: kept as it is.
            None => h.update(credential),
        }
        Self(h.finalize().into())
    }

    /// The namespace named by the value of a header.
    pub fn header(name: &HeaderName, value: &[u8]) -> Self {
        Self::tagged(format!("header:{name}").as_bytes(), value)
    }

    /// A namespace of the application's choosing (`scope = with(f)`).
    pub fn custom(value: impl AsRef<[u8]>) -> Self {
        Self::tagged(b"custom", value.as_ref())
    }

    /// The digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scope({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// How a handler's scope is found, as written in `scope = …`.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKind {
    /// `pat` when `Authorization` is present, else `global`.
    Auto,
    /// One namespace.
    Global,
    /// The `Authorization` credential; 401 without it.
    Pat,
    /// The value of this (lower-case) header; 401 without it.
    Header(&'static str),
    /// A function of the request parts (`with(path)`), called by the generated code.
    With,
}

pub(crate) fn resolve(kind: ScopeKind, parts: &Parts) -> Result<Scope, Response> {
    let auth = || parts.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()).filter(|v| !v.is_empty());
    match kind {
        ScopeKind::Global => Ok(Scope::global()),
        ScopeKind::Auto => Ok(auth().map_or_else(Scope::global, Scope::credential)),
        ScopeKind::Pat => auth().map(Scope::credential).ok_or_else(|| {
            Problem::scope_unresolved(
                "this endpoint keeps idempotency keys per credential; send an Authorization header",
            )
            .into_response()
        }),
        ScopeKind::Header(name) => {
            let name = HeaderName::from_static(name);
            match parts.headers.get(&name).filter(|v| !v.is_empty()) {
                Some(v) => Ok(Scope::header(&name, v.as_bytes())),
                None => Err(Problem::scope_unresolved(format!(
                    "this endpoint keeps idempotency keys per {name}; send that header"
                ))
                .into_response()),
            }
        }
        ScopeKind::With => unreachable!("`with(...)` scopes are resolved by the generated code"),
    }
}

/// Calls a user's `with(f)` scope function.
#[doc(hidden)]
pub fn resolve_with<T, R>(parts: &Parts, f: fn(&Parts) -> Result<T, R>) -> Result<Scope, Response>
where
    T: AsRef<[u8]>,
    R: IntoResponse,
{
    f(parts).map(Scope::custom).map_err(IntoResponse::into_response)
}
