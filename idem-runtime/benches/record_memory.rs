//! Memory per record: 100 000 completed records with a 32-byte body in the embedded store;
//! prints the resident memory they add, per record beyond the body.
//!
//! `cargo bench -p idem-runtime --bench record_memory`

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use idem_runtime::fingerprint::Fingerprint;
use idem_runtime::record::{Record, StoredBody};
use idem_runtime::store::{Claim, MemoryStore, RecordKey, Store};

const RECORDS: u64 = 100_000;
const BODY: &[u8; 32] = b"{\"id\":\"ord_0000001\",\"qty\":12345}";

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).expect("resident").parse().expect("a number");
    pages * 4096
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        // `cargo test --benches` and `--list`: nothing to list, nothing to check.
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = MemoryStore::builder().max_entries(RECORDS * 2).max_bytes(1 << 30).build();
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = Bytes::from_static(BODY);
    let before = rss_bytes();
    runtime.block_on(async {
        for i in 0..RECORDS {
            let mut digest = [0u8; 32];
            digest[..8].copy_from_slice(&i.to_be_bytes());
            let key = RecordKey::from_digest(digest);
            let fingerprint = Fingerprint::from_bytes([7; 32]);
            let Claim::Acquired(token) = store.claim(&key, &fingerprint, Duration::from_secs(30)).await.unwrap() else {
                panic!("fresh key")
            };
            let record = Record {
                fingerprint,
                status: StatusCode::CREATED,
                headers: headers.clone(),
                // A body of its own per record, as a real response has.
                body: StoredBody::Kept(Bytes::copy_from_slice(&body)),
                expires_at: std::time::SystemTime::now() + Duration::from_secs(3600),
            };
            store.complete(&key, token, record).await.unwrap();
        }
    });
    let after = rss_bytes();
    let per_record = (after - before) as f64 / RECORDS as f64;
    println!("records: {RECORDS}, body: {} B, headers: content-type", BODY.len());
    println!("resident memory added: {:.1} MiB", (after - before) as f64 / (1 << 20) as f64);
    println!("per record: {per_record:.0} B, beyond the body: {:.0} B", per_record - BODY.len() as f64);
    let floor = moka_floor(false);
    let with_expiry = moka_floor(true);
    println!(
        "of which moka's own entry (32-byte key, empty value, configured as the store's cache: LRU, a weigher, no \
         per-entry expiry): {floor:.0} B ({with_expiry:.0} B with per-entry expiry); what idem adds beyond moka's \
         entry and the body: {:.0} B",
        per_record - floor - BODY.len() as f64
    );
    drop(store);
}

/// Resident bytes per entry of a moka cache configured as the store's (LRU eviction, a weigher,
/// and no per-entry expiry: the store checks a record's expiry on every read), or with
/// per-entry expiry added, holding a 32-byte key and nothing else: the floor any record kept in
/// moka costs. The cache is never dropped, so that no later measure reuses its memory.
fn moka_floor(per_entry_expiry: bool) -> f64 {
    struct Hour;
    impl moka::Expiry<RecordKey, ()> for Hour {
        fn expire_after_create(&self, _: &RecordKey, _: &(), _: std::time::Instant) -> Option<Duration> {
            Some(Duration::from_secs(3600))
        }
    }
    let builder = moka::sync::Cache::builder()
        .eviction_policy(moka::policy::EvictionPolicy::lru())
        .max_capacity(1 << 30)
        .weigher(|_: &RecordKey, _: &()| 1);
    let cache = if per_entry_expiry { builder.expire_after(Hour).build() } else { builder.build() };
    let offset = if per_entry_expiry { 2 * RECORDS } else { RECORDS };
    let before = rss_bytes();
    for i in 0..RECORDS {
        let mut digest = [0u8; 32];
        digest[..8].copy_from_slice(&(i + offset).to_be_bytes());
        cache.insert(RecordKey::from_digest(digest), ());
    }
    cache.run_pending_tasks();
    let per_entry = (rss_bytes() - before) as f64 / RECORDS as f64;
    std::mem::forget(cache);
    per_entry
}
