//! A stored response: what a record keeps (status, headers, body and its trailers), which
//! fields a replay repeats, and the replay itself. Its byte encoding for remote stores is
//! [`Record::encode`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body::{Frame, SizeHint};

use crate::fingerprint::Fingerprint;
use crate::problem::Problem;

mod codec;

#[cfg(all(test, feature = "redis"))]
pub(crate) use codec::encoded_fingerprint;
pub use codec::DecodeError;

/// The header marking a replayed response.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The request id header that tower-http's `SetRequestId` and most proxies use. A record keeps
/// the id of the request that did the work, so that a replay names it.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A completed request's response, as kept in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The fingerprint of the request that produced it.
    pub fingerprint: Fingerprint,
    /// The response status.
    pub status: StatusCode,
    /// The headers a replay repeats: by default all but hop-by-hop ones, `Date` and
    /// `Set-Cookie`; a handler's `replay_headers(...)` narrows or widens that.
    pub headers: HeaderMap,
    /// What is kept of the body, and of the trailers after it.
    pub body: StoredBody,
    /// When the record stops being replayed.
    pub expires_at: SystemTime,
}

/// What a [`Record`] keeps of the response body and its trailers (the fields sent after the
/// body: a checksum, a gRPC-style status). Trailers are kept only with the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredBody {
    /// The whole body, which ended without trailers, replayed as it is.
    Kept(Bytes),
    /// The whole body and the trailers that followed it, both replayed: the trailers a replay
    /// repeats, by the same rule as a response's headers by default (never a hop-by-hop name,
    /// `Content-Length`, `Date` or `Set-Cookie`).
    KeptWithTrailers {
        /// The body.
        body: Bytes,
        /// The trailers after it (boxed: most bodies have none, and a record stays small).
        trailers: Box<HeaderMap>,
    },
    /// The body (with its trailers) was larger than the store keeps: a replay repeats the
    /// status and headers with a problem body saying so.
    TooLarge,
    /// The body failed while it was produced, after the handler ran (a stream that yielded an
    /// error): a replay repeats the status and headers with a problem body saying so.
    Failed,
}

impl StoredBody {
    /// The kept bytes, if the whole body is kept.
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            Self::Kept(bytes) | Self::KeptWithTrailers { body: bytes, .. } => Some(bytes),
            Self::TooLarge | Self::Failed => None,
        }
    }

    /// The kept trailers, if the body is kept with trailers.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        match self {
            Self::KeptWithTrailers { trailers, .. } => Some(trailers),
            Self::Kept(_) | Self::TooLarge | Self::Failed => None,
        }
    }

    /// A whole body and the trailers kept of it: [`StoredBody::Kept`] when there are none.
    pub fn kept(body: Bytes, trailers: HeaderMap) -> Self {
        if trailers.is_empty() {
            Self::Kept(body)
        } else {
            Self::KeptWithTrailers { body, trailers: Box::new(trailers) }
        }
    }
}

/// The subset of `headers` that a replay repeats by default.
#[cfg(test)]
fn replayable_headers(headers: &HeaderMap) -> HeaderMap {
    replayable_headers_only(headers, None)
}

/// The subset of `headers` that a replay repeats. Never a hop-by-hop header (nor one named by
/// `Connection`) or `Content-Length`, which is recomputed from the stored body. By default every
/// other header but `Date` and `Set-Cookie`; with an allow-list (lower-case names), only those
/// listed plus the representation headers that describe the stored body (`Content-Type`,
/// `Content-Encoding`).
pub(crate) fn replayable_headers_only(headers: &HeaderMap, allow: Option<&[&str]>) -> HeaderMap {
    // Headers named by `Connection` are hop-by-hop too.
    let named_by_connection = |name: &HeaderName| {
        headers.get_all(header::CONNECTION).iter().any(|value| {
            value.to_str().unwrap_or_default().split(',').any(|n| n.trim().eq_ignore_ascii_case(name.as_str()))
        })
    };
    let replayed = |name: &HeaderName| {
        if idem_rules::never_replayed(name.as_str()).is_some() || named_by_connection(name) {
            return false;
        }
        match allow {
            None => *name != header::DATE && *name != header::SET_COOKIE,
            Some(allow) => {
                allow.contains(&name.as_str()) || *name == header::CONTENT_TYPE || *name == header::CONTENT_ENCODING
            }
        }
    };
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if replayed(name) {
            kept.append(name, value.clone());
        }
    }
    kept
}

/// The subset of a response's `trailers` that a replay repeats: the rule for headers without
/// an allow-list (a handler's `replay_headers(...)` names headers; trailers end the body and
/// are kept with it), so never a hop-by-hop name, `Content-Length`, `Date` or `Set-Cookie`.
pub(crate) fn replayable_trailers(trailers: &HeaderMap) -> HeaderMap {
    replayable_headers_only(trailers, None)
}

/// What trailers weigh against a store's body limit: each field's name and value.
pub(crate) fn trailers_len(trailers: &HeaderMap) -> usize {
    trailers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum()
}

/// A body of `data` ending with `trailers`, when there are any.
pub(crate) fn body_with_trailers(data: Bytes, trailers: Option<HeaderMap>) -> Body {
    match trailers {
        Some(trailers) if !trailers.is_empty() => {
            Body::new(WithTrailers { data: Some(data), trailers: Some(trailers) })
        }
        _ => Body::from(data),
    }
}

/// A whole body, then its trailers. Its length is not announced as exact: HTTP/1.1 sends
/// trailers only after a chunked body, never after one framed by `Content-Length`.
struct WithTrailers {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for WithTrailers {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = match self.data.take() {
            Some(data) if !data.is_empty() => Frame::data(data),
            _ => match self.trailers.take() {
                Some(trailers) => Frame::trailers(trailers),
                None => return Poll::Ready(None),
            },
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = SizeHint::new();
        hint.set_lower(self.data.as_ref().map_or(0, |data| data.len() as u64));
        hint
    }
}

impl Record {
    /// Whether the record is past its time to live at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires_at <= now
    }

    /// The time left before the record expires, zero once expired.
    pub fn ttl_left(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }

    /// The response a retry receives: the stored status, headers, body and trailers, plus
    /// `Idempotent-Replayed: true` (and `Trailer`, naming the trailers, when there are any).
    pub fn replay(&self) -> Response {
        self.clone().into_replay()
    }

    /// [`Record::replay`], consuming the record (no copy of its headers).
    pub fn into_replay(self) -> Response {
        let mut response = match self.body {
            StoredBody::Kept(body) => replay_of(self.status, self.headers, Body::from(body)),
            StoredBody::KeptWithTrailers { body, trailers } => {
                let mut headers = self.headers;
                if let Some(names) = announced(&trailers) {
                    headers.insert(header::TRAILER, names);
                }
                replay_of(self.status, headers, body_with_trailers(body, Some(*trailers)))
            }
            StoredBody::TooLarge => body_not_kept(Problem::body_not_stored(self.status), self.headers),
            StoredBody::Failed => body_not_kept(Problem::body_failed(self.status), self.headers),
        };
        response.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        response
    }
}

fn replay_of(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The `Trailer` header of a replay, recomputed from the trailers it carries (as
/// `Content-Length` is from its body): `Trailer` itself is hop-by-hop, never stored.
fn announced(trailers: &HeaderMap) -> Option<HeaderValue> {
    let names: Vec<&str> = trailers.keys().map(HeaderName::as_str).collect();
    HeaderValue::from_str(&names.join(", ")).ok().filter(|_| !names.is_empty())
}

/// A replay whose body was not kept: the stored status and headers, with a problem body.
fn body_not_kept(problem: Problem, mut headers: HeaderMap) -> Response {
    let mut response = problem.to_response();
    let content_type = response.headers_mut().remove(header::CONTENT_TYPE);
    headers.remove(header::CONTENT_ENCODING);
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, content_type);
    }
    *response.headers_mut() = headers;
    response
}

/// The latest expiry an encoding holds (the last millisecond of the year 9999): a longer `ttl`
/// is kept until then rather than wrapping around to the past.
pub(crate) const MAX_EXPIRY_MS: u64 = 253_402_300_799_999;

/// An encoded expiry as a time; `None` past what [`Record::encode`] writes.
fn expiry_of(ms: u64) -> Option<SystemTime> {
    (ms <= MAX_EXPIRY_MS).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    #[test]
    fn replay_drops_hop_by_hop_date_and_cookies() {
        let mut headers = HeaderMap::new();
        headers.insert(header::DATE, HeaderValue::from_static("Sun, 22 Nov 2026 12:00:00 GMT"));
        headers.insert(header::SET_COOKIE, HeaderValue::from_static("s=1"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert(header::LOCATION, HeaderValue::from_static("/a"));
        let kept = replayable_headers(&headers);
        assert_eq!(kept.len(), 1);
        assert!(kept.contains_key(header::LOCATION));
    }

    #[test]
    fn replayed_trailers_drop_hop_by_hop_names_and_cookies_and_weigh_their_fields() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc"));
        trailers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        trailers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        trailers.insert(header::SET_COOKIE, HeaderValue::from_static("s=1"));
        let kept = replayable_trailers(&trailers);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["x-checksum"]);
        assert_eq!(trailers_len(&kept), "x-checksum".len() + "abc".len());
    }

    #[tokio::test]
    async fn a_replay_ends_with_its_trailers_and_announces_them() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.append("x-sum", HeaderValue::from_static("1"));
        trailers.append("x-sum", HeaderValue::from_static("2"));
        let record = Record {
            fingerprint: Fingerprint::from_bytes([1; 32]),
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: StoredBody::kept(Bytes::from_static(b"data"), trailers.clone()),
            expires_at: UNIX_EPOCH,
        };
        let replay = record.replay();
        assert_eq!(replay.headers()[header::TRAILER], "grpc-status, x-sum");
        assert_eq!(http_body::Body::size_hint(replay.body()).exact(), None, "chunked, so trailers can follow");
        let collected = replay.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), "data");
    }

    #[test]
    fn a_body_without_trailers_is_kept_as_before() {
        assert_eq!(
            StoredBody::kept(Bytes::from_static(b"x"), HeaderMap::new()),
            StoredBody::Kept(Bytes::from_static(b"x"))
        );
        let replay = Record {
            fingerprint: Fingerprint::from_bytes([1; 32]),
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: StoredBody::Kept(Bytes::from_static(b"data")),
            expires_at: UNIX_EPOCH,
        }
        .into_replay();
        assert!(!replay.headers().contains_key(header::TRAILER));
        assert_eq!(http_body::Body::size_hint(replay.body()).exact(), Some(4));
    }
}
