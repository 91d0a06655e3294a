//! The rules that `#[idempotent]` checks when it expands and `idem-runtime` applies when it
//! runs, each written once.
//!
//! `idem-macros` reads them while expanding, so a handler argument that breaks one is refused with
//! an error on the offending token; `idem-runtime` applies the same constants and functions to
//! every request. Both crates pin this one with `=`, so they always agree. Applications depend on
//! `idem-runtime`, not on this crate.

use std::time::Duration;

/// How long a completed response is replayed when a handler gives no `ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How long an in-flight claim holds when a handler gives no `lease`, unless half the `ttl` is
/// shorter (see [`default_lease`]).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The lease of a handler that gives none: [`DEFAULT_LEASE`], or half of `ttl` when that is
/// shorter, so that a claim never outlives the record it is for.
///
/// ```
/// use std::time::Duration;
///
/// assert_eq!(idem_rules::default_lease(idem_rules::DEFAULT_TTL), Duration::from_secs(30));
/// assert_eq!(idem_rules::default_lease(Duration::from_secs(3)), Duration::from_millis(1500));
/// ```
pub const fn default_lease(ttl: Duration) -> Duration {
    // `ttl / 2`, spelled out: `Div` is not callable in a `const fn`.
    let half = Duration::new(ttl.as_secs() / 2, (ttl.subsec_nanos() + (ttl.as_secs() % 2) as u32 * 1_000_000_000) / 2);
    if half.as_nanos() < DEFAULT_LEASE.as_nanos() {
        half
    } else {
        DEFAULT_LEASE
    }
}

/// How far a client's clock may be from the server's when a request says when its logical call
/// began (a UUIDv7 key's timestamp, a `Repeatability-First-Sent` date): a request is refused as
/// past its lifetime only when it began more than `ttl` plus this long ago, and as dated in the
/// future only when it begins more than this long from now.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The 4xx statuses that are not stored by default: a retry of the same request may well
/// succeed (Request Timeout, Conflict, Too Early, Too Many Requests).
pub const RELEASED_4XX: [u16; 4] = [408, 409, 425, 429];

/// Whether a response with this status is stored and replayed unless the handler says otherwise
/// (`keep_status` / `release_status`): every status below 500 but [`RELEASED_4XX`]. The others
/// release the key, so that a retry runs the handler again.
///
/// ```
/// assert!(idem_rules::stored_by_default(201));
/// assert!(idem_rules::stored_by_default(404));
/// assert!(!idem_rules::stored_by_default(409));
/// assert!(!idem_rules::stored_by_default(503));
/// ```
pub const fn stored_by_default(status: u16) -> bool {
    if status >= 500 {
        return false;
    }
    let mut i = 0;
    while i < RELEASED_4XX.len() {
        if RELEASED_4XX[i] == status {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether `name` is a header name: a non-empty RFC 9110 token (letters, digits and
/// ``!#$%&'*+-.^_`|~``), in any case.
///
/// ```
/// assert!(idem_rules::is_header_name("X-Tenant"));
/// assert!(!idem_rules::is_header_name("X Tenant"));
/// assert!(!idem_rules::is_header_name(""));
/// ```
pub const fn is_header_name(name: &str) -> bool {
    token(name.as_bytes(), false)
}

/// Whether `name` is a header name written in lower case, the form a handler's configuration
/// holds.
///
/// ```
/// assert!(idem_rules::is_lowercase_header_name("x-tenant"));
/// assert!(!idem_rules::is_lowercase_header_name("X-Tenant"));
/// ```
pub const fn is_lowercase_header_name(name: &str) -> bool {
    token(name.as_bytes(), true)
}

const fn token(bytes: &[u8], lowercase_only: bool) -> bool {
    if bytes.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let valid = match bytes[i] {
            b'a'..=b'z' | b'0'..=b'9' => true,
            b'A'..=b'Z' => !lowercase_only,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~' => {
                true
            }
            _ => false,
        };
        if !valid {
            return false;
        }
        i += 1;
    }
    true
}

/// The hop-by-hop headers (RFC 9110 §7.6.1), lower case: they describe one connection.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Why a response header is never replayed, whatever the handler asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeverReplayed {
    /// One of [`HOP_BY_HOP`].
    HopByHop,
    /// `Content-Length`: a replay computes it from the stored body.
    Recomputed,
}

impl NeverReplayed {
    /// The reason, to follow the header's name in a sentence.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::HopByHop => "is hop-by-hop: it describes one connection and is never replayed",
            Self::Recomputed => "is recomputed from the stored body on every replay",
        }
    }
}

/// Whether, and why, a response header is never replayed; `name` in lower case (as
/// `http::HeaderName` holds it). Headers named by the response's `Connection` header are
/// hop-by-hop too; that depends on the response and is the runtime's to check.
///
/// ```
/// use idem_rules::{never_replayed, NeverReplayed};
///
/// assert_eq!(never_replayed("transfer-encoding"), Some(NeverReplayed::HopByHop));
/// assert_eq!(never_replayed("content-length"), Some(NeverReplayed::Recomputed));
/// assert_eq!(never_replayed("location"), None);
/// ```
pub fn never_replayed(name: &str) -> Option<NeverReplayed> {
    if HOP_BY_HOP.contains(&name) {
        Some(NeverReplayed::HopByHop)
    } else if name == "content-length" {
        Some(NeverReplayed::Recomputed)
    } else {
        None
    }
}

/// The name of the hidden module through which the attribute's expansion reaches
/// `idem-runtime`: it carries the version (`0.1.0` gives `__private_0_1_0`), so a macro and a
/// runtime of different versions fail to compile together instead of disagreeing silently.
///
/// ```
/// assert_eq!(idem_rules::private_module("0.1.0"), "__private_0_1_0");
/// assert_eq!(idem_rules::private_module("0.2.0-rc.1"), "__private_0_2_0_rc_1");
/// ```
pub fn private_module(version: &str) -> String {
    let version: String = version.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("__private_{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_lease_is_30s_or_half_a_shorter_ttl() {
        assert_eq!(default_lease(DEFAULT_TTL), DEFAULT_LEASE);
        assert_eq!(default_lease(Duration::from_secs(60)), DEFAULT_LEASE);
        assert_eq!(default_lease(Duration::from_secs(59)), Duration::from_millis(29_500));
        assert_eq!(default_lease(Duration::new(1, 1)), Duration::new(0, 500_000_000));
        assert_eq!(default_lease(Duration::from_nanos(1)), Duration::ZERO);
        for ttl in [Duration::from_millis(1), Duration::from_secs(7), Duration::new(u64::MAX, 999_999_999)] {
            assert_eq!(default_lease(ttl), (ttl / 2).min(DEFAULT_LEASE), "{ttl:?}");
            assert!(default_lease(ttl) < ttl);
        }
    }

    #[test]
    fn statuses_below_500_are_stored_but_the_retryable_ones() {
        let released: Vec<u16> = (100..=599).filter(|&s| !stored_by_default(s)).collect();
        let expected: Vec<u16> = RELEASED_4XX.iter().copied().chain(500..=599).collect();
        assert_eq!(released, expected);
    }

    #[test]
    fn header_names_are_tokens() {
        for name in ["a", "X-Tenant", "request_id", "x.y", "!#$%&'*+-.^_`|~09azAZ"] {
            assert!(is_header_name(name), "{name}");
        }
        for name in ["", "a b", "a:b", "a\"b", "é", "a\tb", "(x)"] {
            assert!(!is_header_name(name), "{name:?}");
        }
        assert!(is_lowercase_header_name("x-tenant"));
        assert!(!is_lowercase_header_name("x-Tenant"));
    }

    #[test]
    fn never_replayed_are_hop_by_hop_and_content_length() {
        for name in HOP_BY_HOP {
            assert_eq!(never_replayed(name), Some(NeverReplayed::HopByHop));
        }
        assert_eq!(never_replayed("content-length"), Some(NeverReplayed::Recomputed));
        for name in ["content-type", "location", "set-cookie", "date", "Connection"] {
            assert_eq!(never_replayed(name), None, "{name}");
        }
    }
}
