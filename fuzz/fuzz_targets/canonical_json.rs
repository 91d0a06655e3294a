//! The canonical JSON fingerprint on arbitrary bytes (request bodies are hostile): never
//! panics, and is deterministic.
#![no_main]

use idem_runtime::fingerprint::FingerprintWriter;
use libfuzzer_sys::fuzz_target;

fn digest(data: &[u8]) -> [u8; 32] {
    let mut w = FingerprintWriter::new();
    w.json(data);
    w.finish()
}

fuzz_target!(|data: &[u8]| {
    assert_eq!(digest(data), digest(data));
});
