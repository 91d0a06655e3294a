//! The encoding's own properties: canonical JSON, decoded pairs, the table of recent JSON
//! digests, and writes that cannot be confused with one another.

use super::recent;
use super::record_key::RecordKey;
use super::FingerprintWriter;

fn json(raw: &str) -> [u8; 32] {
    let mut w = FingerprintWriter::new();
    w.json(raw.as_bytes());
    w.finish()
}

fn pairs(raw: &str) -> [u8; 32] {
    let mut w = FingerprintWriter::new();
    w.pairs(raw.as_bytes());
    w.finish()
}

#[test]
fn json_key_order_and_whitespace_do_not_matter() {
    assert_eq!(json(r#"{"a":1,"b":{"y":[1,2],"x":"s"}}"#), json(" { \"b\" : {\"x\":\"s\",\"y\":[1, 2]}, \"a\":1 }"));
    assert_ne!(json(r#"{"a":1}"#), json(r#"{"a":2}"#));
    assert_ne!(json(r#"[1,2]"#), json(r#"[2,1]"#));
    assert_ne!(json("not json"), json(r#""not json""#));
}

#[test]
fn pair_order_matters_only_within_a_name() {
    assert_eq!(pairs("a=1&b=2"), pairs("b=2&a=1"));
    assert_eq!(pairs("a=%20"), pairs("a=+"));
    assert_ne!(pairs("a=1&a=2"), pairs("a=2&a=1"));
}

#[test]
fn pairs_decode_to_the_bytes_they_spell() {
    // Escapes of bytes that are not UTF-8 stay apart (never one replacement character).
    assert_ne!(pairs("sig=%FF"), pairs("sig=%FE"));
    assert_ne!(pairs("%C3=1"), pairs("%C4=1"));
    assert_ne!(pairs("sig=%FF"), pairs("sig=%EF%BF%BD"));
    // Case in an escape, and an escaped character against itself, are one byte.
    assert_eq!(pairs("sig=%ff"), pairs("sig=%FF"));
    assert_eq!(pairs("a=%41"), pairs("a=A"));
    // `%2B` is a plus sign, `+` a space; a `%` without two hex digits is itself.
    assert_ne!(pairs("a=%2B"), pairs("a=+"));
    assert_eq!(pairs("a=%2B"), pairs("a=%2b"));
    assert_eq!(pairs("a=%zz&b=%4"), pairs("a=%25zz&b=%254"));
    // A name without `=` has an empty value; empty pieces are no pairs.
    assert_eq!(pairs("a"), pairs("a="));
    assert_eq!(pairs("a=1&&b=2&"), pairs("a=1&b=2"));
    assert_eq!(pairs(""), pairs("&&"));
}

#[test]
fn a_byte_moved_between_name_and_value_or_pairs_changes_the_pairs() {
    assert_ne!(pairs("ab=c"), pairs("a=bc"));
    assert_ne!(pairs("a=bc&d"), pairs("a=b&cd"));
    assert_ne!(pairs("a=v"), pairs("av="));
    assert_ne!(pairs("a=&b"), pairs("a=%26b"));
}

#[test]
fn recent_digests_answer_only_their_own_record() {
    let record = |first: u8| {
        let mut digest = [9; 32];
        digest[0] = first;
        RecordKey::from_digest(digest)
    };
    let last = |record| recent::last_of(&record).map(|last| (last.raw, last.digest));
    // Two records sharing a slot (the same last 8 bytes).
    let (a, b) = (record(1), record(2));
    recent::remember(a, [1; 32], [10; 32]);
    assert_eq!(last(a), Some(([1; 32], [10; 32])));
    assert_eq!(last(b), None, "another record in the same slot");
    recent::remember(b, [1; 32], [20; 32]);
    assert_eq!(last(b), Some(([1; 32], [20; 32])));
    assert_eq!(last(a), None, "the slot now remembers the other record");
}

#[test]
fn the_digest_of_canonical_bytes_is_their_canonical_digest() {
    for (raw, canonical) in [(r#"{"a":1,"b":[true,null]}"#, true), (r#"{"b":1,"a":2}"#, false), ("[1.0]", false)] {
        let (digest, is_canonical) = FingerprintWriter::json_digest(raw.as_bytes());
        assert_eq!(digest, json(raw));
        assert_eq!(is_canonical, canonical, "{raw}");
        assert_eq!(FingerprintWriter::raw_json_digest(raw.as_bytes()) == digest, canonical, "{raw}");
    }
    assert!(!FingerprintWriter::json_digest(b"not json").1);
}

#[test]
fn writes_are_unambiguous() {
    let mut a = FingerprintWriter::new();
    a.bytes(b"ab");
    a.bytes(b"c");
    let mut b = FingerprintWriter::new();
    b.bytes(b"a");
    b.bytes(b"bc");
    assert_ne!(a.finish(), b.finish());
}
