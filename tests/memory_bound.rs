//! Memory bound of the embedded store at its default capacity: many distinct keys (300 000 by
//! default, IDEM_MEMORY_KEYS=1000000 for the full run) pass through it, resident memory stays
//! under the documented bound, and an in-flight claim made first is still there at the end.
//! A test binary of its own, so that no other test's allocations blur the figure.

use std::time::Duration;

use bytes::Bytes;
use idem_runtime::store::{Claim, MemoryStore, Store};
use idem_runtime::testkit::{fingerprint, fresh_key, record};

/// The guide's bound for a default `MemoryStore` (100 000 records, 64 MiB of records).
const BOUND_MIB: f64 = 128.0;

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0 / (1 << 20) as f64
}

#[tokio::test]
async fn many_distinct_keys_stay_under_the_bound_and_in_flight_claims_survive() {
    let keys: usize = std::env::var("IDEM_MEMORY_KEYS").ok().and_then(|n| n.parse().ok()).unwrap_or(300_000);
    let store = MemoryStore::new();
    let before = rss_mib();
    let held = fresh_key();
    let Claim::Acquired(token) = store.claim(&held, &fingerprint(9), Duration::from_secs(600)).await.unwrap() else {
        panic!("a fresh key is acquired")
    };
    let body = Bytes::from_static(b"{\"id\":\"ord_0000001\",\"qty\":12345}");
    let mut peak: f64 = 0.0;
    for i in 0..keys {
        let key = fresh_key();
        let Claim::Acquired(t) = store.claim(&key, &fingerprint(1), Duration::from_secs(30)).await.unwrap() else {
            panic!("a fresh key is acquired")
        };
        store.complete(&key, t, record(fingerprint(1), Duration::from_secs(86_400), Some(body.clone()))).await.unwrap();
        if i % 10_000 == 0 {
            peak = peak.max(rss_mib() - before);
        }
    }
    peak = peak.max(rss_mib() - before);
    println!("{keys} distinct keys through a default MemoryStore: peak resident growth {peak:.1} MiB (bound {BOUND_MIB} MiB)");
    assert!(peak < BOUND_MIB, "resident memory grew by {peak:.1} MiB");
    assert!(
        matches!(store.claim(&held, &fingerprint(9), Duration::from_secs(600)).await.unwrap(), Claim::InFlight { .. }),
        "the in-flight claim made first survived every eviction"
    );
    store.complete(&held, token, record(fingerprint(9), Duration::from_secs(60), None)).await.unwrap();
}
