//! The values of single arguments: durations, header names, scopes and lists of names.

use std::time::Duration;

use proc_macro2::Span;
use syn::parse::Parse;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{Ident, LitStr, Token};

use super::{Errors, Scope};

pub(super) fn lit_str(expr: &syn::Expr) -> Option<&LitStr> {
    match expr {
        syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s),
        _ => None,
    }
}

/// `ttl = "24h"`: a humantime duration longer than zero.
pub(super) fn duration(expr: &syn::Expr, name: &str, errors: &mut Errors) -> Option<Duration> {
    let Some(s) = lit_str(expr) else {
        errors.push(expr.span(), format!("`{name}` takes a duration string, e.g. `{name} = \"24h\"` or `\"30s\"`"));
        return None;
    };
    match humantime::parse_duration(&s.value()) {
        Ok(d) if d.is_zero() => {
            errors.push(s.span(), format!("`{name}` must be longer than zero, e.g. `{name} = \"24h\"`"));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(
                s.span(),
                format!("`{name} = {:?}` is not a duration ({e}); write e.g. \"24h\", \"15m\" or \"30s\"", s.value()),
            );
            None
        }
    }
}

/// A header name, lower-cased; `what` names it in the error.
pub(super) fn header_name(lit: &LitStr, what: &str, errors: &mut Errors) -> Option<String> {
    let name = lit.value();
    if idem_rules::is_header_name(&name) {
        Some(name.to_ascii_lowercase())
    } else {
        errors.push(
            lit.span(),
            format!("{what} {name:?} is not a valid header name; use letters, digits and `-`, e.g. \"X-Tenant\""),
        );
        None
    }
}

pub(super) fn scope(expr: &syn::Expr, errors: &mut Errors) -> Option<Scope> {
    const EXPECTED: &str =
        "expected `scope = \"auto\"`, `\"pat\"`, `\"global\"`, `header(\"X-Tenant\")` or `with(path::to::fn)`";
    if let Some(s) = lit_str(expr) {
        return match s.value().as_str() {
            "auto" => Some(Scope::Auto),
            "pat" => Some(Scope::Pat),
            "global" => Some(Scope::Global),
            other => {
                errors.push(s.span(), format!("unknown scope {other:?}; {EXPECTED}"));
                None
            }
        };
    }
    if let syn::Expr::Call(call) = expr {
        if let syn::Expr::Path(func) = &*call.func {
            let args: Vec<_> = call.args.iter().collect();
            if func.path.is_ident("header") {
                return match args.as_slice() {
                    [arg] if lit_str(arg).is_some() => {
                        header_name(lit_str(arg).expect("checked"), "the scope header", errors).map(Scope::Header)
                    }
                    _ => {
                        errors.push(
                            call.span(),
                            "`header(...)` takes one header name, e.g. `scope = header(\"X-Tenant\")`",
                        );
                        None
                    }
                };
            }
            if func.path.is_ident("with") {
                return match args.as_slice() {
                    [syn::Expr::Path(p)] => Some(Scope::With(p.path.clone())),
                    _ => {
                        errors.push(
                            call.span(),
                            "`with(...)` takes the path of a function `fn(&Parts) -> Result<impl AsRef<[u8]>, impl IntoResponse>`, e.g. `scope = with(tenant_of)`",
                        );
                        None
                    }
                };
            }
        }
    }
    errors.push(expr.span(), EXPECTED);
    None
}

/// The items of a non-empty `name(a, b, …)` list; an empty or unparsable list is reported with
/// `empty` or `malformed` and gives no items.
pub(super) fn list<T: Parse>(
    tokens: proc_macro2::TokenStream,
    span: Span,
    errors: &mut Errors,
    empty: String,
    malformed: String,
) -> Vec<T> {
    match syn::parse::Parser::parse2(Punctuated::<T, Token![,]>::parse_terminated, tokens) {
        Ok(items) if !items.is_empty() => items.into_iter().collect(),
        Ok(_) => {
            errors.push(span, empty);
            Vec::new()
        }
        Err(e) => {
            errors.push(e.span(), malformed);
            Vec::new()
        }
    }
}

/// `fingerprint(order, id)` / `skip(...)`: parameter bindings, checked against the function later.
pub(super) fn parameter_names(
    tokens: proc_macro2::TokenStream,
    name: &str,
    span: Span,
    errors: &mut Errors,
) -> Vec<Ident> {
    list(
        tokens,
        span,
        errors,
        format!("`{name}(...)` needs at least one parameter name, e.g. `{name}(order)`"),
        format!("`{name}(...)` takes parameter names separated by commas, e.g. `{name}(order, id)`"),
    )
}

/// `replay_headers("location", "set-cookie")`: the only headers a replay repeats, lower-cased.
pub(super) fn replay_headers(tokens: proc_macro2::TokenStream, span: Span, errors: &mut Errors) -> Vec<String> {
    const EXAMPLE: &str = "`replay_headers(\"location\", \"set-cookie\")`";
    let names: Vec<LitStr> = list(
        tokens,
        span,
        errors,
        format!("`replay_headers(...)` needs at least one header name, e.g. {EXAMPLE}"),
        format!("`replay_headers(...)` takes header name strings, e.g. {EXAMPLE}"),
    );
    let mut kept: Vec<String> = Vec::new();
    for lit in &names {
        let Some(name) = header_name(lit, "the replayed header", errors) else { continue };
        if let Some(never) = idem_rules::never_replayed(&name) {
            errors.push(lit.span(), format!("`{}` {}; leave it out", lit.value(), never.reason()));
        } else if kept.contains(&name) {
            errors.push(lit.span(), format!("`{}` is listed twice; keep one", lit.value()));
        } else {
            kept.push(name);
        }
    }
    kept
}
