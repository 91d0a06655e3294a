//! The address of a record: where a store keeps the claim and the response of one key in one
//! scope.

use sha2::{Digest, Sha256};

use crate::key::IdempotencyKey;
use crate::scope::Scope;

/// The address of a record: SHA-256 of (scope, key). Neither the raw key nor the credential is
/// recoverable from it.
///
/// Build one with [`RecordKey::new`], or from a digest a store kept with
/// [`RecordKey::from_digest`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecordKey(pub(crate) [u8; 32]);

/// Hashes the first 8 bytes only: they are already uniformly distributed (a SHA-256 prefix), so
/// a keyed hasher over 8 bytes spreads keys as well as over 32, at a third of the cost. Equality
/// still compares all 32 bytes.
impl std::hash::Hash for RecordKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let (prefix, _) = self.0.split_first_chunk::<8>().expect("32 bytes");
        state.write_u64(u64::from_ne_bytes(*prefix));
    }
}

impl RecordKey {
    /// A key from its 32 bytes, as [`RecordKey::as_bytes`] gave them. A key made up by hand must
    /// be as uniformly distributed as a digest: maps hash only its first 8 bytes.
    pub const fn from_digest(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// The digest, for a store's key names or columns.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The address of `key` within `scope`.
    pub fn new(scope: &Scope, key: &IdempotencyKey) -> Self {
        Self::of(scope, key.as_str())
    }

    /// The address of the key `key` within `scope`.
    pub(crate) fn of(scope: &Scope, key: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"idem-record-v1\0");
        h.update(scope.as_bytes());
        h.update(key.as_bytes());
        Self(h.finalize().into())
    }

    /// Lower-case hex, e.g. for a remote store's key names.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordKey({})", &self.to_hex()[..12])
    }
}
