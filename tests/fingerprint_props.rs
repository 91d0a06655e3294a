//! Property tests for the canonical JSON fingerprint (SPEC §6): the same JSON value written any
//! way (key order, whitespace, escapes) fingerprints the same, and two fingerprints are equal
//! only for equal values — a false match would replay one request's response to another.

use idem_runtime::fingerprint::FingerprintWriter;
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

fn digest(text: &str) -> [u8; 32] {
    let mut w = FingerprintWriter::new();
    w.json(text.as_bytes());
    w.finish()
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        (-1e12f64..1e12).prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        "[a-z\"\\\\\u{1}\n é😀/]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z\"é]{0,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// The same value written differently: keys in reverse order, whitespace everywhere, every
/// non-ASCII character and the slash escaped.
fn rewrite(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            out.push_str("{ ");
            for (i, (k, v)) in map.iter().rev().enumerate() {
                if i > 0 {
                    out.push_str(" ,\n ");
                }
                escape(k, out);
                out.push_str(" :\t");
                rewrite(v, out);
            }
            out.push_str(" }");
        }
        Value::Array(items) => {
            out.push_str("[ ");
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(" , ");
                }
                rewrite(v, out);
            }
            out.push_str(" ]");
        }
        Value::String(s) => escape(s, out),
        other => out.push_str(&other.to_string()),
    }
}

fn escape(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\/"),
            c if (c as u32) < 0x20 || !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn one_value_written_two_ways_fingerprints_the_same(v in value()) {
        let mut other = String::new();
        rewrite(&v, &mut other);
        prop_assert_eq!(digest(&v.to_string()), digest(&other), "{} vs {}", v, other);
    }

    #[test]
    fn equal_fingerprints_only_for_equal_values(a in value(), b in value()) {
        if digest(&a.to_string()) == digest(&b.to_string()) {
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut w = FingerprintWriter::new();
        w.json(&bytes);
        let _ = w.finish();
    }
}
