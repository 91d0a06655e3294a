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

/// The deepest nesting handled; deeper input is fingerprinted as raw bytes (serde_json
/// rejects it anyway).
const MAX_DEPTH: usize = 128;

/// Appends the canonical form of the JSON document `input` to `out`; `Err` (and `out` as it
/// was) if it is not JSON.
pub(crate) fn canonical_json(input: &[u8], out: &mut Vec<u8>) -> Result<(), ()> {
    let base = out.len();
    let mut parser = Parser {
        s: input,
        i: 0,
        base,
        open: Vec::new(),
        noted: Vec::new(),
        members: Vec::new(),
        reordered: 0,
        region: Vec::new(),
    };
    if parser.document(out).is_err() {
        out.truncate(base);
        return Err(());
    }
    if !parser.noted.is_empty() {
        let text = out.split_off(base);
        let mut writer = Writer { text: &text, noted: &parser.noted, members: &parser.members, stack: Vec::new() };
        writer.span(0..text.len(), 0..parser.noted.len(), out);
    }
    Ok(())
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

    fn string(&mut self, out: &mut Vec<u8>) -> Result<(), ()> {
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
    fn number(&mut self, out: &mut Vec<u8>) -> Result<(), ()> {
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

/// Writes the canonical text again, with the noted objects' members in canonical order.
struct Writer<'a> {
    text: &'a [u8],
    noted: &'a [Noted],
    members: &'a [Member],
    /// The outermost noted objects of the spans being written, each span's last first.
    stack: Vec<usize>,
}

impl Writer<'_> {
    /// Writes `text[span]`, where the objects noted inside are `noted[inner]`.
    fn span(&mut self, span: Range<usize>, inner: Range<usize>, out: &mut Vec<u8>) {
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
fn has_control(text: &[u8]) -> bool {
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

fn digits_end(s: &[u8], mut i: usize) -> usize {
    while let Some(b'0'..=b'9') = s.get(i) {
        i += 1;
    }
    i
}

/// Writes `-int.fraction × 10^exponent` (`-` if `negative`) in canonical form: its significant
/// digits, then the exponent unless it is zero.
fn push_decimal(negative: bool, int: &[u8], fraction: &[u8], exponent: i64, out: &mut Vec<u8>) {
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
fn push_escaped(c: char, out: &mut Vec<u8>) {
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
fn hex4(digits: &[u8]) -> Result<u32, ()> {
    digits.iter().try_fold(0, |n, &d| Ok(n << 4 | char::from(d).to_digit(16).ok_or(())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        let mut out = Vec::new();
        canonical_json(s.as_bytes(), &mut out).unwrap_or_else(|()| panic!("not JSON: {s}"));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn sorts_members_and_drops_whitespace() {
        assert_eq!(canon(r#" { "b" : [1, {"d":1,"c":2}], "a":null } "#), r#"{"a":null,"b":[1,{"c":2,"d":1}]}"#);
        assert_eq!(canon("{}"), "{}");
        assert_eq!(canon("[ ]"), "[]");
    }

    #[test]
    fn normalizes_strings_and_numbers() {
        assert_eq!(canon(r#""\u00e9\/\u0041""#), canon("\"é/A\""));
        assert_eq!(canon(r#""\ud83d\ude00""#), canon("\"😀\""));
        assert_eq!(canon(r#""a\nb""#), r#""a\nb""#);
        assert_eq!(canon(r#""\u0001\"\\""#), serde_json::to_string("\u{1}\"\\").unwrap());
        assert_eq!(canon("1.0"), canon("1e0"));
        assert_eq!(canon("100.0"), canon("1E2"));
        assert_eq!(canon("-0"), "0");
        assert_ne!(canon("1"), canon("2"));
    }

    #[test]
    fn numbers_are_equal_exactly_when_their_decimal_values_are() {
        for same in [
            &["1", "1.0", "1e0", "10e-1", "0.1E1", "1.000", "0.00001e5", "1E+0", "100e-2"][..],
            &["0", "-0", "0.0", "-0.0e5", "0e-7", "0.000E+3"],
            &["100", "1e2", "1.00e2", "10E1", "100.0", "0.001e5"],
            &["-1.5", "-15e-1", "-0.15e1", "-150E-2", "-1.50"],
            &["123456789012345678901234567890", "1.23456789012345678901234567890e29"],
        ] {
            for n in same {
                assert_eq!(canon(n), canon(same[0]), "{n} vs {}", same[0]);
            }
        }
        for (a, b) in [
            ("1.0", "1.00000000000000001"),
            ("1", "-1"),
            ("1e2", "1e3"),
            ("12", "21"),
            ("1.5", "15"),
            ("9007199254740993", "9007199254740992"),
            ("1e-400", "0"),
            ("0.1", "0.10000000000000001"),
        ] {
            assert_ne!(canon(a), canon(b), "{a} vs {b}");
        }
    }

    #[test]
    fn rejects_numbers_outside_the_json_grammar() {
        for bad in [
            "01",
            "-01",
            "+1",
            ".5",
            "1.",
            "1.e5",
            "-",
            "1e",
            "1e+",
            "1E-",
            "0x10",
            "1.5.3",
            "--1",
            "1e5.5",
            "Infinity",
            "NaN",
            "[1,01]",
            "[1.]",
            "{\"a\":.5}",
            "1ee5",
            "1e99999999999999999999",
        ] {
            assert!(canonical_json(bad.as_bytes(), &mut Vec::new()).is_err(), "{bad}");
        }
        // An exponent is read exactly up to 18 digits, leading zeros aside.
        assert_eq!(canon("1e000000000000000000000000000002"), canon("100"));
        assert_ne!(canon("1e999999999999999999"), canon("1e999999999999999998"));
        assert_eq!(canon("10e-999999999999999999"), canon("1e-999999999999999998"));
    }

    #[test]
    fn rejects_raw_control_characters_in_strings() {
        for bad in ["\"a\nb\"", "\"\t\"", "{\"k\u{1}\":1}", "\"\\u00e9\u{1f}\"", "\"\u{0}\""] {
            assert!(canonical_json(bad.as_bytes(), &mut Vec::new()).is_err(), "{bad:?}");
        }
        assert_eq!(canon("\"a\u{7f}\""), "\"a\u{7f}\"");
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_not_json() {
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(canon(&nested(MAX_DEPTH)), nested(MAX_DEPTH));
        assert!(canonical_json(nested(MAX_DEPTH + 1).as_bytes(), &mut Vec::new()).is_err());
        let objects = |depth: usize| format!("{}1{}", "{\"b\":0,\"a\":".repeat(depth), "}".repeat(depth));
        assert_eq!(
            canon(&objects(MAX_DEPTH)),
            format!("{}1{}", "{\"a\":".repeat(MAX_DEPTH), ",\"b\":0}".repeat(MAX_DEPTH))
        );
        assert!(canonical_json(objects(MAX_DEPTH + 1).as_bytes(), &mut Vec::new()).is_err());
    }

    #[test]
    fn sorts_every_level_of_deep_nesting() {
        // 100 levels (an object, then an array), objects in and out of order.
        let mut value = serde_json::json!({"z": "0", "a": [{"y": "1", "b": "2"}]});
        let mut text = r#"{"z":"0","a":[{"y":"1","b":"2"}]}"#.to_owned();
        for level in 0..50 {
            let (first, second) = if level % 3 == 0 { ("a", "m") } else { ("q", "c") };
            value = serde_json::json!({ first: "s", second: [value.clone(), {"y": level.to_string(), "b": "x"}] });
            text = format!(r#"{{"{first}":"s","{second}":[{text},{{"y":"{level}","b":"x"}}]}}"#);
        }
        assert_eq!(canon(&text), serde_json::to_string(&value).unwrap());
    }

    #[test]
    fn appends_to_what_the_buffer_holds() {
        let mut out = b"prefix".to_vec();
        canonical_json(br#"{"b":[{"d":1,"c":2}],"a":1}"#, &mut out).unwrap();
        assert_eq!(out, br#"prefix{"a":1,"b":[{"c":2,"d":1}]}"#);
        let mut out = b"prefix".to_vec();
        canonical_json(br#"{"a":1,"b":[{"c":2,"d":1}]}"#, &mut out).unwrap();
        assert_eq!(out, br#"prefix{"a":1,"b":[{"c":2,"d":1}]}"#);
    }

    #[test]
    fn duplicate_keys_keep_their_order() {
        // serde_json keeps the last of duplicate keys: swapping them changes the value.
        assert_ne!(canon(r#"{"a":1,"a":2}"#), canon(r#"{"a":2,"a":1}"#));
        assert_eq!(canon(r#"{"b":0,"a":1,"a":2}"#), canon(r#"{"a":1,"b":0,"a":2}"#));
    }

    #[test]
    fn rejects_what_is_not_json() {
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "tru", "1 2", "\"\\x\"", "\"\\ud800\"", "{1:2}", "\"\\u+041\""] {
            assert!(canonical_json(bad.as_bytes(), &mut Vec::new()).is_err(), "{bad}");
        }
    }

    /// `a` and `b` are the same value, numbers compared as the floats serde_json reads them.
    fn same_value(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (a, b) {
            // serde_json reads floats with best-effort precision: two notations of one decimal
            // may read an ulp apart.
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
            }
            (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y)),
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
            }
            _ => a == b,
        }
    }

    fn document() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            "-?(0|[1-9][0-9]{0,12})(\\.[0-9]{1,6})?([eE][+-]?[0-9]{1,2})?",
            "[a-c\"\\\\é]{0,3}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        ];
        leaf.prop_recursive(6, 64, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(|items| format!("[ {} ]", items.join(" , "))),
                prop::collection::btree_map("[a-d]{0,2}", inner, 0..5).prop_map(|members| {
                    // Members in reverse order, so that every object with two of them is reordered.
                    let members: Vec<_> = members.iter().rev().map(|(k, v)| format!("\"{k}\" : {v}")).collect();
                    format!("{{ {} }}", members.join(", "))
                }),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// The output is JSON with the input's value, and already canonical.
        #[test]
        fn output_is_the_same_value_in_canonical_form(doc in document()) {
            let out = canon(&doc);
            let read: serde_json::Value = serde_json::from_str(&out).unwrap();
            proptest::prop_assert!(same_value(&read, &serde_json::from_str(&doc).unwrap()), "{} -> {}", doc, out);
            proptest::prop_assert_eq!(canon(&out), out);
        }
    }

    #[test]
    fn agrees_with_serde_json_on_equality() {
        let docs = [
            r#"{"item":"book","qty":1,"tags":["a","b"],"meta":{"x":1.5,"y":null}}"#,
            r#"{"meta":{"y":null,"x":15e-1},"tags":["a","b"],"qty":1,"item":"book"}"#,
            r#"{"item":"bo\u006fk","qty":1,"tags":["a","b"],"meta":{"x":1.5,"y":null}}"#,
            r#"{"item":"book","qty":2,"tags":["a","b"],"meta":{"x":1.5,"y":null}}"#,
            r#"{"item":"book","qty":1,"tags":["b","a"],"meta":{"x":1.5,"y":null}}"#,
        ];
        for a in docs {
            for b in docs {
                let same = serde_json::from_str::<serde_json::Value>(a).unwrap()
                    == serde_json::from_str::<serde_json::Value>(b).unwrap();
                assert_eq!(canon(a) == canon(b), same, "{a} vs {b}");
            }
        }
    }
}
