//! The key header parser on arbitrary bytes: never panics, and whatever it accepts
//! is 1 to 255 visible ASCII characters.
#![no_main]

use idem_runtime::key::IdempotencyKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = IdempotencyKey::parse(data) {
        let k = key.as_str().as_bytes();
        assert!((1..=255).contains(&k.len()));
        assert!(k.iter().all(|b| (0x21..=0x7e).contains(b)));
    }
    // The same bytes as header lines, split on newlines, under both names.
    let mut headers = http::HeaderMap::new();
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        if let Ok(value) = http::HeaderValue::from_bytes(line) {
            let name = if i % 2 == 0 { "idempotency-key" } else { "x-idempotency-key" };
            headers.append(name, value);
        }
    }
    let _ = IdempotencyKey::from_headers(&headers, None);
});
