//! Keys for the calls a handler makes downstream: derived from the request's own key, so that
//! every retry of the request sends the same key to the payment provider, the mailer or the
//! next service, and they too run the call once.
//!
//! A handler that charges a card through a provider, then writes its order, can crash (or
//! answer 503, or roll back its `Tx`) after the charge: the client's retry runs the handler
//! again, and the charge is made twice unless the provider received the same idempotency key
//! both times. [`DownstreamKeys`] gives that key: one per label, the same for every attempt of
//! the request.
//!
//! ```
//! use axum::{routing::post, Router};
//! use idem_runtime::{downstream::DownstreamKeys, idempotent};
//!
//! #[idempotent(required)]
//! async fn pay(keys: DownstreamKeys) -> String {
//!     // With idem's client: `client.post(provider).idempotency_key(keys.key("charge"))`.
//!     let charge = keys.key("charge");
//!     format!("charged under {}", charge.as_str())
//! }
//!
//! let app: Router = Router::new().route("/payments", post(pay));
//! ```
//!
//! - **Stable**: the same scope, key and label give the same key, on every instance and after a
//!   restart; a different label, key or scope gives another (a collision takes a 122-bit digest
//!   collision).
//! - **Opaque**: a SHA-256 digest of the request's record address (itself a digest of scope and
//!   key) and the label: neither the request's key nor the caller's credential can be recovered
//!   from it.
//! - **Accepted everywhere**: formatted as a UUID (RFC 9562 version 8, the custom version), which
//!   providers' key validators accept, and which carries no time: an idem server downstream does
//!   not judge its age (the request's own key was judged before the handler ran).
//!
//! It is not part of the fingerprint. A handler that takes it needs the request's key: a request
//! without one (an `optional` handler, a safe method) is refused with 400 `missing-key`; take
//! `Option<DownstreamKeys>` to run such requests without downstream keys.

use std::time::Instant;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse as _, Response};
use http::request::Parts;
use sha2::{Digest as _, Sha256};

use crate::extract::{reject, Fingerprinting};
use crate::fingerprint::{FingerprintSource, FingerprintWriter, RequestInput};
use crate::key::IdempotencyKey;
use crate::problem::Problem;
use crate::store::RecordKey;

/// The keys of a request's downstream calls, one per label (see the [module docs](self)).
#[derive(Clone, Copy, Debug)]
pub struct DownstreamKeys {
    record: RecordKey,
}

impl DownstreamKeys {
    /// The key for the downstream call named `label` (`"charge"`, `"email"`): the same for every
    /// attempt of this request, another for another label.
    pub fn key(&self, label: &str) -> IdempotencyKey {
        let mut digest = Sha256::new();
        digest.update(b"idem-downstream-v1\0");
        digest.update(self.record.as_bytes());
        digest.update(label.as_bytes());
        let digest: [u8; 32] = digest.finalize().into();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // the RFC 9562 variant
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let text = format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]);
        IdempotencyKey::parse(text.as_bytes()).expect("a UUID is a valid key")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for DownstreamKeys {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        match Fingerprinting::record(parts) {
            Some(record) => Ok(Self { record }),
            None => Err(reject(parts, Instant::now(), Problem::missing_key().into_response())),
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for DownstreamKeys {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(Fingerprinting::record(parts).map(|record| Self { record }))
    }
}

/// The keys are no input of the request: they add nothing to the fingerprint.
impl FingerprintSource for DownstreamKeys {
    fn write(_: &RequestInput<'_>, _: &mut FingerprintWriter) {}
}

/// `Option<DownstreamKeys>` adds nothing either.
impl FingerprintSource for Option<DownstreamKeys> {
    fn write(_: &RequestInput<'_>, _: &mut FingerprintWriter) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scope;

    fn keys(scope: &Scope, key: &str) -> DownstreamKeys {
        DownstreamKeys { record: RecordKey::new(scope, &IdempotencyKey::parse(key.as_bytes()).unwrap()) }
    }

    #[test]
    fn one_key_per_scope_key_and_label_formatted_as_a_version_8_uuid() {
        let (global, alice) = (Scope::global(), Scope::credential(b"Bearer alice"));
        let charge = keys(&global, "k1").key("charge");
        assert_eq!(charge, keys(&global, "k1").key("charge"), "stable");
        let others = [
            keys(&global, "k1").key("email"),
            keys(&global, "k2").key("charge"),
            keys(&alice, "k1").key("charge"),
            keys(&global, "k1").key("charge "),
            keys(&global, "k1").key(""),
        ];
        for other in &others {
            assert_ne!(&charge, other);
        }
        let text = charge.as_str().as_bytes();
        let layout = text.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        });
        assert!(text.len() == 36 && layout, "{charge:?}");
        assert_eq!((text[14], matches!(text[19], b'8' | b'9' | b'a' | b'b')), (b'8', true), "version 8, RFC variant");
        assert_eq!(charge.uuid_v7_time(), None, "it carries no time");
        assert!(!charge.as_str().contains("k1"));
    }
}
