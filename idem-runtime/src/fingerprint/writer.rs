//! The canonical encoding of one parameter's input, and the decoding of urlencoded pairs it
//! binds byte for byte.

use std::borrow::Cow;
use std::cell::Cell;

use sha2::{Digest, Sha256};

/// Accumulates one parameter's canonical encoding into a SHA-256.
///
/// Every write is a tag byte, a length, then that many bytes: a sequence of writes is read back
/// from its encoding unambiguously, so no two different sequences collide (no byte can move from
/// one write to the next, and no write can pass for two).
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
    ///
    /// Decoding is byte for byte: `+` is a space and `%` with two hex digits is the byte they
    /// spell, whatever it is, so `%FF` and `%FE` stay two bytes apart (they are never replaced by
    /// one character standing for invalid UTF-8). Pairs that decode alike are one: `a=%20` and
    /// `a=+`, `a` and `a=`, `a=1&&b=2` and `a=1&b=2`, as `Query` and `Form` hand them to a handler.
    pub fn pairs(&mut self, urlencoded: &[u8]) {
        self.write_pairs(&Pairs::parse(urlencoded));
    }

    pub(super) fn write_pairs(&mut self, pairs: &Pairs<'_>) {
        self.tag(b'p', pairs.0.len());
        for (k, v) in &pairs.0 {
            self.tag(b'k', k.len());
            self.hasher.update(k);
            self.tag(b'v', v.len());
            self.hasher.update(v);
        }
    }

    /// The digest of everything written.
    pub fn finish(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }
}

/// One decoded name or value, borrowed from the input when it holds nothing to decode.
type Decoded<'a> = Cow<'a, [u8]>;

/// Urlencoded pairs, decoded byte for byte and stably sorted by name.
pub(super) struct Pairs<'a>(Vec<(Decoded<'a>, Decoded<'a>)>);

impl<'a> Pairs<'a> {
    /// The pairs of `urlencoded`: `&`-separated pieces (empty ones skipped), each a name, then
    /// after the first `=` (if any) a value.
    pub(super) fn parse(urlencoded: &'a [u8]) -> Self {
        let mut pairs: Vec<_> = urlencoded
            .split(|&b| b == b'&')
            .filter(|piece| !piece.is_empty())
            .map(|piece| match memchr::memchr(b'=', piece) {
                Some(eq) => (decode(&piece[..eq]), decode(&piece[eq + 1..])),
                None => (decode(piece), Cow::Borrowed(&[][..])),
            })
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        Self(pairs)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One urlencoded name or value as bytes: `+` a space, `%` and two hex digits the byte they
/// spell, anything else (a `%` not followed by two hex digits included) as it is.
fn decode(text: &[u8]) -> Decoded<'_> {
    if memchr::memchr2(b'+', b'%', text).is_none() {
        return Cow::Borrowed(text);
    }
    let hex = |b: Option<&u8>| b.and_then(|&b| char::from(b).to_digit(16));
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        i += 1;
        match b {
            b'+' => out.push(b' '),
            b'%' => match (hex(text.get(i)), hex(text.get(i + 1))) {
                (Some(high), Some(low)) => {
                    out.push((high << 4 | low) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
    }
    Cow::Owned(out)
}

thread_local! {
    /// JSON bodies canonicalized on this thread.
    pub(super) static CANONICALIZED: Cell<u64> = const { Cell::new(0) };
    /// The buffer the last canonical text on this thread was written in, for the next one.
    static SPARE_TEXT: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The largest buffer kept for the next canonical text.
const SPARE_TEXT_LIMIT: usize = 16 << 10;
