//! Fingerprint cost next to plain SHA-256 over the same bytes, for bodies of 256 B, 4 KiB,
//! 64 KiB and 1 MiB: a JSON body (canonicalized) and a raw one.
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
