//! The canonical text of a document's tokens (numbers, string escapes), and the final walk
//! that writes a document again with its noted objects in order.

use std::ops::Range;

use super::{Member, Noted};

/// Writes the canonical text again, with the noted objects' members in canonical order.
pub(super) struct Writer<'a> {
    text: &'a [u8],
    noted: &'a [Noted],
    members: &'a [Member],
    /// The outermost noted objects of the spans being written, each span's last first.
    stack: Vec<usize>,
}

impl<'a> Writer<'a> {
    pub(super) fn new(text: &'a [u8], noted: &'a [Noted], members: &'a [Member]) -> Self {
        Self { text, noted, members, stack: Vec::new() }
    }

    /// Writes `text[span]`, where the objects noted inside are `noted[inner]`.
    pub(super) fn span(&mut self, span: Range<usize>, inner: Range<usize>, out: &mut Vec<u8>) {
        // The outermost of them, found from the last: each one's own come just before it.
        let mark = self.stack.len();
        let mut end = inner.end;
        while end > inner.start {
            self.stack.push(end - 1);
            end = self.noted[end - 1].inner;
        }
        let (text, noted, members) = (self.text, self.noted, self.members);
        let mut at = span.start;
        while self.stack.len() > mark {
            let object = &noted[self.stack.pop().unwrap_or_default()];
            out.extend_from_slice(&text[at..object.span.start]);
            out.push(b'{');
            for (n, member) in members[object.members.clone()].iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                self.span(member.span.0..member.span.1, member.inner.0..member.inner.1, out);
            }
            out.push(b'}');
            at = object.span.end;
        }
        out.extend_from_slice(&text[at..span.end]);
    }
}

/// Whether `text` holds a control character, which a string must escape.
pub(super) fn has_control(text: &[u8]) -> bool {
    // Eight bytes at a time: a byte below 0x20 sets its top bit in `(x - 0x20..) & !x`.
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut chunks = text.chunks_exact(8);
    let mut found = 0;
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        found |= x.wrapping_sub(ONES * 0x20) & !x;
    }
    found & (ONES * 0x80) != 0 || chunks.remainder().iter().any(|&b| b < 0x20)
}

pub(super) fn digits_end(s: &[u8], mut i: usize) -> usize {
    while let Some(b'0'..=b'9') = s.get(i) {
        i += 1;
    }
    i
}

/// Writes `-int.fraction × 10^exponent` (`-` if `negative`) in canonical form: its significant
/// digits, then the exponent unless it is zero.
pub(super) fn push_decimal(negative: bool, int: &[u8], fraction: &[u8], exponent: i64, out: &mut Vec<u8>) {
    let nonzero = |d: &u8| *d != b'0';
    let last_in_fraction = fraction.iter().rposition(nonzero);
    // `int` has no leading zeros: it is `0` or starts with its first significant digit.
    let (head, tail, exponent) = match (int != b"0", last_in_fraction) {
        (true, Some(last)) => (int, &fraction[..=last], i128::from(exponent) - (last as i128 + 1)),
        (true, None) => {
            let last = int.iter().rposition(nonzero).unwrap_or(0);
            (&int[..=last], &[][..], i128::from(exponent) + (int.len() - 1 - last) as i128)
        }
        (false, Some(last)) => {
            let first = fraction.iter().position(nonzero).unwrap_or(0);
            (&fraction[first..=last], &[][..], i128::from(exponent) - (last as i128 + 1))
        }
        (false, None) => {
            out.push(b'0');
            return;
        }
    };
    if negative {
        out.push(b'-');
    }
    out.extend_from_slice(head);
    out.extend_from_slice(tail);
    if exponent != 0 {
        out.push(b'e');
        if exponent < 0 {
            out.push(b'-');
        }
        let mut n = exponent.unsigned_abs();
        let mut digits = [0u8; 40];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[at..]);
    }
}

/// One character as serde_json writes it inside a string.
pub(super) fn push_escaped(c: char, out: &mut Vec<u8>) {
    match c {
        '"' => out.extend_from_slice(b"\\\""),
        '\\' => out.extend_from_slice(b"\\\\"),
        '\u{08}' => out.extend_from_slice(b"\\b"),
        '\u{0c}' => out.extend_from_slice(b"\\f"),
        '\n' => out.extend_from_slice(b"\\n"),
        '\r' => out.extend_from_slice(b"\\r"),
        '\t' => out.extend_from_slice(b"\\t"),
        c if (c as u32) < 0x20 => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(c as usize) >> 4]);
            out.push(HEX[(c as usize) & 0xf]);
        }
        c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
    }
}

/// The value of four hex digits (exactly: no sign).
pub(super) fn hex4(digits: &[u8]) -> Result<u32, ()> {
    digits.iter().try_fold(0, |n, &d| Ok(n << 4 | char::from(d).to_digit(16).ok_or(())?))
}
