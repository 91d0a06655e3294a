//! Generated requests, and the model of what their handler observes: two requests are one
//! exactly when it observes the same, the documented equivalences applied.

use axum::body::Body;
use axum::http::{HeaderValue, Request, Uri};
use proptest::prelude::*;
use serde_json::Value;

use crate::common::json_values::value;
use crate::handlers::{Reads, HANDLERS};

/// One request to the handler that `reads`.
#[derive(Clone)]
pub(crate) struct Req {
    pub(crate) reads: Reads,
    /// The path after the handler's prefix, as sent.
    pub(crate) path: Vec<u8>,
    /// The query as sent, without its `?`.
    pub(crate) query: Option<Vec<u8>>,
    /// The `X-Signature` header's value.
    pub(crate) header: Vec<u8>,
    pub(crate) body: Vec<u8>,
    /// The value the body holds, for the JSON handler.
    pub(crate) json: Option<Value>,
}

impl std::fmt::Debug for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (target, header, body) = (self.target(), &self.header, &self.body);
        write!(f, "POST {} x-signature: {} body: {}", target.escape_ascii(), header.escape_ascii(), body.escape_ascii())
    }
}

impl Req {
    fn target(&self) -> Vec<u8> {
        let mut target = [self.reads.prefix().as_bytes(), &self.path].concat();
        if let Some(query) = &self.query {
            target.push(b'?');
            target.extend_from_slice(query);
        }
        target
    }

    pub(crate) fn build(&self, key: &str) -> Request<Body> {
        let content_type = match self.reads {
            Reads::Form | Reads::RawForm => "application/x-www-form-urlencoded",
            Reads::Json => "application/json",
            _ => "application/octet-stream",
        };
        Request::post(Uri::try_from(self.target()).expect("the tokens make a valid target"))
            .header("idempotency-key", key)
            .header("content-type", content_type)
            .header("x-signature", HeaderValue::from_bytes(&self.header).expect("a valid header value"))
            .body(Body::from(self.body.clone()))
            .unwrap()
    }

    /// What the handler observes, with documented equivalences applied: two requests are one
    /// exactly when this is equal.
    pub(crate) fn observed(&self) -> Vec<Observed> {
        let query = self.query.as_deref().unwrap_or_default();
        let mut seen = vec![Observed::Bytes(self.path.clone()), Observed::Pairs(pairs(query))];
        seen.push(match self.reads {
            Reads::Nothing | Reads::Query => return seen,
            Reads::Uri => Observed::Bytes(self.target()),
            // `None` and `Some("")` are two values to the handler.
            Reads::RawQuery => Observed::Bytes(self.query.as_ref().map_or(Vec::new(), |q| [b"?", &q[..]].concat())),
            Reads::Form => Observed::Pairs(pairs(&self.body)),
            Reads::RawForm | Reads::Bytes | Reads::String => Observed::Bytes(self.body.clone()),
            Reads::Json => Observed::Json(self.json.clone().expect("the JSON handler's body holds a value")),
            Reads::Header => Observed::Bytes(self.header.clone()),
        });
        seen
    }
}

#[derive(Debug, PartialEq)]
pub(crate) enum Observed {
    Bytes(Vec<u8>),
    /// `application/x-www-form-urlencoded` pairs, decoded, stably sorted by name.
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
    Json(Value),
}

/// Form pairs as the urlencoded syntax defines them: `&`-separated (empty pieces skipped), the
/// name before the first `=`, `+` a space, `%` and two hex digits one byte (any byte).
fn pairs(text: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    fn decode(text: &[u8]) -> Vec<u8> {
        let hex = |b: u8| char::from(b).to_digit(16);
        let mut out = Vec::new();
        let mut i = 0;
        while i < text.len() {
            match (text[i], text.get(i + 1).copied().and_then(hex), text.get(i + 2).copied().and_then(hex)) {
                (b'%', Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 3;
                    continue;
                }
                (b'+', ..) => out.push(b' '),
                (b, ..) => out.push(b),
            }
            i += 1;
        }
        out
    }
    let mut pairs: Vec<_> = text
        .split(|&b| b == b'&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| match piece.iter().position(|&b| b == b'=') {
            Some(eq) => (decode(&piece[..eq]), decode(&piece[eq + 1..])),
            None => (decode(piece), Vec::new()),
        })
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
}

/// Pieces of paths, queries and form bodies: separators, escapes of valid and invalid UTF-8,
/// an escape that is none (`%zz`), and the letters the encoding's own tags are made of.
pub(crate) const TOKENS: &[&str] = &[
    "a", "b", "k", "v", "p", "A", "E", "9", "=", "&", "+", "%20", "%2B", "%3D", "%26", "%41", "%61", "%ff", "%FF",
    "%FE", "%C3", "%A9", "%zz", "%", "~", ".", "/",
];

/// The escapes among the tokens.
pub(crate) const ESCAPES: &[&str] = &["%20", "%2B", "%3D", "%26", "%41", "%61", "%ff", "%FF", "%FE", "%C3", "%A9"];

/// Bytes of header values and raw bodies: visible ASCII, space, tab and bytes that are not UTF-8.
pub(crate) const BYTES: &[u8] = b"aAbv =%+~\t\x80\xc3\xa9\xfe\xff";

fn tokens(range: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(TOKENS), range).prop_map(|t| t.concat().into_bytes())
}

/// Urlencoded text: pairs of tokens, most with a `=`, joined by `&`.
fn urlencoded() -> impl Strategy<Value = Vec<u8>> {
    let pair = (tokens(0..3), prop::option::weighted(0.8, tokens(0..3))).prop_map(|(name, value)| match value {
        Some(value) => [name, b"=".to_vec(), value].concat(),
        None => name,
    });
    prop::collection::vec(pair, 0..4).prop_map(|pairs| pairs.join(&b'&'))
}

fn raw_bytes(range: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(BYTES), range)
}

pub(crate) fn request() -> impl Strategy<Value = Req> {
    let path = tokens(1..4).prop_map(|p| if p.first() == Some(&b'/') { [b"x", &p[..]].concat() } else { p });
    (prop::sample::select(HANDLERS.to_vec()), path, prop::option::of(urlencoded()), raw_bytes(0..6), value())
        .prop_flat_map(|(reads, path, query, header, json)| {
            let body = match reads {
                Reads::Bytes => raw_bytes(0..12).boxed(),
                Reads::Json => Just(json.to_string().into_bytes()).boxed(),
                _ => urlencoded().boxed(),
            };
            let json = (reads == Reads::Json).then_some(json);
            body.prop_map(move |body| Req {
                reads,
                path: path.clone(),
                query: query.clone(),
                header: header.clone(),
                body,
                json: json.clone(),
            })
        })
}
