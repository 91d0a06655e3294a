//! `keep_status(...)` / `release_status(...)`: status codes and inclusive ranges of them.

use proc_macro2::Span;
use syn::spanned::Spanned as _;

use super::Errors;

/// A status code or an inclusive range of them, as written in `keep_status(...)` /
/// `release_status(...)`.
#[derive(Clone, Copy)]
pub(crate) struct StatusRange {
    pub(crate) first: u16,
    pub(crate) last: u16,
    pub(crate) span: Span,
}

impl StatusRange {
    /// The statuses both ranges hold, if any, spanned at `other`.
    pub(crate) fn common(&self, other: &Self) -> Option<Self> {
        let (first, last) = (self.first.max(other.first), self.last.min(other.last));
        (first <= last).then_some(Self { first, last, span: other.span })
    }

    pub(crate) fn codes(&self) -> std::ops::RangeInclusive<u16> {
        self.first..=self.last
    }
}

impl std::fmt::Display for StatusRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}..={}", self.first, self.last)
        }
    }
}

/// `keep_status(409, 500..=503)`: final statuses (200 to 599) and inclusive ranges of them.
pub(super) fn parse(tokens: proc_macro2::TokenStream, name: &str, span: Span, errors: &mut Errors) -> Vec<StatusRange> {
    let example = if name == "keep_status" { "keep_status(409, 500..=503)" } else { "release_status(404, 410..=418)" };
    let items: Vec<syn::Expr> = super::value::list(
        tokens,
        span,
        errors,
        format!("`{name}(...)` needs at least one status code, e.g. `{example}`"),
        format!("`{name}(...)` takes status codes and ranges, e.g. `{example}`"),
    );
    let code = |expr: &syn::Expr, errors: &mut Errors| -> Option<u16> {
        let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Int(int), .. }) = expr else {
            errors.push(expr.span(), format!("`{name}(...)` takes status codes and ranges, e.g. `{example}`"));
            return None;
        };
        match int.base10_parse::<u16>() {
            Ok(code @ 200..=599) => Some(code),
            _ => {
                errors.push(
                    int.span(),
                    format!("{int} is not a final HTTP status; `{name}(...)` takes codes from 200 to 599"),
                );
                None
            }
        }
    };
    let mut ranges = Vec::new();
    for item in &items {
        let range = match item {
            syn::Expr::Range(syn::ExprRange {
                start: Some(first),
                limits: syn::RangeLimits::Closed(_),
                end: Some(last),
                ..
            }) => match (code(first, errors), code(last, errors)) {
                (Some(first), Some(last)) if first <= last => Some((first, last)),
                (Some(_), Some(_)) => {
                    errors
                        .push(item.span(), format!("the range is empty; write the lower code first, e.g. `{example}`"));
                    None
                }
                _ => None,
            },
            syn::Expr::Range(syn::ExprRange { start: Some(_), end: Some(_), .. }) => {
                errors.push(item.span(), format!("write an inclusive range with `..=`, e.g. `{example}`"));
                None
            }
            syn::Expr::Range(_) => {
                errors.push(item.span(), format!("a status range needs both ends, e.g. `{example}`"));
                None
            }
            _ => code(item, errors).map(|c| (c, c)),
        };
        if let Some((first, last)) = range {
            ranges.push(StatusRange { first, last, span: item.span() });
        }
    }
    ranges
}
