//! Fingerprint cost next to plain SHA-256 over the same bytes, for bodies of 256 B, 4 KiB,
//! 64 KiB and 1 MiB: a JSON body (canonicalized) and a raw one. Then the cost of nesting: about
//! 64 KiB of the same objects nested 100 deep or side by side in one array, which costs the same
//! per byte when canonicalization is linear in the body's size whatever its nesting.
//!
//! `cargo bench -p idem-runtime --bench fingerprint`

use divan::counter::BytesCount;
use divan::Bencher;
use idem_runtime::fingerprint::FingerprintWriter;
use sha2::{Digest, Sha256};

fn main() {
    divan::main();
}

const SIZES: [usize; 4] = [256, 4 << 10, 64 << 10, 1 << 20];

/// A JSON document of about `size` bytes: an array of small order objects.
fn json_body(size: usize) -> Vec<u8> {
    let mut out = String::from("{\"orders\":[");
    let mut i = 0;
    while out.len() + 64 < size {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{{\"qty\":{},\"item\":\"item-{i}\",\"note\":\"a \\\"quoted\\\" note\"}}", i % 7));
        i += 1;
    }
    out.push_str("]}");
    while out.len() < size {
        out.insert(out.len() - 1, ' ');
    }
    out.into_bytes()
}

#[divan::bench(args = SIZES)]
fn sha256_raw(bencher: Bencher<'_, '_>, size: usize) {
    let body = json_body(size);
    bencher.counter(BytesCount::new(body.len())).bench(|| Sha256::digest(divan::black_box(&body)));
}

#[divan::bench(args = SIZES)]
fn fingerprint_json(bencher: Bencher<'_, '_>, size: usize) {
    let body = json_body(size);
    bencher.counter(BytesCount::new(body.len())).bench(|| {
        let mut w = FingerprintWriter::new();
        w.json(divan::black_box(&body));
        w.finish()
    });
}

#[divan::bench(args = SIZES)]
fn fingerprint_bytes(bencher: Bencher<'_, '_>, size: usize) {
    let body = json_body(size);
    bencher.counter(BytesCount::new(body.len())).bench(|| {
        let mut w = FingerprintWriter::new();
        w.bytes(divan::black_box(&body));
        w.finish()
    });
}

/// Levels of nesting in the deep body, and objects side by side in the flat one.
const OBJECTS: usize = 100;

/// An object with a few members out of key order (so it is reordered) and a string of `pad`
/// bytes, without its closing brace.
fn object_open(i: usize, pad: usize) -> String {
    format!("{{\"zone\":\"eu-{i}\",\"note\":\"{}\",\"id\":{i},\"amount\":12.50", "x".repeat(pad))
}

/// About 64 KiB of JSON: `OBJECTS` objects, each the last member of the one before (`deep`) or
/// all items of one array.
fn nested_body(shape: &str) -> Vec<u8> {
    let pad = (64 << 10) / OBJECTS - object_open(0, 0).len() - 10;
    let mut out = String::new();
    match shape {
        "deep" => {
            for i in 0..OBJECTS {
                if i > 0 {
                    out.push_str(",\"child\":");
                }
                out.push_str(&object_open(i, pad));
            }
            out.push_str(&"}".repeat(OBJECTS));
        }
        _ => {
            out.push('[');
            for i in 0..OBJECTS {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&object_open(i, pad));
                out.push('}');
            }
            out.push(']');
        }
    }
    out.into_bytes()
}

#[divan::bench(args = ["flat", "deep"])]
fn fingerprint_json_nesting(bencher: Bencher<'_, '_>, shape: &str) {
    let body = nested_body(shape);
    bencher.counter(BytesCount::new(body.len())).bench(|| {
        let mut w = FingerprintWriter::new();
        w.json(divan::black_box(&body));
        w.finish()
    });
}

#[divan::bench(args = ["flat", "deep"])]
fn sha256_raw_nesting(bencher: Bencher<'_, '_>, shape: &str) {
    let body = nested_body(shape);
    bencher.counter(BytesCount::new(body.len())).bench(|| Sha256::digest(divan::black_box(&body)));
}
