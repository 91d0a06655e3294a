//! Generated JSON values, a second way of writing each (the same value), and changes of meaning
//! (another value): what the fingerprint properties check equivalence and injectivity with.

use proptest::prelude::*;
use serde_json::{Map, Number, Value};

pub fn value() -> impl Strategy<Value = Value> {
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
pub fn rewrite(value: &Value, out: &mut String) {
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

/// The number of nodes (values at any depth) in `v`.
pub fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Changes the meaning of the `node`th node of `v` (pre-order): another number, a string with a
/// character replaced, a key dropped or renamed, two different array items swapped, and so on.
pub fn change(v: &mut Value, node: &mut usize, how: prop::sample::Index, with: prop::sample::Index) -> bool {
    if *node > 0 {
        *node -= 1;
        return match v {
            Value::Array(items) => items.iter_mut().any(|item| change(item, node, how, with)),
            Value::Object(map) => map.values_mut().any(|item| change(item, node, how, with)),
            _ => false,
        };
    }
    match v {
        Value::Null => *v = Value::Bool(false),
        Value::Bool(b) => *b = !*b,
        Value::Number(n) => {
            *n = match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Number::from(i.wrapping_add(1 + how.index(1000) as i64)),
                // Another float: one mantissa bit flipped (never -0.0 for 0.0, an equal value).
                (None, Some(f)) => Number::from_f64(f64::from_bits(f.to_bits() ^ (1 << how.index(52)))).unwrap(),
                (None, None) => unreachable!("a generated number is an i64 or a float"),
            }
        }
        Value::String(s) => {
            let mut chars: Vec<char> = s.chars().collect();
            let other = |c: char| if c == 'q' { 'r' } else { 'q' };
            match chars.len() {
                0 => chars.push('q'),
                n => {
                    let i = how.index(n);
                    chars[i] = other(chars[i]);
                }
            }
            *s = chars.into_iter().collect();
        }
        Value::Array(items) => {
            let pairs: Vec<(usize, usize)> = (0..items.len())
                .flat_map(|i| (i + 1..items.len()).map(move |j| (i, j)))
                .filter(|&(i, j)| items[i] != items[j])
                .collect();
            match (pairs.len(), how.index(3)) {
                (0, _) | (_, 0) if !items.is_empty() => {
                    items.remove(with.index(items.len()));
                }
                (0, _) | (_, 0) => items.push(Value::Null),
                (n, _) => {
                    let (i, j) = pairs[with.index(n)];
                    items.swap(i, j);
                }
            }
        }
        Value::Object(map) => match map.keys().nth(with.index(map.len().max(1))).cloned() {
            Some(key) if how.index(2) == 0 => {
                map.remove(&key);
            }
            Some(key) => {
                let value = map.remove(&key).unwrap();
                let mut renamed = format!("{key}q");
                while map.contains_key(&renamed) {
                    renamed.push('q');
                }
                map.insert(renamed, value);
            }
            None => {
                map.insert("q".into(), Value::Null);
            }
        },
    }
    true
}

/// `v` written the other way: [`rewrite`] into a new string.
pub fn rewritten(v: &Value) -> String {
    let mut out = String::new();
    rewrite(v, &mut out);
    out
}

/// `v` with the meaning of one of its nodes changed: [`change`] on a copy, the node chosen by `at`.
pub fn changed(v: &Value, at: prop::sample::Index, how: prop::sample::Index, with: prop::sample::Index) -> Value {
    let mut changed = v.clone();
    let mut node = at.index(count_nodes(v));
    change(&mut changed, &mut node, how, with);
    changed
}
