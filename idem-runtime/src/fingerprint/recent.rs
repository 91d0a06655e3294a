//! The canonical digest of the JSON body last fingerprinted for each record, with the SHA-256 of
//! its raw bytes: a retry sends the same bytes, and a body byte for byte the same has the same
//! canonical form, so its digest is looked up instead of parsing the body again. Any other body
//! (written differently, or different) is canonicalized: the digest, and so the fingerprint, is
//! the canonical one either way. A request whose record the table does not hold (the first one
//! of a key) hashes its bytes only if they are not canonical already: otherwise their digest is
//! the canonical one.
//!
//! A fixed table of slots, one per record key modulo its size, each remembering the last body of
//! one record: memory stays the same however many records a store holds, and a retry finds its
//! body as long as no request for a record sharing its slot came in between. The table is kept
//! small enough to stay in the CPU's caches: a first request, which finds nothing, would
//! otherwise pay a memory access that costs more than canonicalizing a small body.

use std::sync::Mutex;

use super::record_key::RecordKey;

const SLOTS: usize = 512;

struct Entry {
    record: RecordKey,
    raw: [u8; 32],
    digest: [u8; 32],
}

/// A record's last body: the digest of its bytes, and its canonical digest.
#[derive(Clone, Copy)]
pub(super) struct Last {
    pub(super) raw: [u8; 32],
    pub(super) digest: [u8; 32],
}

static TABLE: [Mutex<Option<Entry>>; SLOTS] = [const { Mutex::new(None) }; SLOTS];

fn slot(record: &RecordKey) -> std::sync::MutexGuard<'static, Option<Entry>> {
    // Bytes of the digest that neither the embedded store's shards nor its map hash on.
    let (_, tail) = record.as_bytes().split_last_chunk::<8>().expect("32 bytes");
    let slot = &TABLE[u64::from_le_bytes(*tail) as usize % SLOTS];
    // Every update is one assignment: a poisoned slot is still consistent.
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the table remembers of `record`'s last body, if its slot holds that record.
pub(super) fn last_of(record: &RecordKey) -> Option<Last> {
    slot(record).as_ref().filter(|e| e.record == *record).map(|e| Last { raw: e.raw, digest: e.digest })
}

pub(super) fn remember(record: RecordKey, raw: [u8; 32], digest: [u8; 32]) {
    *slot(&record) = Some(Entry { record, raw, digest });
}
