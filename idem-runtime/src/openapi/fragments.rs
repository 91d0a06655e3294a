//! The pieces of OpenAPI that [`document`](super::document) adds to an operation: the key header
//! parameter, the response headers, and the problem schema.

use std::time::Duration;

use serde_json::{json, Value};
use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{Header, RefOr};

use super::REPLAYED;
use crate::config::HandlerConfig;
use crate::key::MAX_CLOCK_SKEW;
use crate::problem::{ProblemKind, PROBLEM_JSON};

pub(super) fn key_parameter(operation: &mut Operation, config: &HandlerConfig) {
    let name = config.header.map_or_else(|| "Idempotency-Key".to_owned(), title_case);
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    parameters.retain(
        |p| !matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Header && p.name.eq_ignore_ascii_case(&name)),
    );
    let alternatives = match config.header {
        Some(_) => "`Idempotency-Key` and `X-Idempotency-Key` are accepted as well",
        None => "`X-Idempotency-Key` is accepted as well",
    };
    let without = if config.required {
        "A request without a key is refused (400)."
    } else {
        "A request without a key runs without idempotency."
    };
    let dated = if config.refuse_expired {
        format!(
            " A UUIDv7 key (in its 36-character text form) dates the request's logical call: a request that began \
             more than {ttl} ago ({skew} more are allowed for clock skew) and whose response is no longer kept is \
             refused (412) rather than run again, and one dated more than {skew} ahead is refused (400).",
            ttl = human(config.ttl),
            skew = human(MAX_CLOCK_SKEW),
        )
    } else {
        String::new()
    };
    let description = format!(
        "A unique value for this request, e.g. a UUID: 1 to 255 visible ASCII characters, bare or as a quoted \
         string. A retry with the same key and the same request receives the response of the first (marked \
         `{REPLAYED}: true`) for {ttl} after it completed, and the operation does not run again; the same key \
         with a different request is refused (422). {without} {alternatives}, with the same value.{dated}",
        ttl = human(config.ttl),
    );
    let parameter: Parameter = from_json(json!({
        "name": name,
        "in": "header",
        "required": config.required,
        "description": description,
        "schema": {
            "type": "string",
            // Bare: visible ASCII but `,`, not starting with `"`. Quoted: a Structured Field
            // string whose content is visible ASCII, `"` and `\` escaped.
            "pattern": r#"^(?:[\x21\x23-\x2b\x2d-\x7e][\x21-\x2b\x2d-\x7e]{0,254}|"(?:[\x21\x23-\x5b\x5d-\x7e]|\\[\x22\x5c]){1,255}")$"#,
            // A UUIDv4: a UUIDv7 example would be dated, and too old for anyone copying it.
            "examples": ["8e03978e-40d5-43e8-bc93-6894a57f9324"],
        },
    }));
    parameters.push(RefOr::T(parameter));
}

/// `Repeatability-First-Sent`, on a handler that refuses requests past their lifetime.
pub(super) fn first_sent_parameter(operation: &mut Operation, config: &HandlerConfig) {
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    let name = "Repeatability-First-Sent";
    parameters.retain(
        |p| !matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Header && p.name.eq_ignore_ascii_case(name)),
    );
    let description = format!(
        "When this request was first sent, the same on every retry, as an HTTP-date (`Sun, 06 Nov 1994 08:49:37 \
         GMT`), as in the OASIS Repeatable Requests spec. Read with a key only. A request first sent more than \
         {ttl} ago ({skew} more are allowed for clock skew) whose response is no longer kept is refused (412) \
         rather than run again: whether it took effect is unknown. A date more than {skew} ahead, or a value that \
         is not one HTTP-date, is refused (400). With a UUIDv7 key as well, the earlier of the two times counts.",
        ttl = human(config.ttl),
        skew = human(MAX_CLOCK_SKEW),
    );
    let parameter: Parameter = from_json(json!({
        "name": name,
        "in": "header",
        "required": false,
        "description": description,
        "schema": {
            "type": "string",
            // What a sender generates: the IMF-fixdate form (the obsolete forms are accepted too).
            "pattern": "^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT$",
        },
    }));
    parameters.push(RefOr::T(parameter));
}

pub(super) fn replayed_header() -> Header {
    from_json(json!({
        "description": format!(
            "`true` when this response is the stored response of an earlier request with the same key: the \
             operation did not run again. Such a replay also carries that request's `X-Request-Id`, when it had \
             one. If the stored response's body could not be kept (too large, or it failed while it was \
             produced), the replay has its status and headers and an `{PROBLEM_JSON}` body of type `{}` or `{}`.",
            ProblemKind::BodyNotStored.type_uri(),
            ProblemKind::BodyFailed.type_uri(),
        ),
        "schema": { "type": "string", "enum": ["true"] },
    }))
}

pub(super) fn retry_after_header() -> Header {
    from_json(json!({
        "description": "How many seconds to wait before retrying with the same key.",
        "schema": { "type": "integer", "minimum": 1 },
    }))
}

pub(super) fn problem_schema() -> Schema {
    from_json(json!({
        "type": "object",
        "description": "An RFC 9457 problem, as idem answers with it.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {
                "type": "string",
                "format": "uri-reference",
                "description": "What went wrong: a stable URI per kind of problem, such as `urn:idem:problem:key-reused`.",
            },
            "title": { "type": "string", "description": "A short summary of the kind of problem." },
            "status": { "type": "integer", "minimum": 100, "maximum": 599, "description": "The response's status." },
            "detail": { "type": "string", "description": "What to do about this occurrence." },
        },
    }))
}

/// `x-request-key` as `X-Request-Key`.
fn title_case(name: &str) -> String {
    let words = name.split('-').map(|word| {
        let mut chars = word.chars();
        chars.next().map_or_else(String::new, |first| first.to_ascii_uppercase().to_string() + chars.as_str())
    });
    words.collect::<Vec<_>>().join("-")
}

/// `24 hours`, `90 seconds`, `1500 ms`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = match secs {
        _ if d.subsec_nanos() != 0 => return format!("{} ms", d.as_millis()),
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a well-formed OpenAPI fragment")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written() {
        let cases = [(86_400, "1 day"), (172_800, "2 days"), (7_200, "2 hours"), (90, "90 seconds"), (60, "1 minute")];
        for (secs, text) in cases {
            assert_eq!(human(Duration::from_secs(secs)), text);
        }
        assert_eq!(human(Duration::from_millis(1500)), "1500 ms");
    }

    #[test]
    fn header_names_are_shown_in_title_case() {
        assert_eq!(title_case("x-request-key"), "X-Request-Key");
        assert_eq!(title_case("idempotency-token"), "Idempotency-Token");
    }
}
