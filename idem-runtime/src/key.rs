//! Reading the `Idempotency-Key` header.
//!
//! A key arrives under `Idempotency-Key` or `X-Idempotency-Key` (plus one extra name a handler may
//! add). Its value is a Structured Field string (`"abc"`) or the same characters bare (`abc`).
//! After unquoting it is 1 to 255 visible ASCII characters. A repeated header line, a
//! comma-separated list, or two header names carrying different keys are rejected.
//!
//! A request may also say when its logical call began: a UUIDv7 key carries the time it was
//! minted ([`IdempotencyKey::uuid_v7_time`]), and [`REPEATABILITY_FIRST_SENT`] the time the
//! request was first sent. A request that began longer ago than its handler keeps responses is
//! refused rather than run again (see the guide's semantics chapter).

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

/// The standard header name.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The equivalent alias many production APIs accept.
pub const X_IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("x-idempotency-key");

/// When the request was first sent, as an HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`): the
/// header of the OASIS Repeatable Requests spec, read by idem as the time the request's logical
/// call began.
pub const REPEATABILITY_FIRST_SENT: HeaderName = HeaderName::from_static("repeatability-first-sent");

/// How far a client's clock may be from the server's: a request is refused as past its
/// lifetime when its call began more than the handler's `ttl` plus this long ago, and as dated in
/// the future when it begins more than this long from now. 5 minutes.
pub const MAX_CLOCK_SKEW: Duration = idem_rules::MAX_CLOCK_SKEW;

/// The longest key accepted, in characters.
pub const MAX_KEY_LEN: usize = 255;

/// A validated idempotency key: 1 to 255 visible ASCII characters.
///
/// The raw key only lives for the duration of a request; stores see a SHA-256 digest of it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses one header value: a Structured Field string or the same characters bare.
    ///
    /// ```
    /// use idem_runtime::key::IdempotencyKey;
    ///
    /// assert_eq!(IdempotencyKey::parse(b"\"8e03978e\"").unwrap().as_str(), "8e03978e");
    /// assert_eq!(IdempotencyKey::parse(b"8e03978e").unwrap().as_str(), "8e03978e");
    /// assert!(IdempotencyKey::parse(b"a, b").is_err());
    /// ```
    pub fn parse(value: &[u8]) -> Result<Self, KeyError> {
        parse_key(value).map(|key| Self(key.into_owned()))
    }

    /// Finds the key among `headers`: `Idempotency-Key`, `X-Idempotency-Key` and `extra`.
    ///
    /// `Ok(None)` means no key header is present at all.
    pub fn from_headers(headers: &HeaderMap, extra: Option<&HeaderName>) -> Result<Option<Self>, KeyError> {
        find_key(headers, extra).map(|key| key.map(|key| Self(key.into_owned())))
    }

    /// The key as the client sent it, unquoted.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The time a UUIDv7 key was minted (its 48-bit Unix millisecond timestamp); `None` for any
    /// other key. Only the RFC 9562 text form counts: 36 characters, `8-4-4-4-12` hex digits in
    /// either case, version 7 and the RFC variant.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use idem_runtime::key::IdempotencyKey;
    ///
    /// let key = IdempotencyKey::parse(b"0190d6a4-0000-7000-8000-000000000000").unwrap();
    /// assert_eq!(key.uuid_v7_time(), Some(UNIX_EPOCH + Duration::from_millis(0x0190_d6a4_0000)));
    /// let v4 = IdempotencyKey::parse(b"8e03978e-40d5-43e8-bc93-6894a57f9324").unwrap();
    /// assert_eq!(v4.uuid_v7_time(), None);
    /// ```
    pub fn uuid_v7_time(&self) -> Option<SystemTime> {
        uuid_v7_time(&self.0)
    }

    /// The key as a header value (bare form).
    pub fn to_header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.0).expect("a validated key is a valid header value")
    }
}

/// The time a UUIDv7 key was minted: its first 48 bits, Unix milliseconds. Only the RFC 9562
/// text form (`8-4-4-4-12` hex digits, either case) with version 7 and the RFC variant counts;
/// any other key carries no time.
pub(crate) fn uuid_v7_time(key: &str) -> Option<SystemTime> {
    let bytes = key.as_bytes();
    if bytes.len() != 36 || bytes[14] != b'7' || !matches!(bytes[19], b'8' | b'9' | b'a' | b'b' | b'A' | b'B') {
        return None;
    }
    let layout = bytes.iter().enumerate().all(|(i, &b)| match i {
        8 | 13 | 18 | 23 => b == b'-',
        _ => b.is_ascii_hexdigit(),
    });
    if !layout {
        return None;
    }
    let millis = bytes[..13].iter().filter(|&&b| b != b'-').fold(0u64, |n, &b| {
        // A hex digit, checked above.
        n << 4 | u64::from((b as char).to_digit(16).unwrap_or(0))
    });
    UNIX_EPOCH.checked_add(Duration::from_millis(millis))
}

/// [`IdempotencyKey::parse`], borrowing the key from `value` when it is there as it is (the
/// bare form): a request's key lives no longer than the request.
pub(crate) fn parse_key(value: &[u8]) -> Result<Cow<'_, str>, KeyError> {
    let value = trim_sp(value);
    let key = if value.first() == Some(&b'"') {
        Cow::Owned(parse_sf_string(value)?)
    } else {
        if value.contains(&b',') {
            return Err(KeyError::List);
        }
        Cow::Borrowed(value)
    };
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong(key.len()));
    }
    if let Some(&b) = key.iter().find(|b| !(0x21..=0x7e).contains(*b)) {
        return Err(KeyError::InvalidChar(b));
    }
    // Only visible ASCII remains, so this cannot fail.
    match key {
        Cow::Borrowed(key) => std::str::from_utf8(key).map(Cow::Borrowed).map_err(|_| KeyError::InvalidString),
        Cow::Owned(key) => String::from_utf8(key).map(Cow::Owned).map_err(|_| KeyError::InvalidString),
    }
}

/// [`IdempotencyKey::from_headers`], borrowing the key from `headers` when it can.
pub(crate) fn find_key<'a>(
    headers: &'a HeaderMap,
    extra: Option<&HeaderName>,
) -> Result<Option<Cow<'a, str>>, KeyError> {
    let standard = [IDEMPOTENCY_KEY, X_IDEMPOTENCY_KEY];
    let mut found: Option<(Cow<'a, str>, &HeaderName)> = None;
    for name in standard.iter().chain(extra) {
        let mut values = headers.get_all(name).iter();
        let Some(value) = values.next() else { continue };
        if values.next().is_some() {
            return Err(KeyError::Repeated(name.clone()));
        }
        let key = parse_key(value.as_bytes())?;
        match &found {
            Some((first, first_name)) if *first != key => {
                return Err(KeyError::Conflicting((*first_name).clone(), name.clone()));
            }
            Some(_) => {}
            None => found = Some((key, name)),
        }
    }
    Ok(found.map(|(key, _)| key))
}

impl fmt::Debug for IdempotencyKey {
    /// Keys are bearer-like secrets in some APIs: debug output never shows them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey(<{} chars>)", self.0.len())
    }
}

/// Why a key header was rejected (answered with a 400 problem).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The same key header appeared on more than one line.
    Repeated(HeaderName),
    /// The value is a comma-separated list.
    List,
    /// Two accepted header names carry different keys.
    Conflicting(HeaderName, HeaderName),
    /// The value is empty.
    Empty,
    /// The value is longer than 255 characters.
    TooLong(usize),
    /// The value has a character outside visible ASCII (0x21–0x7E).
    InvalidChar(u8),
    /// The value starts with `"` but is not a valid Structured Field string.
    InvalidString,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Repeated(name) => write!(f, "the {name} header appears more than once; send exactly one key"),
            Self::List => f.write_str("the key header holds a list; send exactly one key"),
            Self::Conflicting(a, b) => write!(f, "the {a} and {b} headers carry different keys"),
            Self::Empty => f.write_str("the key is empty; send 1 to 255 visible ASCII characters"),
            Self::TooLong(n) => write!(f, "the key is {n} characters long; at most {MAX_KEY_LEN} are allowed"),
            Self::InvalidChar(b) => {
                write!(f, "the key contains the byte 0x{b:02x}; only visible ASCII (0x21-0x7E) is allowed")
            }
            Self::InvalidString => {
                f.write_str("the key starts with '\"' but is not a valid quoted string (RFC 8941 sf-string)")
            }
        }
    }
}

impl std::error::Error for KeyError {}

fn trim_sp(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// RFC 8941 §4.2.5: `"` *( unescaped / "\" ( DQUOTE / "\" ) ) `"`, with nothing after it.
fn parse_sf_string(v: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 1;
    while i < v.len() {
        match v[i] {
            b'\\' => match v.get(i + 1) {
                Some(&c @ (b'"' | b'\\')) => {
                    out.push(c);
                    i += 2;
                }
                _ => return Err(KeyError::InvalidString),
            },
            b'"' => {
                let rest = &v[i + 1..];
                return match rest.first() {
                    None => Ok(out),
                    Some(b',') => Err(KeyError::List),
                    Some(_) => Err(KeyError::InvalidString),
                };
            }
            c @ 0x20..=0x7e => {
                out.push(c);
                i += 1;
            }
            _ => return Err(KeyError::InvalidString),
        }
    }
    Err(KeyError::InvalidString)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn both_forms_give_the_same_key() {
        let quoted = IdempotencyKey::parse(br#""a\"b\\c""#).unwrap();
        assert_eq!(quoted.as_str(), r#"a"b\c"#);
        assert_eq!(IdempotencyKey::parse(b"  abc ").unwrap().as_str(), "abc");
    }

    #[test]
    fn rejects_what_section_3_rejects() {
        assert_eq!(IdempotencyKey::parse(b""), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::parse(b"\"\""), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::parse(b"a,b"), Err(KeyError::List));
        assert_eq!(IdempotencyKey::parse(b"\"a\", \"b\""), Err(KeyError::List));
        assert_eq!(IdempotencyKey::parse(b"\"a b\""), Err(KeyError::InvalidChar(b' ')));
        assert_eq!(IdempotencyKey::parse(b"\"abc"), Err(KeyError::InvalidString));
        assert_eq!(IdempotencyKey::parse(b"\"abc\";p=1"), Err(KeyError::InvalidString));
        assert_eq!(IdempotencyKey::parse(&[b'a'; 256]), Err(KeyError::TooLong(256)));
        assert!(IdempotencyKey::parse(&[b'a'; 255]).is_ok());
        assert_eq!(IdempotencyKey::parse(b"caf\xc3\xa9"), Err(KeyError::InvalidChar(0xc3)));
    }

    #[test]
    fn header_rules() {
        let h = headers(&[("idempotency-key", "a"), ("x-idempotency-key", "\"a\"")]);
        assert_eq!(IdempotencyKey::from_headers(&h, None).unwrap().unwrap().as_str(), "a");
        let h = headers(&[("idempotency-key", "a"), ("x-idempotency-key", "b")]);
        assert!(matches!(IdempotencyKey::from_headers(&h, None), Err(KeyError::Conflicting(..))));
        let h = headers(&[("idempotency-key", "a"), ("idempotency-key", "a")]);
        assert!(matches!(IdempotencyKey::from_headers(&h, None), Err(KeyError::Repeated(_))));
        let extra = HeaderName::from_static("request-id");
        let h = headers(&[("request-id", "r1")]);
        assert_eq!(IdempotencyKey::from_headers(&h, Some(&extra)).unwrap().unwrap().as_str(), "r1");
        assert_eq!(IdempotencyKey::from_headers(&h, None), Ok(None));
    }
}
