//! A service's defaults, stated once: handlers inherit them, override any of them, and defaults
//! start from other defaults.
#![deny(warnings)]

use axum::http::{request::Parts, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use idem_runtime::{defaults, Defaults};

fn tenant(parts: &Parts) -> Result<String, StatusCode> {
    parts.headers.get("x-tenant").and_then(|v| v.to_str().ok()).map(str::to_owned).ok_or(StatusCode::FORBIDDEN)
}

/// Every argument that describes a service.
pub const IDEM: Defaults = defaults!(
    required,
    ttl = "7d",
    lease = "45s",
    scope = with(tenant),
    on_conflict = "wait",
    on_expired_key = "run",
    header = "Request-Id",
    keep_status(409),
    release_status(404),
    replay_headers("location"),
    store = "layer",
    crate = "idem_runtime",
);

/// Other defaults, from these.
const ADMIN: Defaults = defaults!(defaults = IDEM, scope = "global", ttl = "1h");

mod handlers {
    use axum::Json;
    use idem_runtime::idempotent;

    #[idempotent(defaults = crate::IDEM)]
    pub async fn create(Json(body): Json<serde_json::Value>) -> Json<serde_json::Value> {
        Json(body)
    }

    /// Every argument overridden.
    #[idempotent(
        defaults = crate::IDEM,
        optional,
        ttl = "1d",
        lease = "10s",
        scope = "pat",
        on_conflict = "reject",
        on_expired_key = "refuse",
        header = "X-Request-Key",
        release_status(410),
        replay_headers("set-cookie"),
        store = "layer-or-embedded",
        fingerprint(body),
    )]
    pub async fn update(Json(body): Json<serde_json::Value>) -> Json<serde_json::Value> {
        Json(body)
    }

    /// A `ttl` that outlasts the inherited 45 s lease; a `lease` within the inherited ttl.
    #[idempotent(defaults = super::ADMIN, ttl = "2m")]
    pub async fn admin() -> &'static str {
        "done"
    }

    #[idempotent(defaults = crate::IDEM, lease = "1h")]
    pub async fn slow() -> &'static str {
        "done"
    }
}

fn main() {
    let _app: Router = Router::new()
        .route("/create", post(handlers::create))
        .route("/update", post(handlers::update))
        .route("/admin", post(handlers::admin))
        .route("/slow", post(handlers::slow));
    let _ = Json(());
}
