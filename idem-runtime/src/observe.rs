//! What an operator sees of covered requests besides their events: a tracing span per request
//! that carries its outcome and, with the `metrics` feature, metrics through the `metrics`
//! facade (names and labels in the guide's observability chapter). Without the feature the
//! metric types here are empty and cost nothing.

use http::Method;
use tracing::Span;

#[cfg(feature = "metrics")]
mod metered;
#[cfg(feature = "metrics")]
pub(crate) use metered::{record, timed, Digests, HeldClaim, Stopwatch};
#[cfg(all(feature = "metrics", feature = "postgres"))]
pub(crate) use metered::{time_operation, Operation};

#[cfg(not(feature = "metrics"))]
mod unmetered;
#[cfg(not(feature = "metrics"))]
pub(crate) use unmetered::{record, timed, Digests, HeldClaim, Stopwatch};
#[cfg(all(not(feature = "metrics"), feature = "postgres"))]
pub(crate) use unmetered::{time_operation, Operation};

/// The name observation gives `method`: its own for the standard methods, `OTHER` for an
/// extension method, whose name a client chooses freely.
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

/// The span of a covered request (target `idem`, name `idem`): its method and route template,
/// and once known its `outcome` and `status`. The handler runs inside it.
pub(crate) fn span(method: &Method, route: &str) -> Span {
    tracing::info_span!(
        target: "idem",
        "idem",
        method = %method_label(method),
        route,
        outcome = tracing::field::Empty,
        status = tracing::field::Empty
    )
}
