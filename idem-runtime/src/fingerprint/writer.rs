//! The canonical encoding of one parameter's input.

use std::cell::Cell;

use sha2::{Digest, Sha256};

/// Accumulates one parameter's canonical encoding into a SHA-256.
///
/// Every write is length-prefixed and tagged, so no two sequences of writes collide.
pub struct FingerprintWriter {
    hasher: Sha256,
}

impl std::fmt::Debug for FingerprintWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FingerprintWriter").finish_non_exhaustive()
    }
}

impl Default for FingerprintWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl FingerprintWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self { hasher: Sha256::new() }
    }

    fn tag(&mut self, tag: u8, len: usize) {
        self.hasher.update([tag]);
        self.hasher.update((len as u64).to_be_bytes());
    }

    /// Raw bytes, as they are.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.tag(b'b', bytes.len());
        self.hasher.update(bytes);
    }

    /// A JSON document, canonically: object keys sorted, no insignificant whitespace, string
    /// escapes normalized, numbers by their exact decimal value (never rounded through a float).
    /// Input that is not JSON is written as raw bytes.
    pub fn json(&mut self, raw: &[u8]) {
        self.json_is_canonical(raw);
    }

    /// [`json`](Self::json), telling whether `raw` was canonical JSON already.
    fn json_is_canonical(&mut self, raw: &[u8]) -> bool {
        CANONICALIZED.set(CANONICALIZED.get() + 1);
        let mut canonical = SPARE_TEXT.take();
        canonical.reserve(raw.len());
        let is_canonical = match crate::canonical::canonical_json(raw, &mut canonical) {
            Ok(()) => {
                self.tag(b'j', canonical.len());
                self.hasher.update(&canonical);
                canonical == raw
            }
            Err(()) => {
                self.bytes(raw);
                false
            }
        };
        // Kept for the next document on this thread, unless a large one made it large.
        if canonical.capacity() <= SPARE_TEXT_LIMIT {
            canonical.clear();
            SPARE_TEXT.set(canonical);
        }
        is_canonical
    }

    /// The digest of a fresh writer given one JSON document, and whether the document was
    /// canonical already.
    pub(super) fn json_digest(raw: &[u8]) -> ([u8; 32], bool) {
        let mut writer = Self::new();
        let is_canonical = writer.json_is_canonical(raw);
        (writer.finish(), is_canonical)
    }

    /// The digest of a JSON body's bytes, as [`json`](Self::json) would write them if they
    /// were canonical: equal to the canonical digest exactly when they are.
    pub(super) fn raw_json_digest(body: &[u8]) -> [u8; 32] {
        let mut writer = Self::new();
        writer.tag(b'j', body.len());
        writer.hasher.update(body);
        writer.finish()
    }

    /// `application/x-www-form-urlencoded` pairs (a query string or a form body), decoded and
    /// stably sorted by name: the order of different names does not matter, the order of
    /// repeated values of one name does.
    pub fn pairs(&mut self, urlencoded: &[u8]) {
        let mut pairs: Vec<_> = form_urlencoded::parse(urlencoded).collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        self.tag(b'p', pairs.len());
        for (k, v) in pairs {
            self.tag(b'k', k.len());
            self.hasher.update(k.as_bytes());
            self.tag(b'v', v.len());
            self.hasher.update(v.as_bytes());
        }
    }

    /// The digest of everything written.
    pub fn finish(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }
}

thread_local! {
    /// JSON bodies canonicalized on this thread.
    pub(super) static CANONICALIZED: Cell<u64> = const { Cell::new(0) };
    /// The buffer the last canonical text on this thread was written in, for the next one.
    static SPARE_TEXT: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The largest buffer kept for the next canonical text.
const SPARE_TEXT_LIMIT: usize = 16 << 10;
