//! The tracing events, in a test binary of their own: tracing caches per-callsite interest
//! process-wide, so a test sharing its process with others could miss events.

mod common;

use std::sync::{Arc, Mutex};

use axum::routing::post;
use axum::Router;
use common::{app, echo, post_to, Down};
use idem_runtime::store::MemoryStore;
use idem_runtime::{idempotent, Idempotency};

#[idempotent(store = "layer")]
async fn layer_only() -> &'static str {
    "ran"
}

/// Collects formatted tracing output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn one_event_per_outcome_with_route_and_elapsed_time_and_no_secrets() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            // Before any layer in this process: zero configuration, and no warning.
            let bare = Router::new().route("/bare", post(echo));
            post_to("/bare").key("k").send(&bare).await;
            let (app, _) = app();
            let auth = "Bearer secret-token-1";
            let key = "secret-key-1";
            post_to("/pat").key(key).header("authorization", auth).send(&app).await;
            post_to("/pat").key(key).header("authorization", auth).send(&app).await;
            post_to("/pat").key(key).header("authorization", auth).json("[1]").send(&app).await;
            post_to("/pat").send(&app).await;
            let down = Router::new().route("/echo", post(echo)).layer(Idempotency::new(Down));
            post_to("/echo").key(key).send(&down).await;
            // A route added after the layer: refused, or served from the embedded store.
            let late = Router::new()
                .route("/echo", post(echo))
                .layer(Idempotency::new(MemoryStore::new()))
                .route("/late", post(layer_only))
                .route("/late-echo", post(echo));
            post_to("/late").key(key).send(&late).await;
            post_to("/late-echo").key(key).send(&late).await;
        });
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let refused = text
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("route=\"/late\""))
        .unwrap_or_else(|| panic!("no error event naming the route outside the layer in:\n{text}"));
    assert!(refused.contains("not behind one"), "{refused}");
    let warned = text
        .lines()
        .find(|l| l.contains("WARN") && l.contains("route=\"/late-echo\""))
        .unwrap_or_else(|| panic!("no warning naming the route served from the embedded store in:\n{text}"));
    assert!(warned.contains("embedded store"), "{warned}");
    assert!(!text.lines().any(|l| l.contains("WARN") && l.contains("route=\"/bare\"")), "{text}");
    for outcome in ["executed", "replayed", "mismatch", "rejected", "store-error", "store-not-configured"] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("outcome=\"{outcome}\"")))
            .unwrap_or_else(|| panic!("no {outcome} event in:\n{text}"));
        assert!(line.contains("route="), "{line}");
        assert!(line.contains("elapsed_us="), "{line}");
    }
    assert!(!text.contains("secret-token-1") && !text.contains("secret-key-1"), "{text}");
}

#[idem_runtime::idempotent(required)]
async fn logs(axum::Json(body): axum::Json<serde_json::Value>) -> axum::Json<serde_json::Value> {
    tracing::info!("the handler ran");
    axum::Json(body)
}

#[test]
fn one_span_per_covered_request_carries_its_outcome_and_holds_the_handler() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(move || writer.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let app = Router::new().route("/logs", post(logs));
            let auth = "Bearer secret-token-2";
            let key = "secret-key-2";
            post_to("/logs").key(key).header("authorization", auth).send(&app).await;
            post_to("/logs").key(key).header("authorization", auth).send(&app).await;
            post_to("/logs").header("authorization", auth).send(&app).await;
        });
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let closed: Vec<&str> = text.lines().filter(|l| l.contains("close")).collect();
    assert_eq!(closed.len(), 3, "one span per covered request:\n{text}");
    for (line, outcome, status) in
        [(closed[0], "executed", 200), (closed[1], "replayed", 200), (closed[2], "rejected", 400)]
    {
        let span = format!("idem{{method=POST route=\"/logs\" outcome=\"{outcome}\" status={status}}}");
        assert!(line.contains(&span), "{line}");
    }
    let ran: Vec<&str> = text.lines().filter(|l| l.contains("the handler ran")).collect();
    assert_eq!(ran.len(), 1, "{text}");
    assert!(ran[0].contains("idem{method=POST route=\"/logs\""), "the handler runs inside the span: {}", ran[0]);
    assert!(!text.contains("secret-token-2") && !text.contains("secret-key-2"), "{text}");
}
