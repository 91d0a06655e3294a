//! What the Redis store keeps, and under which names.
//!
//! Key names are binary: `{prefix}{TT}` then the record's 32-byte digest, where `TT` is the
//! two-character tag of the record's bucket (the digest's first byte, 256 buckets). The braces
//! make `TT` a Redis Cluster hash tag: a record and its bucket's marker, `{prefix}{TT}epoch`,
//! live in the same slot, so every script touches one slot. The tags are chosen so that bucket
//! `i` lands in slot range `64·i .. 64·i + 63`: the buckets spread evenly over the slot space,
//! and so over the masters of a cluster whatever slot ranges they serve.
//!
//! Values are one string per record, in layout 1:
//!
//! | bytes | in flight (state 1) | completed (state 2) |
//! | --- | --- | --- |
//! | 0 | `0x01` | `0x02` |
//! | 1..9 | claim token (u64, big-endian) | the token of the claim that completed |
//! | 9..17 | lease deadline (ms, u64, big-endian) | expiry (ms, u64, big-endian) |
//! | 17.. | fingerprint (32 bytes), then `w` when a request waits for the key | the record, as `Record::encode` writes it |
//!
//! The `w` after an in-flight claim's fingerprint says that some request listens on the key's
//! channel (named as the key itself): the claim's completion or release publishes there. Versions that predate it read
//! the fingerprint and ignore the byte after it.
//!
//! A claim its owner released keeps its key for a while as a mark of the release: state 1, the
//! released claim's token, a deadline of 0 and no fingerprint (17 bytes). A claim reads it as a
//! free key; the renewal or completion of the released claim (one still on its way when the
//! owner released) reads it as the release it is, not as a claim Redis forgot, and is refused.
//! The mark expires a second after the released claim's lease deadline. Versions that predate
//! the mark read it as a lapsed claim, so a free key, too.
//!
//! A value whose first byte is neither is not read as a record: the scripts answer with an
//! error.

use crate::store::RecordKey;

/// How many buckets, and so markers, a key space has.
pub(super) const BUCKETS: usize = 256;

/// The two-character hash tag of each bucket, in order: bucket `i`'s tag hashes (CRC16 mod
/// 16384, as Redis Cluster hashes) into slots `64·i .. 64·i + 63`. Each is the first tag over
/// `[0-9A-Za-z]²`, in that order, that does.
const TAGS: &[u8; 2 * BUCKETS] = b"4L144H104D7o6q186l5G4Y5C075O035K4n5t295p257M215x6N366J324w5m4s5i1p0j1t0n1x0b3M0f1a2J1e2N1i0s1m0w1R0H1V0L1Z2q3o0D1C0Y1G2l1K0Q1O0U4M154I114E7n4A196m5F4X5B065N025J4o5u285q247L205y6O374z334v5l4r5h1q0k1u0o1y0c3L0g3Q0z1d2O1h0r1l0v1S0I1W0M3j0A3n0E1B0X1F2m1J0P1N0T164N124J7m4F5X4B5E6n5A095M055I015v4l5r4h7O275z23346L304y5o4u384q0h1r0l1v2Q1z0d3O0y1c2L1g0q1k0u1o0J1P0N1T0B1X0F3m2j1A2n1E0S1I0W1M174O134K7l4G5Y4C5D6o7q085L045H005w4m5s4i7N267J22356M314x5n4t394p0i1s0m1w0a3J0e3N0x1b2M1f0p1j0t1n0K1Q0O1U0C1Y0G3l0Z3q2o1D0R1H0V1L";

/// The first byte of an in-flight claim's value.
pub(super) const IN_FLIGHT: u8 = 1;
/// The first byte of a completed record's value.
pub(super) const COMPLETED: u8 = 2;
/// State, token and deadline: where the fingerprint (in flight) or the record (completed)
/// starts.
pub(super) const HEADER_LEN: usize = 17;
/// Where the fingerprint sits in `Record::encode`'s bytes (after its 4-byte magic).
pub(super) const RECORD_FINGERPRINT_AT: usize = 4;

/// The bucket of a record: its digest's first byte.
pub(super) fn bucket(key: &RecordKey) -> usize {
    key.as_bytes()[0] as usize
}

fn tag(bucket: usize) -> &'static str {
    std::str::from_utf8(&TAGS[2 * bucket..2 * bucket + 2]).expect("ASCII tags")
}

/// The names of one key space.
#[derive(Debug)]
pub(super) struct KeySpace {
    prefix: Box<str>,
    /// Each bucket's `{prefix}{TT}`, the start of its record keys and its marker.
    heads: Box<[Box<str>]>,
}

impl KeySpace {
    pub(super) fn new(prefix: &str) -> Self {
        let heads = (0..BUCKETS).map(|b| format!("{prefix}{{{}}}", tag(b)).into_boxed_str()).collect();
        Self { prefix: prefix.into(), heads }
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}{TT}` + the 32-byte digest.
    pub(super) fn record(&self, key: &RecordKey) -> Vec<u8> {
        let head = self.heads[bucket(key)].as_bytes();
        let mut name = Vec::with_capacity(head.len() + 32);
        name.extend_from_slice(head);
        name.extend_from_slice(key.as_bytes());
        name
    }

    /// The marker of `bucket`: `{prefix}{TT}epoch`.
    pub(super) fn marker(&self, bucket: usize) -> String {
        format!("{}epoch", self.heads[bucket])
    }
}

/// Whether `prefix` can start key names: no brace, so that the hash tag is the store's own.
pub(super) fn valid_prefix(prefix: &str) -> bool {
    !prefix.contains(['{', '}'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::Fingerprint;
    use crate::record::{encoded_fingerprint, Record, StoredBody};

    /// Redis Cluster's key hash: CRC16 (XMODEM) of the hash tag, mod 16384.
    fn slot(tag: &[u8]) -> usize {
        let mut crc: u16 = 0;
        for &byte in tag {
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            }
        }
        usize::from(crc) % 16384
    }

    #[test]
    fn each_bucket_hashes_into_its_own_stretch_of_slots() {
        assert_eq!(slot(b"123456789"), 0x31c3, "the CRC16 variant Redis Cluster uses");
        for bucket in 0..BUCKETS {
            let tag = tag(bucket);
            assert!(tag.bytes().all(|b| b.is_ascii_alphanumeric()), "{tag}");
            assert_eq!(slot(tag.as_bytes()) / 64, bucket, "tag {tag}");
        }
    }

    #[test]
    fn a_record_and_its_marker_share_a_hash_tag() {
        let space = KeySpace::new("shop:idem:");
        let key = RecordKey::from_digest([0xab; 32]);
        let name = space.record(&key);
        let tag = tag(0xab);
        assert_eq!(&name[..14], format!("shop:idem:{{{tag}}}").as_bytes());
        assert_eq!(&name[14..], &[0xab; 32]);
        assert_eq!(space.marker(0xab), format!("shop:idem:{{{tag}}}epoch"));
        assert!(!valid_prefix("idem:{x}:") && !valid_prefix("}") && valid_prefix("idem:"));
    }

    #[test]
    fn the_scripts_find_the_fingerprint_where_the_record_encoding_puts_it() {
        let record = Record {
            fingerprint: Fingerprint::from_bytes([9; 32]),
            status: http::StatusCode::CREATED,
            headers: http::HeaderMap::new(),
            body: StoredBody::Failed,
            expires_at: std::time::UNIX_EPOCH,
        };
        let bytes = record.encode();
        let at = encoded_fingerprint(&bytes).expect("a fingerprint").as_ptr() as usize - bytes.as_ptr() as usize;
        assert_eq!(at, RECORD_FINGERPRINT_AT);
    }
}
