//! Property tests for the key parser: it never panics and accepts exactly the
//! language of §3.

use axum::http::{HeaderMap, HeaderValue};
use idem_runtime::key::IdempotencyKey;
use proptest::prelude::*;

/// §3 written independently of the parser: what the key is, or `None` for a 400.
fn oracle(value: &[u8]) -> Option<Vec<u8>> {
    let is_ws = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ws(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !is_ws(b)).map_or(start, |i| i + 1);
    let value = &value[start..end];
    let key = if let Some(rest) = value.strip_prefix(b"\"") {
        // sf-string: the closing quote must be the last byte.
        let inner = rest.strip_suffix(b"\"")?;
        let mut out = Vec::new();
        let mut escaped = false;
        for &b in inner {
            if escaped {
                if b != b'"' && b != b'\\' {
                    return None;
                }
                out.push(b);
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' || !(0x20..=0x7e).contains(&b) {
                return None;
            } else {
                out.push(b);
            }
        }
        if escaped {
            return None;
        }
        out
    } else {
        if value.contains(&b',') {
            return None;
        }
        value.to_vec()
    };
    let visible = key.iter().all(|b| (0x21..=0x7e).contains(b));
    (visible && (1..=255).contains(&key.len())).then_some(key)
}

fn key_char() -> impl Strategy<Value = u8> {
    0x21u8..=0x7e
}

fn quote(key: &[u8]) -> Vec<u8> {
    let mut out = vec![b'"'];
    for &b in key {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn never_panics_and_agrees_with_the_spec(value in proptest::collection::vec(any::<u8>(), 0..300)) {
        let parsed = IdempotencyKey::parse(&value).ok().map(|k| k.as_str().as_bytes().to_vec());
        prop_assert_eq!(parsed, oracle(&value));
    }

    #[test]
    fn agrees_with_the_spec_near_the_boundary(
        value in proptest::collection::vec(prop_oneof![key_char(), Just(b'"'), Just(b'\\'), Just(b','), Just(b' '), Just(0x7f), Just(0x80)], 0..8)
    ) {
        let parsed = IdempotencyKey::parse(&value).ok().map(|k| k.as_str().as_bytes().to_vec());
        prop_assert_eq!(parsed, oracle(&value));
    }

    #[test]
    fn every_valid_key_is_accepted_bare_and_quoted(key in proptest::collection::vec(key_char(), 1..=255)) {
        let quoted = IdempotencyKey::parse(&quote(&key)).unwrap();
        prop_assert_eq!(quoted.as_str().as_bytes(), &key[..]);
        if !key.contains(&b',') && key[0] != b'"' {
            let bare = IdempotencyKey::parse(&key).unwrap();
            prop_assert_eq!(bare.as_str().as_bytes(), &key[..]);
        }
    }

    #[test]
    fn keys_over_255_characters_are_rejected(key in proptest::collection::vec(key_char(), 256..400)) {
        prop_assert!(IdempotencyKey::parse(&quote(&key)).is_err());
    }

    #[test]
    fn header_lookup_never_panics(a in proptest::collection::vec(any::<u8>(), 0..40), b in proptest::collection::vec(any::<u8>(), 0..40)) {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&a) {
            headers.append("idempotency-key", v);
        }
        if let Ok(v) = HeaderValue::from_bytes(&b) {
            headers.append("x-idempotency-key", v);
        }
        let _ = IdempotencyKey::from_headers(&headers, None);
    }
}
