//! A handler that calls a provider downstream with a key derived from its own: when the handler
//! fails after the provider charged (a 503 that releases the key, as a crash or a rolled-back
//! transaction would), the client's retry runs the handler again, and the provider, given the
//! same derived key, replays its charge instead of charging twice.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::post_to;
use idem_runtime::client::{self, IdempotencyKeyExt as _};
use idem_runtime::downstream::DownstreamKeys;
use idem_runtime::store::MemoryStore;
use idem_runtime::{idempotent, Idempotency};

/// The provider: charges once per key, and notes the key of every request it receives.
#[derive(Clone, Default)]
struct Provider {
    charges: Arc<AtomicUsize>,
    keys: Arc<Mutex<Vec<String>>>,
}

#[idempotent(required)]
async fn charge(State(provider): State<Provider>) -> (StatusCode, String) {
    let n = provider.charges.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::CREATED, format!("ch_{n}"))
}

async fn note_key(
    State(provider): State<Provider>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let key = request.headers().get("idempotency-key").map(|v| v.to_str().unwrap().to_owned());
    provider.keys.lock().unwrap().push(key.unwrap_or_default());
    next.run(request).await
}

/// The payer: charges through the provider, then fails its first attempt after the charge.
#[derive(Clone)]
struct Payer {
    provider: String,
    http: reqwest_middleware::ClientWithMiddleware,
    attempts: Arc<AtomicUsize>,
}

#[idempotent(required)]
async fn pay(State(payer): State<Payer>, keys: DownstreamKeys) -> (StatusCode, String) {
    let charged = payer.http.post(&payer.provider).idempotency_key(keys.key("charge")).send().await.unwrap();
    let charge = charged.text().await.unwrap();
    if payer.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
        return (StatusCode::SERVICE_UNAVAILABLE, "crashed after the charge".into());
    }
    (StatusCode::CREATED, charge)
}

#[idempotent]
async fn maybe_pay(keys: Option<DownstreamKeys>) -> String {
    keys.map_or_else(|| "no key".into(), |keys| keys.key("charge").as_str().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_failure_past_the_downstream_call_charges_once() {
    let provider = Provider::default();
    let provider_app = Router::new()
        .route("/charges", post(charge))
        .layer(Idempotency::new(MemoryStore::new()))
        .layer(axum::middleware::from_fn_with_state(provider.clone(), note_key))
        .with_state(provider.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, provider_app).await.unwrap() });

    let payer = Payer {
        provider: format!("http://{addr}/charges"),
        http: client::wrap(reqwest::Client::new()),
        attempts: Arc::default(),
    };
    let app = Router::new().route("/payments", post(pay)).layer(Idempotency::new(MemoryStore::new())).with_state(payer);

    let first = post_to("/payments").key("pay-1").send(&app).await;
    assert_eq!(first.status, 503, "the first attempt failed after the charge");
    let retry = post_to("/payments").key("pay-1").send(&app).await;
    assert_eq!((retry.status.as_u16(), retry.body.as_ref()), (201, &b"ch_1"[..]), "the provider replayed its charge");
    assert_eq!(provider.charges.load(Ordering::SeqCst), 1, "charged once");
    let keys = provider.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2, "the provider received both attempts");
    assert_eq!(keys[0], keys[1], "under one key");
    assert!(!keys[0].contains("pay-1"), "derived, not the payer's own key: {}", keys[0]);

    // Another payment: another downstream key.
    let other = post_to("/payments").key("pay-2").send(&app).await;
    assert_eq!((other.status.as_u16(), other.body.as_ref()), (201, &b"ch_2"[..]));
    assert_ne!(provider.keys.lock().unwrap()[2], keys[0]);
}

#[tokio::test]
async fn without_a_key_the_handler_gets_none_or_the_request_is_refused() {
    #[idempotent]
    async fn needs_keys(keys: DownstreamKeys) -> String {
        keys.key("charge").as_str().to_owned()
    }
    let app = Router::new()
        .route("/maybe", post(maybe_pay))
        .route("/needs", post(needs_keys))
        .layer(Idempotency::new(MemoryStore::new()));
    let keyed = post_to("/maybe").key("k").send(&app).await;
    assert_eq!(keyed.status, 200);
    assert_eq!(post_to("/maybe").key("k").send(&app).await.body, keyed.body, "stable across attempts");
    assert_eq!(post_to("/maybe").send(&app).await.body.as_ref(), b"no key");
    post_to("/needs").send(&app).await.assert_problem(400, "urn:idem:problem:missing-key");
}
