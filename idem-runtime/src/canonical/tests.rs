//! Unit tests of the canonical form.
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
