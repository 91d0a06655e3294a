//! Whose namespace a key lives in.
//!
//! A [`Scope`] is a SHA-256 digest: credentials and tenant values are never kept in memory past
//! the request, and never reach a store.

use http::HeaderName;
use sha2::{Digest, Sha256};

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
