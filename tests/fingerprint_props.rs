//! Property tests for the canonical JSON fingerprint: the same JSON value written any way (key
//! order, whitespace, escapes, number notation) fingerprints the same, and a change of meaning
//! changes the fingerprint — a false match would replay one request's response to another.

mod common;

use common::json_values::{changed, rewritten, value};
use common::{app, post_to};
use idem_runtime::fingerprint::{canonicalized_on_this_thread, FingerprintWriter};
use proptest::prelude::*;

fn digest(text: &str) -> [u8; 32] {
    let mut w = FingerprintWriter::new();
    w.json(text.as_bytes());
    w.finish()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn one_value_written_two_ways_fingerprints_the_same(v in value()) {
        let other = rewritten(&v);
        prop_assert_eq!(digest(&v.to_string()), digest(&other), "{} vs {}", v, other);
    }

    #[test]
    fn a_change_of_meaning_changes_the_fingerprint(
        v in value(),
        at in any::<prop::sample::Index>(),
        how in any::<prop::sample::Index>(),
        with in any::<prop::sample::Index>(),
    ) {
        let changed = changed(&v, at, how, with);
        prop_assert_ne!(&changed, &v);
        prop_assert_ne!(digest(&v.to_string()), digest(&changed.to_string()), "{} vs {}", v, changed);
    }

    #[test]
    fn one_number_in_any_notation_fingerprints_the_same(
        number in decimal(),
        notations in prop::collection::vec(notation(), 2..5),
    ) {
        let texts: Vec<_> = notations.iter().map(|n| n.write(&number)).collect();
        for text in &texts {
            prop_assert_eq!(digest(text), digest(&texts[0]), "{} vs {}", text, texts[0]);
            let wrapped = format!("{{\"amount\": {text}}}");
            prop_assert_eq!(digest(&wrapped), digest(&format!("{{\"amount\":{}}}", texts[0])));
        }
    }

    #[test]
    fn two_different_decimals_never_fingerprint_the_same(
        a in decimal(),
        change in prop::sample::select(DecimalChange::ALL.to_vec()),
        by in any::<prop::sample::Index>(),
        notations in (notation(), notation()),
    ) {
        let b = change.apply(&a, by);
        let (ta, tb) = (notations.0.write(&a), notations.1.write(&b));
        prop_assert_eq!(digest(&ta) == digest(&tb), a.normalized() == b.normalized(), "{} vs {}", ta, tb);
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut w = FingerprintWriter::new();
        w.json(&bytes);
        let _ = w.finish();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Through a handler, one key: the first request runs; retries replay whether they send the
    /// same bytes (answered from the digest of the last body) or the value written another way
    /// (canonicalized); a changed value is refused, and the original bytes still replay after it.
    #[test]
    fn retries_replay_however_the_value_is_written_and_a_changed_value_is_refused(
        v in value(),
        at in any::<prop::sample::Index>(),
        how in any::<prop::sample::Index>(),
        with in any::<prop::sample::Index>(),
    ) {
        let rewritten = rewritten(&v);
        let (original, changed) = (v.to_string(), changed(&v, at, how, with).to_string());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (app, hits) = app();
            let send = |body: &str| send(&app, "k", body.to_owned());
            let first = send(&original).await;
            prop_assert_eq!(first.status.as_u16(), 201);
            for body in [&original, &rewritten, &original] {
                let retry = send(body).await;
                prop_assert!(retry.replayed(), "{} after {}", body, original);
                prop_assert_eq!(&retry.body, &first.body);
            }
            send(&changed).await.assert_problem(422, "urn:idem:problem:key-reused");
            prop_assert!(send(&original).await.replayed(), "{} after {}", original, changed);
            prop_assert_eq!(hits.get("required"), 1);
            Ok(())
        })?;
    }
}

/// An exact decimal: `-`? `digits` × 10^`exponent`, digits possibly with leading or trailing zeros.
#[derive(Debug, Clone)]
struct Decimal {
    negative: bool,
    digits: String,
    exponent: i64,
}

impl Decimal {
    /// Its value as (sign, digits without leading or trailing zeros, exponent); zero has one form.
    fn normalized(&self) -> (bool, String, i64) {
        let digits = self.digits.trim_start_matches('0');
        let significant = digits.trim_end_matches('0');
        if significant.is_empty() {
            return (false, String::new(), 0);
        }
        let exponent = self.exponent + (digits.len() - significant.len()) as i64;
        (self.negative, significant.to_owned(), exponent)
    }
}

fn decimal() -> impl Strategy<Value = Decimal> {
    (any::<bool>(), "[0-9]{1,30}", prop_oneof![-3i64..3, -40i64..40]).prop_map(|(negative, digits, exponent)| Decimal {
        negative,
        digits,
        exponent,
    })
}

/// A change to a decimal that may or may not change its value.
#[derive(Debug, Clone, Copy)]
enum DecimalChange {
    /// One digit replaced by another.
    Digit,
    /// A digit `1` appended far past the others (`1.0` -> `1.00000000000000001`).
    FarDigit,
    /// The exponent moved by one.
    Exponent,
    /// The sign flipped (the same value for zero).
    Sign,
    /// Trailing zeros appended and the exponent lowered to match (the same value).
    Zeros,
}

impl DecimalChange {
    const ALL: [Self; 5] = [Self::Digit, Self::FarDigit, Self::Exponent, Self::Sign, Self::Zeros];

    fn apply(self, d: &Decimal, by: prop::sample::Index) -> Decimal {
        let mut d = d.clone();
        match self {
            Self::Digit => {
                let i = by.index(d.digits.len());
                let old = d.digits.as_bytes()[i];
                let new = b'0' + (old - b'0' + 1 + by.index(9) as u8) % 10;
                d.digits.replace_range(i..=i, std::str::from_utf8(&[new]).unwrap());
            }
            Self::FarDigit => {
                let zeros = 10 + by.index(20);
                d.digits.push_str(&"0".repeat(zeros));
                d.digits.push('1');
                d.exponent -= zeros as i64 + 1;
            }
            Self::Exponent => d.exponent += if by.index(2) == 0 { 1 } else { -1 },
            Self::Sign => d.negative = !d.negative,
            Self::Zeros => {
                let zeros = 1 + by.index(5);
                d.digits.push_str(&"0".repeat(zeros));
                d.exponent -= zeros as i64;
            }
        }
        d
    }
}

/// How to write a decimal as a JSON number literal.
#[derive(Debug, Clone)]
struct Notation {
    /// Zeros added before and after the digits (the exponent compensates for those after).
    leading: usize,
    trailing: usize,
    /// Where the decimal point goes among the padded digits.
    point: prop::sample::Index,
    /// `e` or `E`, `+` on a positive exponent, zeros before the exponent's digits.
    upper: bool,
    plus: bool,
    exponent_zeros: usize,
    /// Write `e0` when the exponent is zero.
    always_exponent: bool,
}

impl Notation {
    fn write(&self, d: &Decimal) -> String {
        let padded = format!("{}{}{}", "0".repeat(self.leading), d.digits, "0".repeat(self.trailing));
        let point = 1 + self.point.index(padded.len());
        let (int, frac) = padded.split_at(point);
        let int = match int.trim_start_matches('0') {
            "" => "0",
            int => int,
        };
        let exponent = d.exponent - self.trailing as i64 + frac.len() as i64;
        let mut text = String::new();
        if d.negative {
            text.push('-');
        }
        text.push_str(int);
        if !frac.is_empty() {
            text.push('.');
            text.push_str(frac);
        }
        if exponent != 0 || self.always_exponent {
            text.push(if self.upper { 'E' } else { 'e' });
            match exponent < 0 {
                true => text.push('-'),
                false if self.plus => text.push('+'),
                false => {}
            }
            text.push_str(&"0".repeat(self.exponent_zeros));
            text.push_str(&exponent.unsigned_abs().to_string());
        }
        text
    }
}

fn notation() -> impl Strategy<Value = Notation> {
    (0..4usize, 0..4usize, any::<prop::sample::Index>(), any::<bool>(), any::<bool>(), 0..3usize, any::<bool>())
        .prop_map(|(leading, trailing, point, upper, plus, exponent_zeros, always_exponent)| Notation {
            leading,
            trailing,
            point,
            upper,
            plus,
            exponent_zeros,
            always_exponent,
        })
}

/// Through a handler: a decimal-precise amount that a float would round to the first one's is
/// another request, never a replay of the first.
#[tokio::test]
async fn amounts_equal_only_as_floats_are_different_requests() {
    let (app, hits) = app();
    assert_eq!(post_to("/required").key("pay").json(r#"{"amount":1.0}"#).send(&app).await.status, 201);
    post_to("/required")
        .key("pay")
        .json(r#"{"amount":1.00000000000000001}"#)
        .send(&app)
        .await
        .assert_problem(422, "urn:idem:problem:key-reused");
    let same = post_to("/required").key("pay").json(r#"{ "amount" : 10e-1 }"#).send(&app).await;
    assert!(same.replayed(), "1.0 and 10e-1 are one amount");
    assert_eq!(hits.get("required"), 1);
}

/// Sends `body` to the `/required` handler with `key`.
async fn send(app: &axum::Router, key: &str, body: String) -> common::Reply {
    post_to("/required").key(key).json(&body).send(app).await
}

/// A retry sending the same bytes as the request that ran is answered without canonicalizing its
/// body: the digest of the last body fingerprinted for its key serves. The fingerprint is the
/// canonical one all the same: a retry written differently replays too, a different body is
/// refused, and the same bytes under another key are another request.
#[tokio::test]
async fn a_byte_identical_retry_replays_without_canonicalizing_its_body() {
    let (app, hits) = app();
    let body = r#"{"qty": 2, "item": "book", "tags": ["a", "b"]}"#;
    let send = |key: &'static str, body: &'static str| send(&app, key, body.to_owned());
    let canonicalized = canonicalized_on_this_thread();
    let first = send("order-1", body).await;
    assert_eq!(first.status, 201);
    assert_eq!(canonicalized_on_this_thread() - canonicalized, 1, "the first request's body is canonicalized");

    for _ in 0..3 {
        let canonicalized = canonicalized_on_this_thread();
        let retry = send("order-1", body).await;
        assert!(retry.replayed());
        assert_eq!(retry.body, first.body);
        assert_eq!(canonicalized_on_this_thread(), canonicalized, "a byte-identical retry is not canonicalized");
    }

    let canonicalized = canonicalized_on_this_thread();
    let rewritten = send("order-1", r#"{"tags":["a","b"],"item":"book","qty":2}"#).await;
    assert!(rewritten.replayed(), "the same value written differently replays");
    assert_eq!(canonicalized_on_this_thread() - canonicalized, 1, "bytes that differ are canonicalized");

    send("order-1", r#"{"qty": 3, "item": "book", "tags": ["a", "b"]}"#)
        .await
        .assert_problem(422, "urn:idem:problem:key-reused");
    assert!(send("order-1", body).await.replayed(), "the original bytes replay after a refused body");

    let other_key = send("order-2", body).await;
    assert_eq!(other_key.status, 201);
    assert!(!other_key.replayed(), "the same bytes under another key are another request");

    // A body in canonical form already: the same for its retries.
    let canonical = r#"{"item":"book","qty":2}"#;
    assert_eq!(send("order-3", canonical).await.status, 201);
    let canonicalized = canonicalized_on_this_thread();
    assert!(send("order-3", canonical).await.replayed());
    assert_eq!(canonicalized_on_this_thread(), canonicalized, "a byte-identical retry is not canonicalized");
    assert!(send("order-3", r#"{"qty":2,"item":"book"}"#).await.replayed());
    send("order-3", r#"{"item":"book","qty":3}"#).await.assert_problem(422, "urn:idem:problem:key-reused");
    assert_eq!(hits.get("required"), 3);
}
