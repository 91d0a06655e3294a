//! An attribute written below `#[idempotent]` applies to the handler as written: a
//! `#[tracing::instrument]` there sees the handler's own parameters and names its span after the
//! handler.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::Router;
use idem_runtime::idempotent;
use tower::ServiceExt as _;
use tracing::span;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::Layer;

#[derive(Clone)]
struct Db;

#[idempotent(required)]
#[tracing::instrument(skip(db))]
async fn create_order(State(db): State<Db>, body: String) -> (StatusCode, String) {
    let Db = db;
    (StatusCode::CREATED, body)
}

/// A span's name and its fields' names.
type Opened = (String, Vec<String>);

/// Every span opened.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Opened>>>);

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, _: &span::Id, _: Context<'_, S>) {
        let fields = attrs.metadata().fields().iter().map(|f| f.name().to_owned()).collect();
        self.0.lock().unwrap().push((attrs.metadata().name().to_owned(), fields));
    }
}

#[tokio::test]
async fn instrument_below_the_attribute_spans_the_handler_under_its_own_name_and_parameters() {
    let spans = Spans::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let app = Router::new().route("/orders", post(create_order)).with_state(Db);

    let request = Request::post("/orders").header("idempotency-key", "k1").body(Body::from("2 x tea")).unwrap();
    let response = app.oneshot(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::CREATED);
    let spans = spans.0.lock().unwrap().clone();
    let handler: Vec<_> = spans.iter().filter(|(name, _)| name == "create_order").collect();
    assert_eq!(handler.len(), 1, "spans opened: {spans:?}");
    assert_eq!(handler[0].1, ["body"], "`db` is skipped, `body` recorded");
}
