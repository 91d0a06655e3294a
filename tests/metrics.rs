//! The metrics of covered requests, read back from a recorder of the test's own (the `metrics`
//! feature): each test installs it for its thread only and drives a real `Router` on a
//! current-thread runtime, so tests running in parallel never see each other's metrics.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use common::{app, app_with, app_with_layer, eventually, post_to, Down};
use idem_runtime::store::MemoryStore;
use idem_runtime::{idempotent, Idempotency};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;

/// Every value recorded since the last snapshot (counters and gauges as the change since then),
/// by metric name and labels (sorted: `name{k=v,…}`).
struct Recorded(BTreeMap<String, (MetricKind, DebugValue)>);

impl Recorded {
    fn of(snapshotter: &Snapshotter) -> Self {
        Self(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| {
                    let (kind, key) = key.into_parts();
                    let mut labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
                    labels.sort();
                    (format!("{}{{{}}}", key.name(), labels.join(",")), (kind, value))
                })
                .collect(),
        )
    }

    /// Each series of the metric `name` with its value, in order.
    fn series(&self, name: &str) -> Vec<(String, String)> {
        let prefix = format!("{name}{{");
        self.0
            .iter()
            .filter(|(series, _)| series.starts_with(&prefix))
            .map(|(series, (_, value))| {
                let value = match value {
                    DebugValue::Counter(n) => n.to_string(),
                    DebugValue::Gauge(g) => g.to_string(),
                    DebugValue::Histogram(samples) => format!("{} samples", samples.len()),
                };
                (series[prefix.len()..series.len() - 1].to_owned(), value)
            })
            .collect()
    }

    fn histogram(&self, series: &str) -> Vec<f64> {
        match self.0.get(series) {
            Some((MetricKind::Histogram, DebugValue::Histogram(samples))) => samples.iter().map(|s| s.0).collect(),
            other => panic!("{series}: {other:?}"),
        }
    }

    fn gauge(&self, series: &str) -> f64 {
        match self.0.get(series) {
            Some((MetricKind::Gauge, DebugValue::Gauge(value))) => value.0,
            other => panic!("{series}: {other:?}"),
        }
    }
}

/// Runs `session` on a current-thread runtime with a recorder of its own.
fn recorded<F: std::future::Future<Output = ()>>(session: impl FnOnce(Snapshotter) -> F) -> Recorded {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    metrics::with_local_recorder(&recorder, || runtime.block_on(session(recorder.snapshotter())));
    Recorded::of(&snapshotter)
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(series, value)| ((*series).to_owned(), (*value).to_owned())).collect()
}

#[test]
fn covered_requests_are_counted_per_route_and_outcome() {
    let recorded = recorded(|_| async {
        let (app, _) = app();
        let pat = || post_to("/pat").key("k").header("authorization", "Bearer t");
        assert_eq!(pat().send(&app).await.status, 201);
        assert!(pat().send(&app).await.replayed());
        assert_eq!(pat().json("[1]").send(&app).await.status, 422);
        assert_eq!(post_to("/required").send(&app).await.status, 400);
        assert_eq!(post_to("/required").key("a, b").send(&app).await.status, 400);
        assert_eq!(post_to("/pat").key("k").send(&app).await.status, 401);
        assert_eq!(post_to("/fails-once").key("f").send(&app).await.status, 500);
        assert_eq!(post_to("/panics-once").key("p").send(&app).await.status, 500);
        // Not covered: no key on an optional handler, a safe method.
        assert_eq!(post_to("/optional").send(&app).await.status, 201);
        assert_eq!(post_to("/annotated-get").method("GET").key("g").send(&app).await.status, 201);
        let (down, _) = app_with(Down);
        assert_eq!(post_to("/required").key("d").send(&down).await.status, 503);
        let (open, _) = app_with_layer(Idempotency::new(Down).fail_open(true));
        assert_eq!(post_to("/required").key("d").send(&open).await.status, 201);
    });
    let expected = [
        ("method=POST,outcome=executed,route=/pat", "1"),
        ("method=POST,outcome=executed-fail-open,route=/required", "1"),
        ("method=POST,outcome=executed-not-stored,route=/fails-once", "1"),
        ("method=POST,outcome=mismatch,route=/pat", "1"),
        ("method=POST,outcome=panicked,route=/panics-once", "1"),
        ("method=POST,outcome=rejected,route=/pat", "1"),
        ("method=POST,outcome=rejected,route=/required", "2"),
        ("method=POST,outcome=replayed,route=/pat", "1"),
        ("method=POST,outcome=store-error,route=/required", "1"),
    ];
    assert_eq!(recorded.series("idem_requests_total"), pairs(&expected));
    let one_sample_each: Vec<(&str, String)> =
        expected.iter().map(|&(series, count)| (series, format!("{count} samples"))).collect();
    let one_sample_each: Vec<(&str, &str)> = one_sample_each.iter().map(|(s, c)| (*s, c.as_str())).collect();
    assert_eq!(recorded.series("idem_added_seconds"), pairs(&one_sample_each));
}

#[test]
fn a_claim_is_in_flight_while_its_handler_runs_and_a_duplicate_is_a_conflict() {
    let recorded = recorded(|snapshotter| async move {
        let (app, hits) = app();
        let first = tokio::spawn({
            let app = app.clone();
            async move { post_to("/gated").key("g").send(&app).await }
        });
        eventually(Duration::from_secs(5), || hits.get("gated_started") == 1).await;
        let running = Recorded::of(&snapshotter);
        assert_eq!(running.gauge("idem_claims_in_flight{method=POST,route=/gated}"), 1.0);
        let duplicate = post_to("/gated").key("g").send(&app).await;
        assert_eq!(duplicate.status, 409);
        hits.open_gate();
        assert_eq!(first.await.unwrap().status, 201);
    });
    // A snapshot takes what was recorded since the one before: the claim counted while its
    // handler ran has been let go since.
    assert_eq!(recorded.gauge("idem_claims_in_flight{method=POST,route=/gated}"), -1.0);
    assert_eq!(
        recorded.series("idem_requests_total"),
        pairs(&[
            ("method=POST,outcome=conflict,route=/gated", "1"),
            ("method=POST,outcome=executed,route=/gated", "1")
        ])
    );
}

#[test]
fn store_operations_are_timed_per_operation_and_result() {
    let recorded = recorded(|_| async {
        let (app, _) = app();
        assert_eq!(post_to("/required").key("r").send(&app).await.status, 201);
        assert!(post_to("/required").key("r").send(&app).await.replayed());
        assert_eq!(post_to("/fails-once").key("f").send(&app).await.status, 500);
        // A 300 ms lease is renewed every 100 ms while this handler runs for 1.2 s.
        assert_eq!(post_to("/outlives-lease").key("o").send(&app).await.status, 201);
        let (down, _) = app_with(Down);
        assert_eq!(post_to("/required").key("d").send(&down).await.status, 503);
    });
    let operations: Vec<String> = recorded.series("idem_store_operation_seconds").into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        operations,
        [
            "operation=claim,result=ok",
            "operation=claim,result=unavailable",
            "operation=complete,result=ok",
            "operation=release,result=ok",
            "operation=renew,result=ok"
        ]
    );
    let samples = |series: &str| recorded.histogram(&format!("idem_store_operation_seconds{{{series}}}")).len();
    assert_eq!(samples("operation=claim,result=ok"), 4);
    assert_eq!(samples("operation=claim,result=unavailable"), 1);
    assert_eq!(samples("operation=complete,result=ok"), 2);
    assert_eq!(samples("operation=release,result=ok"), 1);
    assert!(samples("operation=renew,result=ok") >= 1);
}

#[idempotent(required)]
async fn slow_stream() -> Response {
    let chunk = futures_util::stream::once(async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok::<_, Infallible>(Bytes::from_static(b"done"))
    });
    Response::new(Body::from_stream(chunk))
}

/// The handler (`/slow` sleeps 400 ms) and the production of a streamed body (400 ms before its
/// one chunk) are not time idem adds: each sample stays far below them.
#[test]
fn the_time_idem_adds_leaves_out_the_handler_and_a_streamed_body() {
    let recorded = recorded(|_| async {
        let (app, _) = app();
        assert_eq!(post_to("/slow").key("s").send(&app).await.status, 201);
        let streaming =
            Router::new().route("/slow-stream", post(slow_stream)).layer(Idempotency::new(MemoryStore::new()));
        let streamed = post_to("/slow-stream").key("s").send(&streaming).await;
        assert_eq!(streamed.status, 200);
        assert_eq!(streamed.body, "done");
    });
    for route in ["/slow", "/slow-stream"] {
        let added = recorded.histogram(&format!("idem_added_seconds{{method=POST,outcome=executed,route={route}}}"));
        assert_eq!(added.len(), 1, "{route}");
        assert!(added[0] < 0.2, "{route}: {added:?}");
    }
}

#[idempotent(required)]
async fn anything(body: Bytes) -> Bytes {
    body
}

#[test]
fn labels_stay_bounded_whatever_paths_and_methods_clients_send() {
    let recorded = recorded(|_| async {
        // An annotated fallback has no route template: each request's path is its own.
        let app = Router::new().fallback(anything).layer(Idempotency::new(MemoryStore::new()));
        for n in 0..5 {
            let path = format!("/reset/token-{n}");
            assert_eq!(post_to(&path).key(&format!("k{n}")).send(&app).await.status, 200);
            assert_eq!(post_to(&path).method("PURGE").key(&format!("p{n}")).send(&app).await.status, 200);
        }
    });
    assert_eq!(
        recorded.series("idem_requests_total"),
        pairs(&[
            ("method=OTHER,outcome=executed,route=unmatched", "5"),
            ("method=POST,outcome=executed,route=unmatched", "5")
        ])
    );
}

#[test]
fn a_keyed_request_refused_for_its_body_size_is_counted() {
    let recorded = recorded(|_| async {
        let app = Router::new()
            .route("/anything", post(anything))
            .layer(axum::extract::DefaultBodyLimit::max(8))
            .layer(Idempotency::new(MemoryStore::new()));
        let reply = post_to("/anything").key("k").raw_body(vec![b'x'; 64]).send(&app).await;
        reply.assert_problem(413, "urn:idem:problem:body-too-large");
    });
    assert_eq!(recorded.series("idem_requests_total"), pairs(&[("method=POST,outcome=rejected,route=/anything", "1")]));
}
