//! A router of annotated handlers that count their executions, and helpers to drive it.
#![allow(dead_code, unreachable_pub)]

pub mod demo;
pub mod json_values;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt as _;
use idem_runtime::fingerprint::Fingerprint;
use idem_runtime::idempotent;
use idem_runtime::record::Record;
use idem_runtime::store::{Claim, ClaimToken, MemoryStore, RecordKey, Store, StoreError};
use idem_runtime::Idempotency;
use tower::ServiceExt as _;

/// How many times each handler body ran.
#[derive(Default)]
pub struct Hits(Mutex<HashMap<&'static str, usize>>, std::sync::atomic::AtomicBool);

impl Hits {
    pub fn hit(&self, name: &'static str) -> usize {
        let mut map = self.0.lock().unwrap();
        let n = map.entry(name).or_default();
        *n += 1;
        *n
    }

    /// Lets every `/gated` handler finish.
    pub fn open_gate(&self) {
        self.1.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn get(&self, name: &'static str) -> usize {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

pub type Shared = Arc<Hits>;

fn created(n: usize, body: serde_json::Value) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::LOCATION, HeaderValue::from_str(&format!("/things/{n}")).unwrap());
    headers.insert(header::SET_COOKIE, HeaderValue::from_static("session=abc"));
    headers.insert(header::DATE, HeaderValue::from_static("Sun, 22 Nov 2026 12:00:00 GMT"));
    headers.insert("x-run", HeaderValue::from(n));
    (StatusCode::CREATED, headers, Json(serde_json::json!({ "run": n, "body": body }))).into_response()
}

#[idempotent(required)]
async fn required(State(hits): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    created(hits.hit("required"), body)
}

#[idempotent(optional)]
async fn optional(State(hits): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    created(hits.hit("optional"), body)
}

#[idempotent(required, ttl = "24h", scope = "pat")]
async fn pat(State(hits): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    created(hits.hit("pat"), body)
}

#[idempotent(required, scope = "global")]
async fn global(State(hits): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    created(hits.hit("global"), body)
}

#[idempotent(required, scope = header("X-Tenant"))]
async fn tenant_header(State(hits): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    created(hits.hit("tenant_header"), body)
}

/// The scope is the `X-Org` header, and its absence is the application's own 403.
fn org_of(parts: &Parts) -> Result<Vec<u8>, (StatusCode, &'static str)> {
    parts.headers.get("x-org").map(|v| v.as_bytes().to_vec()).ok_or((StatusCode::FORBIDDEN, "no org"))
}

#[idempotent(required, scope = with(org_of), skip(tenant))]
async fn with_scope(State(hits): State<Shared>, Path(tenant): Path<String>) -> Response {
    created(hits.hit("with_scope"), serde_json::json!(tenant))
}

#[idempotent(required, header = "Request-Id")]
async fn extra_header(State(hits): State<Shared>) -> Response {
    created(hits.hit("extra_header"), serde_json::Value::Null)
}

#[derive(serde::Deserialize)]
pub struct Page {
    pub n: Option<u32>,
}

#[idempotent(required)]
async fn query_path(State(hits): State<Shared>, Path(id): Path<u32>, Query(q): Query<Page>) -> Response {
    created(hits.hit("query_path"), serde_json::json!([id, q.n]))
}

#[idempotent(required, fingerprint(id))]
async fn only_path(State(hits): State<Shared>, Path(id): Path<u32>, Json(body): Json<serde_json::Value>) -> Response {
    created(hits.hit("only_path"), serde_json::json!([id, body]))
}

#[idempotent(required, lease = "10s")]
async fn slow(State(hits): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    hits.hit("slow_started");
    tokio::time::sleep(Duration::from_millis(400)).await;
    created(hits.hit("slow"), body)
}

#[idempotent(required)]
async fn gated(State(hits): State<Shared>) -> Response {
    hits.hit("gated_started");
    while !hits.1.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    created(hits.hit("gated"), serde_json::Value::Null)
}

#[idempotent(required, on_conflict = "wait", lease = "5s")]
async fn wait(State(hits): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    hits.hit("wait_started");
    tokio::time::sleep(Duration::from_millis(300)).await;
    created(hits.hit("wait"), body)
}

#[idempotent(required, lease = "300ms", ttl = "1m")]
async fn outlives_lease(State(hits): State<Shared>) -> Response {
    hits.hit("outlives_lease_started");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    created(hits.hit("outlives_lease"), serde_json::Value::Null)
}

#[idempotent(required)]
async fn panics_once(State(hits): State<Shared>) -> Response {
    if hits.hit("panics_once") == 1 {
        panic!("first run panics");
    }
    created(hits.get("panics_once"), serde_json::Value::Null)
}

#[idempotent(required)]
async fn fails_once(State(hits): State<Shared>) -> Response {
    if hits.hit("fails_once") == 1 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
    }
    created(hits.get("fails_once"), serde_json::Value::Null)
}

#[idempotent(required)]
async fn status(State(hits): State<Shared>, Path(code): Path<u16>) -> Response {
    hits.hit("status");
    StatusCode::from_u16(code).unwrap().into_response()
}

/// Stores a 409 (a final business conflict here) and releases 404 and 410 to 418.
#[idempotent(required, keep_status(409), release_status(404, 410..=418))]
async fn status_policy(State(hits): State<Shared>, Path(code): Path<u16>) -> Response {
    hits.hit("status_policy");
    StatusCode::from_u16(code).unwrap().into_response()
}

#[idempotent(required, replay_headers("Location", "set-cookie"))]
async fn allow_listed(State(hits): State<Shared>) -> Response {
    created(hits.hit("allow_listed"), serde_json::Value::Null)
}

#[idempotent(required, ttl = "1s")]
async fn short_ttl(State(hits): State<Shared>) -> Response {
    created(hits.hit("short_ttl"), serde_json::Value::Null)
}

#[idempotent(required)]
async fn big(State(hits): State<Shared>, Path(len): Path<usize>) -> Response {
    hits.hit("big");
    let mut response = (StatusCode::CREATED, vec![b'x'; len]).into_response();
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/big/1"));
    response
}

#[idempotent(required)]
async fn annotated_get(State(hits): State<Shared>) -> Response {
    created(hits.hit("annotated_get"), serde_json::Value::Null)
}

#[idempotent(required)]
async fn bytes(State(hits): State<Shared>, body: axum::body::Bytes) -> Response {
    created(hits.hit("bytes"), serde_json::json!(body.len()))
}

#[idempotent(required)]
pub async fn echo(Json(v): Json<serde_json::Value>) -> Json<serde_json::Value> {
    Json(v)
}

/// A `MemoryStore` that records what it is handed (every byte of the keys, fingerprints and
/// records, and the fingerprints one by one) and whose record writes fail while `writes_fail`
/// is set.
#[derive(Clone, Default)]
pub struct Spy {
    pub inner: MemoryStore,
    pub bytes: Arc<Mutex<Vec<u8>>>,
    pub fingerprints: Arc<Mutex<Vec<Fingerprint>>>,
    pub writes_fail: Arc<std::sync::atomic::AtomicBool>,
}

impl Store for Spy {
    async fn claim(&self, key: &RecordKey, fingerprint: &Fingerprint, lease: Duration) -> Result<Claim, StoreError> {
        {
            let mut bytes = self.bytes.lock().unwrap();
            bytes.extend_from_slice(key.as_bytes());
            bytes.extend_from_slice(key.to_hex().as_bytes());
            bytes.extend_from_slice(fingerprint.as_bytes());
        }
        self.fingerprints.lock().unwrap().push(*fingerprint);
        self.inner.claim(key, fingerprint, lease).await
    }
    async fn complete(&self, key: &RecordKey, token: ClaimToken, record: Record) -> Result<(), StoreError> {
        if self.writes_fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable("writes are failing".into()));
        }
        self.bytes.lock().unwrap().extend_from_slice(&record.encode());
        self.fingerprints.lock().unwrap().push(record.fingerprint);
        self.inner.complete(key, token, record).await
    }
    async fn release(&self, key: &RecordKey, token: ClaimToken) -> Result<(), StoreError> {
        self.inner.release(key, token).await
    }
    async fn renew(&self, key: &RecordKey, token: ClaimToken, lease: Duration) -> Result<(), StoreError> {
        self.inner.renew(key, token, lease).await
    }
}

/// A store that is never reachable.
pub struct Down;

impl Store for Down {
    async fn claim(&self, _: &RecordKey, _: &Fingerprint, _: Duration) -> Result<Claim, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn complete(&self, _: &RecordKey, _: ClaimToken, _: Record) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn release(&self, _: &RecordKey, _: ClaimToken) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn renew(&self, _: &RecordKey, _: ClaimToken, _: Duration) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
}

/// The test router, with `store` for every annotated route.
pub fn app_with(store: impl Store) -> (Router, Shared) {
    app_with_layer(Idempotency::new(store))
}

/// The test router behind `layer`.
pub fn app_with_layer(layer: Idempotency) -> (Router, Shared) {
    let hits = Shared::default();
    let router = Router::new()
        .route("/required", post(required))
        .route("/optional", post(optional))
        .route("/pat", post(pat))
        .route("/other-pat", post(pat))
        .route("/global", post(global))
        .route("/tenant", post(tenant_header))
        .route("/with/{tenant}", post(with_scope))
        .route("/extra-header", post(extra_header))
        .route("/items/{id}", post(query_path))
        .route("/only-path/{id}", post(only_path))
        .route("/slow", post(slow))
        .route("/wait", post(wait))
        .route("/gated", post(gated))
        .route("/outlives-lease", post(outlives_lease))
        .route("/panics-once", post(panics_once))
        .route("/fails-once", post(fails_once))
        .route("/status/{code}", post(status))
        .route("/short-ttl", post(short_ttl))
        .route("/status-policy/{code}", post(status_policy))
        .route("/allow-listed", post(allow_listed))
        .route("/big/{len}", post(big))
        .route("/annotated-get", get(annotated_get).put(annotated_get))
        .route("/bytes", post(bytes))
        .layer(layer)
        .with_state(hits.clone());
    (router, hits)
}

pub fn app() -> (Router, Shared) {
    app_with(MemoryStore::new())
}

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

/// The Redis server the tests share, from `IDEM_TEST_REDIS_URL`. Without it the caller skips,
/// saying so, except under CI, where a Redis test never skips.
pub fn redis_url(test: &str) -> Option<String> {
    server_url("IDEM_TEST_REDIS_URL", "redis://127.0.0.1:6379", test)
}

/// A test server's URL from the variable `var`; without it `None` (the caller skips, saying so
/// and naming an `example` value), except under CI, where a test never skips.
pub fn server_url(var: &str, example: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!("{test}: {var} is not set under CI"),
        _ => {
            eprintln!("skipped {test}: set {var}={example} to run it");
            None
        }
    }
}

/// A private `redis-server` on a free loopback port, stopped on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
    /// With persistence: the data directory (an append-only file synced on every write).
    dir: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Starts one, or skips (saying so) when `redis-server` is not installed outside CI.
    pub fn start(test: &str) -> Option<Self> {
        let available = std::process::Command::new("redis-server")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !available {
            assert!(std::env::var_os("CI").is_none(), "{test}: redis-server is not installed under CI");
            eprintln!("skipped {test}: redis-server is not installed");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = Self { port, child: None, dir: None };
        server.resume();
        Some(server)
    }

    /// Like [`RedisServer::start`], but what it holds survives a stop and resume.
    pub fn start_persistent(test: &str) -> Option<Self> {
        let mut server = Self::start(test)?;
        server.stop();
        let dir = std::env::temp_dir().join(format!("idem-redis-{}-{}", std::process::id(), server.port));
        std::fs::create_dir_all(&dir).unwrap();
        server.dir = Some(dir);
        server.resume();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (its data is gone).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn resume(&mut self) {
        assert!(self.child.is_none());
        let mut command = std::process::Command::new("redis-server");
        command.args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""]);
        match &self.dir {
            Some(dir) => command.args(["--appendonly", "yes", "--appendfsync", "always", "--dir"]).arg(dir),
            None => command.args(["--appendonly", "no"]),
        };
        let child = command.stdout(std::process::Stdio::null()).spawn().expect("redis-server starts");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ready = redis::Client::open(self.url())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok();
            if ready {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "redis-server did not answer on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Loses the response of the first `lose` connections: forwards the request, waits for the
/// server's answer, then closes the client's connection without it.
pub async fn lossy_proxy(upstream: std::net::SocketAddr, lose: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let Ok((mut client, _)) = listener.accept().await else { return };
            let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
            n += 1;
            if n > lose {
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                continue;
            }
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let (mut client_read, _client_write) = client.split();
                let (mut server_read, mut server_write) = server.split();
                let forward = async {
                    let mut buf = [0u8; 8192];
                    loop {
                        match client_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if server_write.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                };
                let mut answer = [0u8; 1];
                tokio::select! {
                    _ = forward => {}
                    _ = server_read.read(&mut answer) => {}
                }
                // Dropping both halves closes the client's connection: the response is lost.
            });
        }
    });
    addr
}

/// A UUIDv7 key minted at `at` (to the millisecond).
pub fn v7_at(at: std::time::SystemTime) -> String {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap();
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
    uuid::Uuid::new_v7(ts).hyphenated().to_string()
}

/// A fresh key in the layout of a UUIDv4: no time in it.
pub fn v4() -> String {
    let mut key = v7_at(std::time::SystemTime::now());
    key.replace_range(14..15, "4");
    key
}
