//! Decoding stored records (what a remote store hands back) on arbitrary bytes: never panics,
//! and whatever decodes re-encodes to bytes that decode to the same record.
#![no_main]

use idem_runtime::record::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::decode(data) {
        let again = Record::decode(&record.encode()).expect("an encoded record decodes");
        assert_eq!(again, record);
    }
});
