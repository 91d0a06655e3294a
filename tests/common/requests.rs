//! Requests to a router or a socket, and their replies read whole.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

/// A request builder with the usual defaults: POST, JSON body `{}`.
pub struct Req {
    method: &'static str,
    uri: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

pub fn post_to(uri: &str) -> Req {
    Req {
        method: "POST",
        uri: uri.to_owned(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: b"{}".to_vec(),
    }
}

impl Req {
    pub fn method(mut self, method: &'static str) -> Self {
        self.method = method;
        self
    }
    pub fn key(self, key: &str) -> Self {
        self.header("idempotency-key", key)
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn json(mut self, body: &str) -> Self {
        self.body = body.as_bytes().to_vec();
        self
    }
    pub fn raw_body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }
    pub fn build(&self) -> Request<Body> {
        let mut builder = Request::builder().method(self.method).uri(&self.uri);
        for (k, v) in &self.headers {
            builder = builder.header(k, v);
        }
        builder.body(Body::from(self.body.clone())).unwrap()
    }
    pub async fn send(&self, app: &Router) -> Reply {
        let response = app.clone().oneshot(self.build()).await.unwrap();
        Reply::read(response).await
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Reply {
    pub async fn read(response: Response) -> Self {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Self { status: parts.status, headers: parts.headers, body }
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
    pub fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }
    /// Asserts an RFC 9457 problem of `type_uri` with `status`, and returns its body.
    pub fn assert_problem(&self, status: u16, type_uri: &str) -> serde_json::Value {
        assert_eq!(self.status.as_u16(), status, "body: {:?}", self.body);
        assert_eq!(self.header("content-type"), Some("application/problem+json"));
        let body = self.json();
        let object = body.as_object().expect("a problem is a JSON object");
        assert_eq!(object["type"], type_uri);
        assert_eq!(object["status"], status);
        assert!(object["title"].as_str().is_some_and(|t| !t.is_empty()), "title: {body}");
        assert!(object["detail"].as_str().is_some_and(|t| !t.is_empty()), "detail: {body}");
        body
    }
}

/// Asserts that none of `secrets` occurs in `seen` (what a store was given, or holds).
pub fn assert_holds_no_secret(seen: &[u8], secrets: &[&[u8]]) {
    assert!(seen.len() > 100, "nothing much was seen: {} bytes", seen.len());
    for secret in secrets {
        let found = seen.windows(secret.len()).any(|w| w == *secret);
        assert!(!found, "{} reached the store", String::from_utf8_lossy(secret));
    }
}

/// Waits until `cond` holds, polling; panics after `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "condition not reached within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A response read off a real socket.
#[derive(Debug)]
pub struct Wire {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Wire {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to the end.
pub fn wire(addr: std::net::SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Wire {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad response: {text}"));
    Wire { status, head: head.to_owned(), body: body.to_owned() }
}
