//! Canonical JSON: two documents give equal bytes exactly when they hold the same JSON value.
//!
//! The canonical form of a document:
//! - no insignificant whitespace;
//! - object members sorted by key (the bytes of the key's canonical form); members with the
//!   same key keep their order, since the last of them is the one a reader keeps;
//! - strings with each character written as serde_json writes it: `"`, `\` and control
//!   characters escaped (`\n`, `\u001f`), everything else as it is, so `"\u00e9\/"` and `"é/"`
//!   are one string;
//! - numbers by their exact decimal value, never rounded through a float: an optional `-`, the
//!   significant digits without leading or trailing zeros, then `e` and the decimal exponent
//!   unless it is zero. `1.50` and `0.15e1` are `15e-1`, `100` and `1e2` are `1e2`, `-0.0` is
//!   `0`, and `1.0` (`1`) differs from `1.00000000000000001` (`100000000000000001e-17`).
//!
//! Input that is not JSON (RFC 8259) is an `Err`, and so is a number whose exponent has more
//! than 18 digits (leading zeros aside) or nesting deeper than `MAX_DEPTH`: the caller then
//! uses the raw bytes. Bytes that are not UTF-8 are kept as they are.
//!
//! The time taken is linear in the input's size, plus sorting each object's keys, however deep
//! the nesting. One pass reads the input and writes each token's canonical text in input order.
//! An object whose members are out of order is reordered right where it was written when it
//! holds no object that was itself reordered: such objects never nest, so no byte is moved
//! twice. An object out of order around reordered ones is noted instead (its members sorted),
//! and, when there are any, one final walk writes the document again with the noted objects'
//! members in order, copying each byte once.

use std::ops::Range;

use self::text::Writer;

mod scalars;
#[cfg(test)]
mod tests;
mod text;

/// The deepest nesting handled; deeper input is fingerprinted as raw bytes (serde_json
/// rejects it anyway).
const MAX_DEPTH: usize = 128;

/// Appends the canonical form of the JSON document `input` to `out`; `Err` (and `out` as it
/// was) if it is not JSON.
pub(crate) fn canonical_json(input: &[u8], out: &mut Vec<u8>) -> Result<(), ()> {
    let base = out.len();
    let Buffers { open, noted, members, region } = SPARE.take();
    let mut parser = Parser { s: input, i: 0, base, open, noted, members, reordered: 0, region };
    let parsed = parser.document(out);
    if parsed.is_err() {
        out.truncate(base);
    } else if !parser.noted.is_empty() {
        let text = out.split_off(base);
        let mut writer = Writer::new(&text, &parser.noted, &parser.members);
        writer.span(0..text.len(), 0..parser.noted.len(), out);
    }
    let Parser { mut open, mut noted, mut members, mut region, .. } = parser;
    let kept = open.capacity() + noted.capacity() + members.capacity() + region.capacity();
    if kept <= SPARE_LIMIT {
        open.clear();
        noted.clear();
        members.clear();
        region.clear();
        SPARE.set(Buffers { open, noted, members, region });
    }
    parsed
}

/// The working buffers of a [`Parser`], kept per thread between documents so that the usual
/// small document allocates none; those of a large document are dropped instead.
#[derive(Default)]
struct Buffers {
    open: Vec<Member>,
    noted: Vec<Noted>,
    members: Vec<Member>,
    region: Vec<u8>,
}

/// The most items (members, objects, bytes) the kept buffers may hold room for.
const SPARE_LIMIT: usize = 4096;

thread_local! {
    static SPARE: std::cell::Cell<Buffers> = const {
        std::cell::Cell::new(Buffers { open: Vec::new(), noted: Vec::new(), members: Vec::new(), region: Vec::new() })
    };
}

/// One member of an object, by its place in the text written in input order.
#[derive(Clone, Copy)]
struct Member {
    /// From the key's opening quote to the end of the value.
    span: (usize, usize),
    /// Where the key's closing quote is.
    key_end: usize,
    /// The objects noted inside the value, as a range of `Parser::noted`.
    inner: (usize, usize),
}

/// An object left out of order in the text for the final walk: one out of order around
/// reordered objects.
struct Noted {
    /// From `{` to after `}`, in the text written in input order.
    span: Range<usize>,
    /// Its members in canonical order, in `Parser::members`.
    members: Range<usize>,
    /// Where the objects noted inside it start in `Parser::noted`; they end where it is.
    inner: usize,
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    /// Where the canonical text starts in the output.
    base: usize,
    /// Members of the objects being read, innermost last (one stack for all objects).
    open: Vec<Member>,
    /// The objects left out of order, in the order they end.
    noted: Vec<Noted>,
    /// The members of `noted`.
    members: Vec<Member>,
    /// How many objects were reordered where they were written.
    reordered: usize,
    /// Scratch copy of the members of an object reordered where it was written.
    region: Vec<u8>,
}

impl Parser<'_> {
    fn document(&mut self, out: &mut Vec<u8>) -> Result<(), ()> {
        self.value(out, 0)?;
        self.ws();
        if self.i == self.s.len() {
            Ok(())
        } else {
            Err(())
        }
    }

    /// The position in the canonical text that `out` ends at.
    fn at(&self, out: &[u8]) -> usize {
        out.len() - self.base
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Result<(), ()> {
        self.ws();
        if self.s.get(self.i) == Some(&byte) {
            self.i += 1;
            Ok(())
        } else {
            Err(())
        }
    }

    fn value(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), ()> {
        if depth > MAX_DEPTH {
            return Err(());
        }
        self.ws();
        match self.s.get(self.i).ok_or(())? {
            b'{' => self.object(out, depth),
            b'[' => self.array(out, depth),
            b'"' => self.string(out),
            b't' => self.literal(b"true", out),
            b'f' => self.literal(b"false", out),
            b'n' => self.literal(b"null", out),
            b'-' | b'0'..=b'9' => self.number(out),
            _ => Err(()),
        }
    }

    fn literal(&mut self, word: &[u8], out: &mut Vec<u8>) -> Result<(), ()> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            out.extend_from_slice(word);
            Ok(())
        } else {
            Err(())
        }
    }

    fn array(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), ()> {
        self.i += 1;
        out.push(b'[');
        self.ws();
        if self.s.get(self.i) == Some(&b']') {
            self.i += 1;
            out.push(b']');
            return Ok(());
        }
        loop {
            self.value(out, depth + 1)?;
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => out.push(b','),
                Some(b']') => break,
                _ => return Err(()),
            }
            self.i += 1;
        }
        self.i += 1;
        out.push(b']');
        Ok(())
    }

    /// Writes the object, its members in canonical order when that can be done where they are;
    /// otherwise in input order, noting the object for the final walk.
    fn object(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), ()> {
        let start = self.at(out);
        let (inner, reordered) = (self.noted.len(), self.reordered);
        self.i += 1;
        out.push(b'{');
        self.ws();
        let base = self.open.len();
        if self.s.get(self.i) != Some(&b'}') {
            loop {
                self.ws();
                if self.s.get(self.i) != Some(&b'"') {
                    return Err(());
                }
                if self.open.len() > base {
                    out.push(b',');
                }
                let key = self.at(out);
                self.string(out)?;
                let key_end = self.at(out) - 1;
                self.eat(b':')?;
                out.push(b':');
                let noted = self.noted.len();
                self.value(out, depth + 1)?;
                self.open.push(Member { span: (key, self.at(out)), key_end, inner: (noted, self.noted.len()) });
                self.ws();
                match self.s.get(self.i) {
                    Some(b',') => self.i += 1,
                    Some(b'}') => break,
                    _ => return Err(()),
                }
            }
        }
        self.i += 1;
        out.push(b'}');
        let text = &out[self.base..];
        let key = |m: &Member| &text[m.span.0 + 1..m.key_end];
        let members = &mut self.open[base..];
        let sorted = members.windows(2).all(|w| key(&w[0]) <= key(&w[1]));
        if sorted {
            // In order as written (what its values hold is taken care of on its own).
        } else if self.reordered == reordered {
            // Out of order, and holding no object that was reordered: reordered where it is,
            // through a copy of its members. Objects reordered this way never nest, so no byte
            // is copied twice. The sort is stable: members with the same key keep their order.
            members.sort_by(|a, b| key(a).cmp(key(b)));
            let first = self.base + start + 1;
            self.region.clear();
            self.region.extend_from_slice(&out[first..out.len() - 1]);
            out.truncate(first);
            for (n, member) in members.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&self.region[member.span.0 - start - 1..member.span.1 - start - 1]);
            }
            out.push(b'}');
            self.reordered += 1;
        } else {
            // Out of order around reordered objects: noted, members sorted, for the final walk.
            members.sort_by(|a, b| key(a).cmp(key(b)));
            let from = self.members.len();
            self.members.extend_from_slice(members);
            self.noted.push(Noted { span: start..text.len(), members: from..self.members.len(), inner });
        }
        self.open.truncate(base);
        Ok(())
    }
}
