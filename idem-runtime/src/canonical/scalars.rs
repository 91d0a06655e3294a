//! The scalar tokens of a document, strings and numbers: each read and written in its canonical
//! text as it is met.

use super::text::{digits_end, has_control, hex4, push_decimal, push_escaped};
use super::Parser;

impl Parser<'_> {
    pub(super) fn string(&mut self, out: &mut Vec<u8>) -> Result<(), ()> {
        let open = self.i;
        let body = &self.s[open + 1..];
        // The first quote, backslash or control character (which must be escaped): looked for
        // byte by byte in the first few bytes, where most strings end, then with memchr.
        let head = body.len().min(16);
        let stop = match body[..head].iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20) {
            Some(stop) => stop,
            None => {
                let stop = head + memchr::memchr2(b'"', b'\\', &body[head..]).ok_or(())?;
                if has_control(&body[head..stop]) {
                    return Err(());
                }
                stop
            }
        };
        if body[stop] < 0x20 {
            return Err(());
        }
        if body[stop] == b'"' {
            // No escapes: the text is already canonical.
            out.extend_from_slice(&self.s[open..open + stop + 2]);
            self.i = open + stop + 2;
            return Ok(());
        }
        out.push(b'"');
        out.extend_from_slice(&body[..stop]);
        let mut j = stop;
        loop {
            let b = *body.get(j).ok_or(())?;
            j += 1;
            match b {
                b'"' => break,
                b'\\' => {}
                0..=0x1f => return Err(()),
                _ => {
                    out.push(b);
                    continue;
                }
            }
            // An escape: written as serde_json writes the character (its escaping is minimal).
            let e = *body.get(j).ok_or(())?;
            j += 1;
            let c = match e {
                b'"' | b'\\' | b'/' => e as u32,
                b'b' => 0x08,
                b'f' => 0x0c,
                b'n' => 0x0a,
                b'r' => 0x0d,
                b't' => 0x09,
                b'u' => {
                    let mut c = hex4(body.get(j..j + 4).ok_or(())?)?;
                    j += 4;
                    if (0xd800..0xdc00).contains(&c) {
                        if body.get(j..j + 2) != Some(b"\\u") {
                            return Err(());
                        }
                        let low = hex4(body.get(j + 2..j + 6).ok_or(())?)?;
                        if !(0xdc00..0xe000).contains(&low) {
                            return Err(());
                        }
                        j += 6;
                        c = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00);
                    }
                    c
                }
                _ => return Err(()),
            };
            push_escaped(char::from_u32(c).ok_or(())?, out);
        }
        out.push(b'"');
        self.i += 1 + j;
        Ok(())
    }

    /// A number, read by the grammar `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    pub(super) fn number(&mut self, out: &mut Vec<u8>) -> Result<(), ()> {
        let s = self.s;
        let mut i = self.i;
        let negative = s.get(i) == Some(&b'-');
        if negative {
            i += 1;
        }
        let int_start = i;
        i = match s.get(i) {
            Some(b'0') => i + 1,
            Some(b'1'..=b'9') => digits_end(s, i + 1),
            _ => return Err(()),
        };
        let int = &s[int_start..i];
        if !matches!(s.get(i), Some(b'.' | b'e' | b'E')) && (int[int.len() - 1] != b'0' || int == b"0") {
            // An integer without trailing zeros: canonical as written, but for `-0`.
            let start = if int == b"0" { int_start } else { self.i };
            out.extend_from_slice(&s[start..i]);
            self.i = i;
            return Ok(());
        }
        let mut fraction: &[u8] = &[];
        if s.get(i) == Some(&b'.') {
            let end = digits_end(s, i + 1);
            if end == i + 1 {
                return Err(());
            }
            fraction = &s[i + 1..end];
            i = end;
        }
        let mut exponent = 0;
        if let Some(b'e' | b'E') = s.get(i) {
            i += 1;
            let minus = s.get(i) == Some(&b'-');
            if let Some(b'-' | b'+') = s.get(i) {
                i += 1;
            }
            let end = digits_end(s, i);
            if end == i {
                return Err(());
            }
            let digits = &s[i..end];
            let digits = &digits[digits.iter().position(|&d| d != b'0').unwrap_or(digits.len())..];
            if digits.len() > 18 {
                return Err(());
            }
            exponent = digits.iter().fold(0, |n, &d| n * 10 + i64::from(d - b'0'));
            if minus {
                exponent = -exponent;
            }
            i = end;
        }
        self.i = i;
        push_decimal(negative, int, fraction, exponent, out);
        Ok(())
    }
}
