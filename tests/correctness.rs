//! Never a wrong replay, never a second run: requests that once got another request's response
//! or ran a handler twice, each driven through a real `Router`.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{request::Parts, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use common::{eventually, post_to, Reply, Spy};
use http_body_util::BodyExt as _;
use idem_runtime::fingerprint::Fingerprint;
use idem_runtime::idempotent;
use idem_runtime::record::Record;
use idem_runtime::store::{Claim, ClaimToken, MemoryStore, RecordKey, Store, StoreError};
use idem_runtime::Idempotency;
use tower::ServiceExt as _;

/// Executions per handler, shared by the routers of one test.
#[derive(Default)]
struct Runs(AtomicUsize);

impl Runs {
    fn hit(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

type Counter = Arc<Runs>;

#[idempotent(required)]
async fn create(State(runs): State<Counter>, Json(body): Json<serde_json::Value>) -> Response {
    let n = runs.hit();
    (StatusCode::CREATED, Json(serde_json::json!({ "run": n, "body": body }))).into_response()
}

/// Each test gets a store of its own: the process-wide default is shared by every test here.
fn own_store<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(Idempotency::new(MemoryStore::new()))
}

async fn first_then_second(app: &Router, first: &str, second: &str) -> (Reply, Reply) {
    let a = post_to(first).key("k-1").json(r#"{"item":"book"}"#).send(app).await;
    let b = post_to(second).key("k-1").json(r#"{"item":"book"}"#).send(app).await;
    (a, b)
}

const KEY_REUSED: &str = "urn:idem:problem:key-reused";

/// Two requests addressing different resources with one key and body: the second is a
/// mismatch, never the first one's replay, and the handler ran once.
fn assert_not_shared(runs: &Runs, (a, b): (Reply, Reply)) {
    assert_eq!(a.status, StatusCode::CREATED);
    b.assert_problem(422, KEY_REUSED);
    assert_eq!(runs.get(), 1);
}

#[tokio::test]
async fn nested_router_paths_of_two_tenants_never_share_a_record() {
    let runs = Counter::default();
    let inner = Router::new().route("/orders", post(create)).with_state(runs.clone());
    let app = own_store(Router::new().nest("/tenants/{tid}", inner));
    assert_not_shared(&runs, first_then_second(&app, "/tenants/t1/orders", "/tenants/t2/orders").await);
}

#[tokio::test]
async fn nest_service_paths_of_two_tenants_never_share_a_record() {
    let runs = Counter::default();
    let inner = Router::new().route("/orders", post(create)).with_state(runs.clone());
    let app = own_store(Router::new().nest_service("/tenants/{tid}", inner));
    assert_not_shared(&runs, first_then_second(&app, "/tenants/t1/orders", "/tenants/t2/orders").await);
}

#[tokio::test]
async fn merged_router_without_a_path_parameter_binds_the_path() {
    let runs = Counter::default();
    let orders = Router::new().route("/orders/{id}/refunds", post(create)).with_state(runs.clone());
    let app = own_store(Router::new().merge(orders));
    assert_not_shared(&runs, first_then_second(&app, "/orders/1/refunds", "/orders/2/refunds").await);
}

#[tokio::test]
async fn the_query_is_bound_even_when_no_parameter_reads_it() {
    let runs = Counter::default();
    let app = own_store(Router::new().route("/orders", post(create))).with_state(runs.clone());
    assert_not_shared(&runs, first_then_second(&app, "/orders?dry_run=true", "/orders?dry_run=false").await);
}

#[tokio::test]
async fn a_route_layer_that_rewrites_the_uri_does_not_hide_the_path() {
    async fn rewrite(mut req: Request, next: Next) -> Response {
        *req.uri_mut() = "/rewritten".parse().unwrap();
        next.run(req).await
    }
    #[idempotent(required)]
    async fn by_id(
        State(runs): State<Counter>,
        axum::extract::Path(id): axum::extract::Path<u32>,
        Json(body): Json<serde_json::Value>,
    ) -> Response {
        let n = runs.hit();
        (StatusCode::CREATED, Json(serde_json::json!({ "run": n, "id": id, "body": body }))).into_response()
    }
    let runs = Counter::default();
    let app = own_store(Router::new().route("/orders/{id}", post(by_id).route_layer(middleware::from_fn(rewrite))))
        .with_state(runs.clone());
    assert_not_shared(&runs, first_then_second(&app, "/orders/1", "/orders/2").await);
}

#[tokio::test]
async fn the_same_target_still_replays() {
    let runs = Counter::default();
    let inner = Router::new().route("/orders", post(create)).with_state(runs.clone());
    let app = own_store(Router::new().nest("/tenants/{tid}", inner));
    let (a, b) = first_then_second(&app, "/tenants/t1/orders?x=1&y=2", "/tenants/t1/orders?y=2&x=1").await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert!(b.replayed(), "{b:?}");
    assert_eq!(a.body, b.body);
    assert_eq!(runs.get(), 1);
}

// --- Scope -----------------------------------------------------------------------------------

#[idempotent(required, scope = "pat")]
async fn per_token(State(runs): State<Counter>) -> Response {
    (StatusCode::CREATED, runs.hit().to_string()).into_response()
}

#[tokio::test]
async fn the_auth_scheme_is_case_insensitive() {
    let runs = Counter::default();
    let app = own_store(Router::new().route("/charges", post(per_token))).with_state(runs.clone());
    let first = post_to("/charges").key("k").header("authorization", "Bearer tok_1").send(&app).await;
    assert_eq!(first.status, StatusCode::CREATED);
    for scheme in ["bearer", "BEARER", "beaRer"] {
        let retry = post_to("/charges").key("k").header("authorization", &format!("{scheme} tok_1")).send(&app).await;
        assert!(retry.replayed(), "{scheme}: {retry:?}");
    }
    // The credential itself stays case-sensitive.
    let other = post_to("/charges").key("k").header("authorization", "Bearer TOK_1").send(&app).await;
    assert_eq!(other.status, StatusCode::CREATED);
    assert!(!other.replayed());
    assert_eq!(runs.get(), 2);
}

/// What an authentication layer put in the request: the caller, whatever credential it used.
#[derive(Clone)]
struct Principal(String);

fn principal(parts: &Parts) -> Result<String, StatusCode> {
    parts.extensions.get::<Principal>().map(|p| p.0.clone()).ok_or(StatusCode::UNAUTHORIZED)
}

#[idempotent(required, scope = with(principal))]
async fn per_principal(State(runs): State<Counter>, Extension(who): Extension<Principal>) -> Response {
    (StatusCode::CREATED, format!("{} {}", who.0, runs.hit())).into_response()
}

#[tokio::test]
async fn a_refreshed_credential_keeps_its_scope_when_scoped_by_principal() {
    // A stand-in for an auth layer: any token "jwt-<user>-<n>" authenticates <user>.
    async fn authenticate(mut req: Request, next: Next) -> Response {
        let token = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if let Some(user) = token.strip_prefix("Bearer jwt-").and_then(|t| t.split('-').next()) {
            let user = user.to_owned();
            req.extensions_mut().insert(Principal(user));
        }
        next.run(req).await
    }
    let runs = Counter::default();
    let app = own_store(Router::new().route("/charges", post(per_principal)))
        .layer(middleware::from_fn(authenticate))
        .with_state(runs.clone());
    let first = post_to("/charges").key("k").header("authorization", "Bearer jwt-alice-1").send(&app).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let refreshed = post_to("/charges").key("k").header("authorization", "Bearer jwt-alice-2").send(&app).await;
    assert!(refreshed.replayed(), "{refreshed:?}");
    let bob = post_to("/charges").key("k").header("authorization", "Bearer jwt-bob-1").send(&app).await;
    assert_eq!(bob.status, StatusCode::CREATED);
    assert!(!bob.replayed());
    let anonymous = post_to("/charges").key("k").send(&app).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(runs.get(), 2);
}

// --- What reaches the store ------------------------------------------------------------------

#[tokio::test]
async fn a_stored_fingerprint_is_keyed_by_the_idempotency_key() {
    let store = Spy::default();
    let runs = Counter::default();
    let app = Router::new().route("/otp", post(create)).layer(Idempotency::new(store.clone())).with_state(runs.clone());
    // The same low-entropy request under two keys: without the key, nobody holding a copy of the
    // store can tell the two apart, nor test a guess of the body against either.
    for key in ["k-a", "k-b"] {
        let reply = post_to("/otp").key(key).json(r#"{"otp":"123456"}"#).send(&app).await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let seen = store.fingerprints.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "two claims, two completions");
    assert_eq!(seen[0], seen[1], "one key, one fingerprint");
    assert_eq!(seen[2], seen[3], "one key, one fingerprint");
    assert_ne!(seen[0], seen[2], "the stored fingerprint depends on the key");
}

// --- Response bodies -------------------------------------------------------------------------

/// Chunks a streaming handler sends, released one at a time by the test.
type Feed = Arc<tokio::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>>>>;

#[derive(Clone)]
struct Streaming {
    runs: Counter,
    feed: Feed,
}

#[idempotent(required, lease = "300ms")]
async fn stream(State(s): State<Streaming>) -> Response {
    let n = s.runs.hit();
    let Some(chunks) = s.feed.lock().await.take() else {
        return (StatusCode::CREATED, format!("run {n} without a feed")).into_response();
    };
    let body = tokio_stream_from(chunks);
    (StatusCode::CREATED, [("x-run", n.to_string())], Body::from_stream(body)).into_response()
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn streaming_app() -> (Router, Counter, tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let runs = Counter::default();
    let state = Streaming { runs: runs.clone(), feed: Arc::new(tokio::sync::Mutex::new(Some(rx))) };
    let app = own_store(Router::new().route("/export", post(stream))).with_state(state);
    (app, runs, tx)
}

type Chunks = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Starts an export whose body has sent `first` and waits for more; returns the client's body
/// once it holds that first chunk.
async fn export_started(first: &'static [u8]) -> (Router, Counter, Chunks, Body) {
    let (app, runs, tx) = streaming_app();
    tx.send(Ok(Bytes::from_static(first))).await.unwrap();
    let response = app.clone().oneshot(post_to("/export").key("e").build()).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let mut body = response.into_body();
    let chunk = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&chunk[..], first);
    (app, runs, tx, body)
}

/// The export's retry is the replay of `whole`, and the handler ran once.
async fn export_replays(app: &Router, runs: &Runs, whole: &[u8]) {
    let mut replay = post_to("/export").key("e").send(app).await;
    // A body handed to a task of its own may still be finishing its record.
    while replay.status == StatusCode::CONFLICT {
        tokio::task::yield_now().await;
        replay = post_to("/export").key("e").send(app).await;
    }
    assert!(replay.replayed(), "{replay:?}");
    assert_eq!(&replay.body[..], whole);
    assert_eq!(replay.header("x-run"), Some("1"));
    assert_eq!(runs.get(), 1);
}

/// A deadlock guard: these tests wait on each other's steps, never on the clock, but a
/// regression must fail rather than hang.
async fn guarded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future).await.expect("the test's steps deadlocked")
}

#[tokio::test]
async fn a_streaming_body_reaches_the_client_chunk_by_chunk_and_is_stored() {
    guarded(async {
        // The client holds the first chunk while the handler's stream is still gated.
        let (app, runs, tx, body) = export_started(b"id,item\n").await;
        tx.send(Ok(Bytes::from_static(b"1,book\n"))).await.unwrap();
        drop(tx);
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"1,book\n");
        export_replays(&app, &runs, b"id,item\n1,book\n").await;
    })
    .await;
}

#[tokio::test]
async fn the_lease_holds_while_the_body_streams_past_it() {
    guarded(async {
        let (app, runs, tx, body) = export_started(b"a").await;
        // Several leases of 300 ms pass while the body is still being produced.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let duplicate = post_to("/export").key("e").send(&app).await;
        duplicate.assert_problem(409, "urn:idem:problem:in-flight");
        tx.send(Ok(Bytes::from_static(b"b"))).await.unwrap();
        drop(tx);
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"b");
        export_replays(&app, &runs, b"ab").await;
    })
    .await;
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_still_gets_the_replay() {
    guarded(async {
        let (app, runs, tx, body) = export_started(b"a").await;
        drop(body);
        tx.send(Ok(Bytes::from_static(b"b"))).await.unwrap();
        drop(tx);
        export_replays(&app, &runs, b"ab").await;
    })
    .await;
}

#[tokio::test]
async fn a_body_that_fails_after_the_handler_ran_is_never_run_again() {
    guarded(async {
        let (app, runs, tx) = streaming_app();
        tx.send(Ok(Bytes::from_static(b"partial"))).await.unwrap();
        tx.send(Err(std::io::Error::other("upstream reset"))).await.unwrap();
        let response = app.clone().oneshot(post_to("/export").key("e").build()).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert!(response.into_body().collect().await.is_err(), "the client sees the body fail");
        let retry = post_to("/export").key("e").send(&app).await;
        assert!(retry.replayed(), "{retry:?}");
        let problem = retry.assert_problem(201, "urn:idem:problem:body-failed");
        assert!(problem["detail"].as_str().unwrap().contains("executed"), "{problem}");
        assert_eq!(retry.header("x-run"), Some("1"));
        assert_eq!(runs.get(), 1);
    })
    .await;
}

/// A body that panics on its third poll: after its first chunk and, with `pending`, after it
/// had to wait (the response is then already on its way to the client).
#[idempotent(required)]
async fn panicking_body(
    State(runs): State<Counter>,
    axum::extract::Path(pending): axum::extract::Path<bool>,
) -> Response {
    let n = runs.hit();
    if n > 1 {
        return (StatusCode::CREATED, "fine").into_response();
    }
    let mut polls = 0;
    let body = futures_util::stream::poll_fn(move |cx| {
        polls += 1;
        match polls {
            1 => std::task::Poll::Ready(Some(Ok::<_, Infallible>(Bytes::from_static(b"a")))),
            2 if pending => {
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
            _ => panic!("the body panics while it is produced"),
        }
    });
    (StatusCode::CREATED, Body::from_stream(body)).into_response()
}

async fn panic_then_retry(pending: bool) -> (Result<Reply, axum::Error>, Reply, usize) {
    let runs = Counter::default();
    let app = own_store(Router::new().route("/p/{pending}", post(panicking_body))).with_state(runs.clone());
    let uri = format!("/p/{pending}");
    let response = app.clone().oneshot(post_to(&uri).key("p").build()).await.unwrap();
    let (parts, body) = response.into_parts();
    let first =
        body.collect().await.map(|b| Reply { status: parts.status, headers: parts.headers, body: b.to_bytes() });
    let retry = post_to(&uri).key("p").send(&app).await;
    (first, retry, runs.get())
}

#[tokio::test]
async fn a_panic_while_the_body_streams_releases_the_key() {
    let (first, retry, runs) = guarded(panic_then_retry(true)).await;
    assert!(first.is_err(), "the client sees the body fail: {first:?}");
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert!(!retry.replayed());
    assert_eq!(&retry.body[..], b"fine");
    assert_eq!(runs, 2);
}

#[tokio::test]
async fn a_panic_before_the_body_is_sent_is_a_500_and_releases_the_key() {
    let (first, retry, runs) = guarded(panic_then_retry(false)).await;
    first.unwrap().assert_problem(500, "urn:idem:problem:handler-panicked");
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert!(!retry.replayed());
    assert_eq!(runs, 2);
}

// --- Renewal never depends on the handler yielding -------------------------------------------

#[derive(Clone)]
struct Blocking {
    runs: Counter,
    gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl Blocking {
    fn open(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

/// Opens the gate however the test ends, so that a failed test does not leave the runtime
/// waiting for a blocked thread.
struct OpenOnDrop(Blocking);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

impl Blocking {
    fn wait(&self) {
        let (open, cv) = &*self.gate;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
    }
}

#[idempotent(required, lease = "300ms")]
async fn blocks_in_place(State(b): State<Blocking>) -> Response {
    let n = b.runs.hit();
    tokio::task::block_in_place(|| b.wait());
    (StatusCode::CREATED, n.to_string()).into_response()
}

/// Blocks its worker thread without telling the runtime: a long synchronous section.
#[idempotent(required, lease = "300ms")]
async fn blocks_its_worker(State(b): State<Blocking>) -> Response {
    let n = b.runs.hit();
    b.wait();
    (StatusCode::CREATED, n.to_string()).into_response()
}

/// Runs `handler` at `/b` on a multi-thread runtime, lets several leases pass while it blocks its
/// thread, and checks that a duplicate is told it is in flight, not run a second time.
async fn blocking_keeps_its_lease(handler: axum::routing::MethodRouter<Blocking>) {
    guarded(async {
        let b = Blocking { runs: Counter::default(), gate: Default::default() };
        let _open = OpenOnDrop(b.clone());
        // Should both workers end up blocked, nothing in the runtime could fail the test: a
        // watchdog thread opens the gate, and the assertions below report what happened.
        std::thread::spawn({
            let b = b.clone();
            move || {
                std::thread::sleep(Duration::from_secs(15));
                b.open();
            }
        });
        let app = own_store(Router::new().route("/b", handler)).with_state(b.clone());
        let first = tokio::spawn({
            let app = app.clone();
            async move { post_to("/b").key("b").send(&app).await }
        });
        eventually(Duration::from_secs(5), || b.runs.get() == 1).await;
        // Several leases pass while the handler never yields.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // In a task of its own: should it run the handler a second time, that blocks its thread.
        let duplicate = tokio::spawn({
            let app = app.clone();
            async move { post_to("/b").key("b").send(&app).await }
        });
        let duplicate = tokio::time::timeout(Duration::from_secs(5), duplicate)
            .await
            .expect("the duplicate ran the handler a second time")
            .unwrap();
        duplicate.assert_problem(409, "urn:idem:problem:in-flight");
        b.open();
        let first = first.await.unwrap();
        assert_eq!(first.status, StatusCode::CREATED);
        let replay = post_to("/b").key("b").send(&app).await;
        assert!(replay.replayed());
        assert_eq!(b.runs.get(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_in_block_in_place_keeps_its_lease() {
    blocking_keeps_its_lease(post(blocks_in_place)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_blocking_its_worker_keeps_its_lease() {
    blocking_keeps_its_lease(post(blocks_its_worker)).await;
}

// --- The background write after a store outage keeps the lease -------------------------------

#[idempotent(required, lease = "300ms")]
async fn short_lease(State(runs): State<Counter>) -> Response {
    (StatusCode::CREATED, runs.hit().to_string()).into_response()
}

#[tokio::test]
async fn a_record_write_retried_after_an_outage_keeps_the_lease() {
    let store = Spy::default();
    store.writes_fail.store(true, Ordering::SeqCst);
    let runs = Counter::default();
    let app =
        Router::new().route("/w", post(short_lease)).layer(Idempotency::new(store.clone())).with_state(runs.clone());
    let first = post_to("/w").key("w").send(&app).await;
    assert_eq!(first.status, StatusCode::CREATED);
    // Several leases pass while the record cannot be written.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let duplicate = post_to("/w").key("w").send(&app).await;
    duplicate.assert_problem(409, "urn:idem:problem:in-flight");
    store.writes_fail.store(false, Ordering::SeqCst);
    let mut retry = post_to("/w").key("w").send(&app).await;
    while retry.status == StatusCode::CONFLICT {
        tokio::time::sleep(Duration::from_millis(20)).await;
        retry = post_to("/w").key("w").send(&app).await;
    }
    assert!(retry.replayed(), "{retry:?}");
    assert_eq!(&retry.body[..], b"1");
    assert_eq!(runs.get(), 1);
}

// --- A store that lost its claims -------------------------------------------------------------

/// A store that has just found it forgot its in-flight claims.
struct Forgot;

impl Store for Forgot {
    async fn claim(&self, _: &RecordKey, _: &Fingerprint, _: Duration) -> Result<Claim, StoreError> {
        Err(StoreError::Recovering { retry_after: Duration::from_millis(2500) })
    }
    async fn complete(&self, _: &RecordKey, _: ClaimToken, _: Record) -> Result<(), StoreError> {
        unreachable!("no claim is granted")
    }
    async fn release(&self, _: &RecordKey, _: ClaimToken) -> Result<(), StoreError> {
        unreachable!("no claim is granted")
    }
    async fn renew(&self, _: &RecordKey, _: ClaimToken, _: Duration) -> Result<(), StoreError> {
        unreachable!("no claim is granted")
    }
}

#[tokio::test]
async fn a_store_recovering_lost_claims_is_a_503_even_when_failing_open() {
    let runs = Counter::default();
    let app = Router::new()
        .route("/r", post(short_lease))
        .layer(Idempotency::new(Forgot).fail_open(true))
        .with_state(runs.clone());
    let reply = post_to("/r").key("r").send(&app).await;
    reply.assert_problem(503, "urn:idem:problem:store-recovering");
    assert_eq!(reply.header("retry-after"), Some("3"));
    assert_eq!(runs.get(), 0);
}
