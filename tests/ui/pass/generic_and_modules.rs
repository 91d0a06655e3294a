//! Generic handlers, handlers in modules imported elsewhere, and `cfg` on the handler.
#![deny(warnings)]

use axum::extract::State;
use axum::routing::post;
use axum::Router;

mod handlers {
    use axum::extract::State;
    use idem_runtime::idempotent;

    pub trait Greeter: Clone + Send + Sync + 'static {
        fn greet(&self) -> String;
    }

    #[idempotent]
    pub async fn greet<G: Greeter>(State(greeter): State<G>) -> String {
        greeter.greet()
    }

    #[cfg(all())]
    #[idempotent(required)]
    pub(crate) async fn counted(body: axum::body::Bytes) -> String {
        body.len().to_string()
    }
}

#[derive(Clone)]
struct English;

impl handlers::Greeter for English {
    fn greet(&self) -> String {
        "hello".to_owned()
    }
}

async fn plain(State(_): State<English>) {}

fn main() {
    let _app: Router = Router::new()
        .route("/greet", post(handlers::greet::<English>))
        .route("/count", post(handlers::counted))
        .route("/plain", post(plain))
        .with_state(English);
}
