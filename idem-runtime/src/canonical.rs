//! Canonical JSON in one pass, without building a document tree: object members sorted by
//! key, no insignificant whitespace, strings with their escapes normalized, floats in one
//! notation. Only determinism matters: equal JSON values give equal bytes.

/// The deepest nesting handled; deeper input is fingerprinted as raw bytes (serde_json
/// rejects it anyway).
const MAX_DEPTH: usize = 128;

/// Appends the canonical form of the JSON document `input` to `out`; `Err` if it is not JSON.
pub(crate) fn canonical_json(input: &[u8], out: &mut Vec<u8>) -> Result<(), ()> {
    let mut parser = Parser { s: input, i: 0, members: Vec::new(), region: Vec::new() };
    parser.value(out, 0)?;
    parser.ws();
    if parser.i == input.len() {
        Ok(())
    } else {
        Err(())
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    /// Member spans of the objects being read, innermost last (one stack for all objects).
    members: Vec<(usize, usize, usize)>,
    /// Scratch copy of an object's members while they are reordered.
    region: Vec<u8>,
}

impl Parser<'_> {
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

    fn object(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), ()> {
        self.i += 1;
        out.push(b'{');
        self.ws();
        if self.s.get(self.i) == Some(&b'}') {
            self.i += 1;
            out.push(b'}');
            return Ok(());
        }
        let start = out.len();
        // (start, end of key, end) of each member's canonical bytes, commas excluded.
        let base = self.members.len();
        loop {
            self.ws();
            if self.s.get(self.i) != Some(&b'"') {
                return Err(());
            }
            if self.members.len() > base {
                out.push(b',');
            }
            let member = out.len();
            self.string(out)?;
            let key_end = out.len();
            self.eat(b':')?;
            out.push(b':');
            self.value(out, depth + 1)?;
            self.members.push((member, key_end, out.len()));
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => break,
                _ => return Err(()),
            }
        }
        self.i += 1;
        let members = &mut self.members[base..];
        if !members.windows(2).all(|w| out[w[0].0..w[0].1] <= out[w[1].0..w[1].1]) {
            self.region.clear();
            self.region.extend_from_slice(&out[start..]);
            let region = &self.region;
            members.sort_by(|a, b| region[a.0 - start..a.1 - start].cmp(&region[b.0 - start..b.1 - start]));
            out.truncate(start);
            for (n, (from, _, to)) in members.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&region[from - start..to - start]);
            }
        }
        self.members.truncate(base);
        out.push(b'}');
        Ok(())
    }

    fn string(&mut self, out: &mut Vec<u8>) -> Result<(), ()> {
        let open = self.i;
        let body = &self.s[open + 1..];
        let stop = memchr::memchr2(b'"', b'\\', body).ok_or(())?;
        if body[stop] == b'"' {
            // No escapes: the text is already canonical.
            out.extend_from_slice(&self.s[open..open + stop + 2]);
            self.i = open + stop + 2;
            return Ok(());
        }
        // Escapes: write each character as serde_json would (its escaping is minimal).
        out.push(b'"');
        out.extend_from_slice(&body[..stop]);
        let mut j = stop;
        loop {
            let b = *body.get(j).ok_or(())?;
            j += 1;
            match b {
                b'"' => break,
                b'\\' => {
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
                _ => out.push(b),
            }
        }
        out.push(b'"');
        self.i = open + 1 + j;
        Ok(())
    }

    fn number(&mut self, out: &mut Vec<u8>) -> Result<(), ()> {
        let start = self.i;
        let mut float = false;
        while let Some(&b) = self.s.get(self.i) {
            match b {
                b'0'..=b'9' | b'-' | b'+' => {}
                b'.' | b'e' | b'E' => float = true,
                _ => break,
            }
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|_| ())?;
        if text.is_empty() || text == "-" {
            return Err(());
        }
        if float {
            let value: f64 = text.parse().map_err(|_| ())?;
            if !value.is_finite() {
                return Err(());
            }
            use std::io::Write as _;
            write!(out, "{value:e}").map_err(|_| ())
        } else {
            out.extend_from_slice(if text == "-0" { b"0" } else { text.as_bytes() });
            Ok(())
        }
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

fn hex4(digits: &[u8]) -> Result<u32, ()> {
    let text = std::str::from_utf8(digits).map_err(|_| ())?;
    u32::from_str_radix(text, 16).map_err(|_| ())
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
    fn rejects_what_is_not_json() {
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "tru", "1 2", "\"\\x\"", "\"\\ud800\"", "{1:2}"] {
            assert!(canonical_json(bad.as_bytes(), &mut Vec::new()).is_err(), "{bad}");
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
