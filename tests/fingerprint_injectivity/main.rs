//! Fingerprint injectivity, through a real `Router`: of two generated requests to one handler,
//! the second sent with the first's key is refused (422) whenever they differ in a byte the
//! handler can observe — the path, the query, the raw target, a form, a selected header, a
//! body — and replays whenever they are one request by the documented equivalences (JSON key
//! order, whitespace, escapes and number notation; query and form pairs as decoded, in a
//! stable order) or differ only in what the handler does not read.
//!
//! Which requests are one is decided here by a model of what each handler observes, written
//! apart from idem's encoding: the raw bytes it reads, form pairs decoded byte for byte, JSON
//! values as `serde_json` holds them.

#[path = "../common/mod.rs"]
mod common;
mod edits;
mod handlers;
mod requests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use axum::http::StatusCode;
use common::Reply;
use edits::case;
use handlers::APP;
use proptest::prelude::*;
use requests::Req;
use tower::ServiceExt as _;

static KEYS: AtomicU64 = AtomicU64::new(0);

fn fresh_key() -> String {
    format!("case-{}", KEYS.fetch_add(1, Ordering::SeqCst))
}

async fn send(req: &Req, key: &str) -> Reply {
    Reply::read(APP.clone().oneshot(req.build(key)).await.unwrap()).await
}

static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap());

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1536))]

    /// `a` runs with a key; `b` with that key replays `a`'s response exactly when the model
    /// says they are one request, and is refused (422) otherwise — or rejected as `b` alone is,
    /// when its handler's extractor refuses it. Sent twice (the second time its JSON digest
    /// comes from the table of recent bodies) the answer is the same, and `a` still replays.
    #[test]
    fn requests_share_a_fingerprint_exactly_when_their_handler_observes_the_same((a, edit) in case()) {
        let b = edit.apply(&a);
        let same = a.observed() == b.observed();
        RUNTIME.block_on(async {
            let (key, alone) = (fresh_key(), fresh_key());
            let first = send(&a, &key).await;
            prop_assert_eq!(first.status, StatusCode::CREATED, "{:?}", a);
            let b_alone = send(&b, &alone).await;
            for attempt in ["first", "second"] {
                let second = send(&b, &key).await;
                let context = format!("{attempt} {:?} after {:?}: {:?}", b, a, second);
                if same {
                    prop_assert!(second.replayed(), "one request, not replayed: {}", context);
                    prop_assert_eq!(&second.body, &first.body, "{}", context);
                } else {
                    prop_assert!(!second.replayed(), "another request got the first's response: {}", context);
                    if b_alone.status == StatusCode::CREATED {
                        prop_assert_eq!(second.status.as_u16(), 422, "{}", context);
                    } else {
                        prop_assert_eq!(second.status, b_alone.status, "{}", context);
                    }
                }
            }
            let again = send(&a, &key).await;
            prop_assert!(again.replayed() && again.body == first.body, "the first request again: {:?}", again);
            Ok(())
        })?;
    }
}
