//! When a request's logical call began, and whether that is past its handler's lifetime.
//!
//! A request says when its call began in two ways: its key is a UUIDv7 (RFC 9562 text form,
//! whose first 48 bits are the Unix time in milliseconds it was minted), or it carries
//! `Repeatability-First-Sent` (an HTTP-date, as in the OASIS Repeatable Requests spec). With both,
//! the earlier counts. A call that began more than the handler's `ttl` plus
//! [`MAX_CLOCK_SKEW`] ago is late: if the store holds no record for it, whether it ran is unknown,
//! and running it again could be the very duplicate idempotency exists to prevent. A call that
//! begins more than [`MAX_CLOCK_SKEW`] from now comes from a client whose clock is wrong.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::key::{uuid_v7_time, MAX_CLOCK_SKEW, REPEATABILITY_FIRST_SENT};

/// What said when a request's call began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The timestamp of a UUIDv7 key.
    Key,
    /// The `Repeatability-First-Sent` header.
    FirstSent,
}

impl Source {
    /// How a problem's detail names it, after "according to".
    pub(crate) const fn describe(self) -> &'static str {
        match self {
            Self::Key => "its UUIDv7 Idempotency-Key",
            Self::FirstSent => "its Repeatability-First-Sent header",
        }
    }
}

/// When a request's logical call began, and what said so.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Began {
    at: SystemTime,
    source: Source,
}

/// A call that began longer ago than its handler's ttl plus the skew allowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Late {
    pub(crate) age: Duration,
    pub(crate) source: Source,
    pub(crate) ttl: Duration,
}

/// A call that begins further from now than the skew allowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Early {
    pub(crate) ahead: Duration,
    pub(crate) source: Source,
}

/// `Repeatability-First-Sent` is not one HTTP-date.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MalformedFirstSent;

/// When the call of a request with `key` and `headers` began, if it says: the earlier of its
/// UUIDv7 key's time and its `Repeatability-First-Sent`.
pub(crate) fn began(key: &str, headers: &HeaderMap) -> Result<Option<Began>, MalformedFirstSent> {
    let mut dates = headers.get_all(REPEATABILITY_FIRST_SENT).iter();
    let first_sent = match (dates.next(), dates.next()) {
        (None, _) => None,
        (Some(date), None) => {
            let date = date.to_str().map_err(|_| MalformedFirstSent)?.trim();
            Some(httpdate::parse_http_date(date).map_err(|_| MalformedFirstSent)?)
        }
        (Some(_), Some(_)) => return Err(MalformedFirstSent),
    };
    let key = uuid_v7_time(key).map(|at| Began { at, source: Source::Key });
    let first_sent = first_sent.map(|at| Began { at, source: Source::FirstSent });
    Ok(match (key, first_sent) {
        (Some(key), Some(sent)) => Some(if sent.at < key.at { sent } else { key }),
        (key, sent) => key.or(sent),
    })
}

impl Began {
    /// Judges the call on the store's clock (`now`) against the handler's `ttl`: `Ok(None)`
    /// within its lifetime, `Ok(Some(_))` past it, `Err(_)` from the future.
    pub(crate) fn judge(self, now: SystemTime, ttl: Duration) -> Result<Option<Late>, Early> {
        match self.at.duration_since(now) {
            Ok(ahead) if ahead > MAX_CLOCK_SKEW => Err(Early { ahead, source: self.source }),
            Ok(_) => Ok(None),
            Err(past) => {
                let age = past.duration();
                Ok((age > ttl.saturating_add(MAX_CLOCK_SKEW)).then_some(Late { age, source: self.source, ttl }))
            }
        }
    }
}

/// A duration as a problem's detail shows it: `25h 3s`, `5min`, `1s 500ms`.
pub(crate) fn compact(d: Duration) -> String {
    let secs = d.as_secs();
    let parts = [(secs / 3600, "h"), (secs / 60 % 60, "min"), (secs % 60, "s"), (u64::from(d.subsec_millis()), "ms")];
    let shown: Vec<String> = parts.iter().filter(|(n, _)| *n > 0).map(|(n, unit)| format!("{n}{unit}")).collect();
    if shown.is_empty() {
        "0s".to_owned()
    } else {
        shown.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use http::HeaderValue;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_uuidv7_carries_its_millisecond_time_and_nothing_else_does() {
        let at = UNIX_EPOCH + Duration::from_millis(0x0190_d6a4_1234);
        assert_eq!(uuid_v7_time("0190d6a4-1234-7000-8000-000000000000"), Some(at));
        assert_eq!(uuid_v7_time("0190D6A4-1234-7ABC-B000-00000000000F"), Some(at));
        for other in [
            "0190d6a4-1234-4000-8000-000000000000",  // version 4
            "0190d6a4-1234-7000-c000-000000000000",  // not the RFC variant
            "0190d6a412347000800000000000000000",    // no hyphens
            "0190d6a4-1234-7000-8000-00000000000g",  // not hex
            "0190d6a4-1234-7000-8000-0000000000000", // too long
            "0190d6a4+1234-7000-8000-000000000000",
            "order-1",
        ] {
            assert_eq!(uuid_v7_time(other), None, "{other}");
        }
    }

    #[test]
    fn the_earlier_of_the_key_and_the_header_counts() {
        let key = "0190d6a4-1234-7000-8000-000000000000";
        let mut headers = HeaderMap::new();
        assert_eq!(began(key, &headers).unwrap().unwrap().source, Source::Key);
        assert!(began("order-1", &headers).unwrap().is_none());
        headers.insert(REPEATABILITY_FIRST_SENT, HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert_eq!(began(key, &headers).unwrap().unwrap().source, Source::FirstSent);
        headers.insert(REPEATABILITY_FIRST_SENT, HeaderValue::from_static("Sun, 06 Nov 2044 08:49:37 GMT"));
        assert_eq!(began(key, &headers).unwrap().unwrap().source, Source::Key);
        assert_eq!(began("order-1", &headers).unwrap().unwrap().source, Source::FirstSent);
        headers.append(REPEATABILITY_FIRST_SENT, HeaderValue::from_static("Sun, 06 Nov 2044 08:49:37 GMT"));
        assert!(began(key, &headers).is_err(), "two dates");
    }

    #[test]
    fn the_edges_of_the_lifetime_and_of_the_future() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let judge = |at: SystemTime| Began { at, source: Source::Key }.judge(now, HOUR);
        let ms = Duration::from_millis(1);
        assert!(matches!(judge(now - HOUR - MAX_CLOCK_SKEW), Ok(None)));
        let late = judge(now - HOUR - MAX_CLOCK_SKEW - ms).unwrap().unwrap();
        assert_eq!((late.age, late.ttl), (HOUR + MAX_CLOCK_SKEW + ms, HOUR));
        assert!(matches!(judge(now + MAX_CLOCK_SKEW), Ok(None)));
        assert_eq!(judge(now + MAX_CLOCK_SKEW + ms).unwrap_err().ahead, MAX_CLOCK_SKEW + ms);
        assert!(matches!(judge(now), Ok(None)));
        let forever = Began { at: UNIX_EPOCH, source: Source::Key }.judge(now, Duration::MAX);
        assert!(matches!(forever, Ok(None)), "a ttl too long to add to saturates");
    }

    #[test]
    fn durations_read_compactly() {
        assert_eq!(compact(Duration::from_secs(25 * 3600 + 3)), "25h 3s");
        assert_eq!(compact(Duration::from_secs(300)), "5min");
        assert_eq!(compact(Duration::from_millis(1500)), "1s 500ms");
        assert_eq!(compact(Duration::ZERO), "0s");
    }
}
