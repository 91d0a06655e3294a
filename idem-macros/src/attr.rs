//! Parsing `#[idempotent(...)]` arguments, with every error spanned and collected.

use std::time::Duration;

use proc_macro2::Span;
use syn::ext::IdentExt as _;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{parenthesized, Ident, LitStr, Path, Token, Type};

const ARGUMENTS: &str =
    "`required`, `optional`, `ttl`, `scope`, `fingerprint(...)`, `skip(...)`, `lease`, `on_conflict`, \
     `header`, `keep_status(...)`, `release_status(...)`, `replay_headers(...)`, `crate`, `state`";

/// Collects errors so that all of them are reported at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        let error = syn::Error::new(span, message);
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn into_result(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// A value that may be given once.
pub(crate) struct Once<T>(Option<(T, Span)>);

impl<T> Default for Once<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> Once<T> {
    fn set(&mut self, value: T, span: Span, name: &str, errors: &mut Errors) {
        if self.0.is_some() {
            errors.push(span, format!("`{name}` is given more than once; keep one"));
        } else {
            self.0 = Some((value, span));
        }
    }

    pub(crate) fn get(&self) -> Option<&T> {
        self.0.as_ref().map(|(v, _)| v)
    }

    pub(crate) fn span(&self) -> Option<Span> {
        self.0.as_ref().map(|(_, s)| *s)
    }
}

pub(crate) enum Scope {
    Auto,
    Global,
    Pat,
    Header(String),
    With(Path),
}

pub(crate) enum Select {
    Only(Vec<Ident>),
    Skip(Vec<Ident>),
}

/// The validated arguments.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) required: Once<bool>,
    pub(crate) ttl: Once<Duration>,
    pub(crate) lease: Once<Duration>,
    pub(crate) scope: Once<Scope>,
    pub(crate) select: Once<Select>,
    pub(crate) wait: Once<bool>,
    pub(crate) header: Once<String>,
    pub(crate) krate: Once<Path>,
    pub(crate) state: Once<Type>,
    /// Statuses stored although the default releases them (`keep_status`), and the reverse.
    pub(crate) keep: Once<Vec<StatusRange>>,
    pub(crate) release: Once<Vec<StatusRange>>,
    pub(crate) replay_headers: Once<Vec<String>>,
}

/// A status code or an inclusive range of them, as written in `keep_status(...)` /
/// `release_status(...)`.
#[derive(Clone, Copy)]
pub(crate) struct StatusRange {
    pub(crate) first: u16,
    pub(crate) last: u16,
    span: Span,
}

/// Headers a replay can never carry: hop-by-hop ones (RFC 9110 §7.6.1) and `Content-Length`,
/// which is recomputed from the stored body.
const NEVER_REPLAYED: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(30);

impl Args {
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl.get().copied().unwrap_or(DEFAULT_TTL)
    }

    /// The lease: as given, else 30 s, or half the ttl when that is shorter.
    pub(crate) fn lease(&self) -> Duration {
        self.lease.get().copied().unwrap_or_else(|| DEFAULT_LEASE.min(self.ttl() / 2))
    }
}

/// One `name`, `name = value` or `name(...)` as written.
struct Raw {
    name: Ident,
    value: RawValue,
}

enum RawValue {
    None,
    Eq(syn::Expr),
    List(proc_macro2::TokenStream, Span),
}

impl Parse for Raw {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let name = Ident::parse_any(input)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            RawValue::Eq(input.parse()?)
        } else if input.peek(syn::token::Paren) {
            let content;
            let paren = parenthesized!(content in input);
            RawValue::List(content.parse()?, paren.span.join())
        } else {
            RawValue::None
        };
        Ok(Self { name, value })
    }
}

fn lit_str(expr: &syn::Expr) -> Option<&LitStr> {
    match expr {
        syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s),
        _ => None,
    }
}

fn duration(expr: &syn::Expr, name: &str, errors: &mut Errors) -> Option<Duration> {
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

/// RFC 9110 `token` characters: what a header name may contain.
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn header_name(lit: &LitStr, what: &str, errors: &mut Errors) -> Option<String> {
    let name = lit.value();
    if is_header_name(&name) {
        Some(name.to_ascii_lowercase())
    } else {
        errors.push(
            lit.span(),
            format!("{what} {name:?} is not a valid header name; use letters, digits and `-`, e.g. \"X-Tenant\""),
        );
        None
    }
}

fn parse_scope(expr: &syn::Expr, errors: &mut Errors) -> Option<Scope> {
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
fn parse_list<T: Parse>(
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

fn parse_names(tokens: proc_macro2::TokenStream, name: &str, span: Span, errors: &mut Errors) -> Vec<Ident> {
    parse_list(
        tokens,
        span,
        errors,
        format!("`{name}(...)` needs at least one parameter name, e.g. `{name}(order)`"),
        format!("`{name}(...)` takes parameter names separated by commas, e.g. `{name}(order, id)`"),
    )
}

/// `keep_status(409, 500..=503)`: status codes and inclusive ranges of final statuses.
fn parse_statuses(tokens: proc_macro2::TokenStream, name: &str, span: Span, errors: &mut Errors) -> Vec<StatusRange> {
    let example = if name == "keep_status" { "keep_status(409, 500..=503)" } else { "release_status(404, 410..=418)" };
    let items: Vec<syn::Expr> = parse_list(
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

/// `replay_headers("location", "set-cookie")`: the only headers a replay repeats.
fn parse_replay_headers(tokens: proc_macro2::TokenStream, span: Span, errors: &mut Errors) -> Vec<String> {
    const EXAMPLE: &str = "`replay_headers(\"location\", \"set-cookie\")`";
    let names: Vec<LitStr> = parse_list(
        tokens,
        span,
        errors,
        format!("`replay_headers(...)` needs at least one header name, e.g. {EXAMPLE}"),
        format!("`replay_headers(...)` takes header name strings, e.g. {EXAMPLE}"),
    );
    let mut kept: Vec<String> = Vec::new();
    for lit in &names {
        let Some(name) = header_name(lit, "the replayed header", errors) else { continue };
        if NEVER_REPLAYED.contains(&name.as_str()) {
            let why = if name == "content-length" {
                "is recomputed from the stored body on every replay"
            } else {
                "is hop-by-hop: it describes one connection and is never replayed"
            };
            errors.push(lit.span(), format!("`{}` {why}; leave it out", lit.value()));
        } else if kept.contains(&name) {
            errors.push(lit.span(), format!("`{}` is listed twice; keep one", lit.value()));
        } else {
            kept.push(name);
        }
    }
    kept
}

impl Args {
    /// Parses and checks the arguments; `Err` carries every error found.
    pub(crate) fn parse(tokens: proc_macro2::TokenStream) -> (Self, syn::Result<()>) {
        let mut args = Args::default();
        let mut errors = Errors::default();
        let raws = match syn::parse::Parser::parse2(Punctuated::<Raw, Token![,]>::parse_terminated, tokens) {
            Ok(raws) => raws,
            Err(e) => {
                let message = format!("{e}; arguments look like `required, ttl = \"24h\", scope = \"pat\"`");
                return (args, Err(syn::Error::new(e.span(), message)));
            }
        };
        for Raw { name, value } in raws {
            let key = name.to_string();
            let span = name.span();
            match (key.as_str(), value) {
                ("required" | "optional", RawValue::None) => {
                    if let Some(&previous) = args.required.get() {
                        let previous = if previous { "required" } else { "optional" };
                        if previous != key {
                            errors.push(span, "`required` and `optional` cannot both be given; keep one");
                            continue;
                        }
                    }
                    args.required.set(key == "required", span, &key, &mut errors);
                }
                ("ttl", RawValue::Eq(e)) => {
                    if let Some(d) = duration(&e, "ttl", &mut errors) {
                        args.ttl.set(d, e.span(), "ttl", &mut errors);
                    }
                }
                ("lease", RawValue::Eq(e)) => {
                    if let Some(d) = duration(&e, "lease", &mut errors) {
                        args.lease.set(d, e.span(), "lease", &mut errors);
                    }
                }
                ("scope", RawValue::Eq(e)) => {
                    if let Some(scope) = parse_scope(&e, &mut errors) {
                        args.scope.set(scope, span, "scope", &mut errors);
                    }
                }
                ("on_conflict", RawValue::Eq(e)) => match lit_str(&e).map(LitStr::value).as_deref() {
                    Some("reject") => args.wait.set(false, span, "on_conflict", &mut errors),
                    Some("wait") => args.wait.set(true, span, "on_conflict", &mut errors),
                    _ => errors.push(e.span(), "expected `on_conflict = \"reject\"` or `on_conflict = \"wait\"`"),
                },
                ("header", RawValue::Eq(e)) => match lit_str(&e) {
                    Some(s) => {
                        if let Some(h) = header_name(s, "`header`", &mut errors) {
                            args.header.set(h, span, "header", &mut errors);
                        }
                    }
                    None => {
                        errors.push(e.span(), "`header` takes a header name string, e.g. `header = \"Request-Id\"`")
                    }
                },
                ("crate", RawValue::Eq(e)) => match lit_str(&e).map(|s| (s.parse::<Path>(), s)) {
                    Some((Ok(path), _)) => args.krate.set(path, span, "crate", &mut errors),
                    Some((Err(_), s)) => errors.push(s.span(), "`crate` takes a path, e.g. `crate = \"::my_idem\"`"),
                    None => errors.push(e.span(), "`crate` takes a path string, e.g. `crate = \"::my_idem\"`"),
                },
                ("state", RawValue::Eq(e)) => match syn::parse2::<Type>(quote::ToTokens::to_token_stream(&e)) {
                    Ok(ty) => args.state.set(ty, span, "state", &mut errors),
                    Err(_) => errors.push(e.span(), "`state` takes the router's state type, e.g. `state = AppState`"),
                },
                (which @ ("fingerprint" | "skip"), RawValue::List(tokens, list_span)) => {
                    if args.select.get().is_some() {
                        let message = match args.select.get() {
                            Some(Select::Only(_)) if which == "fingerprint" => "`fingerprint(...)` is given more than once; keep one".to_owned(),
                            Some(Select::Skip(_)) if which == "skip" => "`skip(...)` is given more than once; keep one".to_owned(),
                            _ => "`fingerprint(...)` and `skip(...)` cannot be combined; list what to include or what to leave out".to_owned(),
                        };
                        errors.push(span, message);
                        continue;
                    }
                    let names = parse_names(tokens, which, list_span, &mut errors);
                    let select = if which == "fingerprint" { Select::Only(names) } else { Select::Skip(names) };
                    args.select.set(select, span, which, &mut errors);
                }
                (which @ ("keep_status" | "release_status"), RawValue::List(tokens, list_span)) => {
                    let ranges = parse_statuses(tokens, which, list_span, &mut errors);
                    let slot = if which == "keep_status" { &mut args.keep } else { &mut args.release };
                    slot.set(ranges, span, which, &mut errors);
                }
                ("replay_headers", RawValue::List(tokens, list_span)) => {
                    let names = parse_replay_headers(tokens, list_span, &mut errors);
                    args.replay_headers.set(names, span, "replay_headers", &mut errors);
                }
                (
                    known @ ("required" | "optional" | "ttl" | "lease" | "scope" | "on_conflict" | "header" | "crate"
                    | "state" | "fingerprint" | "skip" | "keep_status" | "release_status" | "replay_headers"),
                    _,
                ) => errors.push(span, usage(known)),
                (other, _) => errors.push(span, format!("unknown argument `{other}`; expected one of {ARGUMENTS}")),
            }
        }
        if let (Some(ttl), Some(lease)) = (args.ttl.get(), args.lease.get()) {
            if lease >= ttl {
                errors.push(
                    args.lease.span().expect("set"),
                    format!(
                        "`lease` ({}) must be shorter than `ttl` ({})",
                        humantime::format_duration(*lease),
                        humantime::format_duration(*ttl)
                    ),
                );
            }
        }
        check_statuses(&args, &mut errors);
        (args, errors.into_result())
    }
}

/// Whether the default rule (SPEC §8) stores a response with this status.
fn stored_by_default(code: u16) -> bool {
    code < 500 && !matches!(code, 408 | 409 | 425 | 429)
}

impl StatusRange {
    /// The statuses both ranges hold, if any.
    fn common(&self, other: &Self) -> Option<Self> {
        let (first, last) = (self.first.max(other.first), self.last.min(other.last));
        (first <= last).then_some(Self { first, last, span: other.span })
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

/// Each list changes something and names each status once, and no status is in both.
fn check_statuses(args: &Args, errors: &mut Errors) {
    if let (Some(keep), Some(release)) = (args.keep.get(), args.release.get()) {
        for r in release {
            if let Some(both) = keep.iter().find_map(|k| k.common(r)) {
                errors.push(r.span, format!("{both} is in both `keep_status` and `release_status`; list it in one"));
            }
        }
    }
    let lists = [("keep_status", args.keep.get(), true), ("release_status", args.release.get(), false)];
    for (name, ranges, keep) in lists {
        let Some(ranges) = ranges else { continue };
        for (i, r) in ranges.iter().enumerate() {
            if let Some(earlier) = ranges[..i].iter().find(|e| e.common(r).is_some()) {
                errors
                    .push(r.span, format!("{r} overlaps {earlier}, listed before in `{name}`; list each status once"));
            } else if (r.first..=r.last).all(|code| stored_by_default(code) == keep) {
                let message = if keep {
                    format!("{r} is stored by default; `keep_status` lists what the default releases: 408, 409, 425, 429, 500..=599")
                } else {
                    format!("{r} is released by default; `release_status` lists what the default stores: 200..=499 but 408, 409, 425, 429")
                };
                errors.push(r.span, message);
            }
        }
    }
}

fn usage(name: &str) -> String {
    match name {
        "required" | "optional" => format!("`{name}` takes no value; write just `{name}`"),
        "fingerprint" | "skip" => format!("`{name}` lists parameter names, e.g. `{name}(order)`"),
        "ttl" | "lease" => format!("write `{name} = \"30s\"`"),
        "scope" => "write e.g. `scope = \"pat\"`".to_owned(),
        "on_conflict" => "write `on_conflict = \"reject\"` or `on_conflict = \"wait\"`".to_owned(),
        "header" => "write e.g. `header = \"Request-Id\"`".to_owned(),
        "crate" => "write e.g. `crate = \"::my_idem\"`".to_owned(),
        "keep_status" => "`keep_status` lists status codes, e.g. `keep_status(409, 500..=503)`".to_owned(),
        "release_status" => "`release_status` lists status codes, e.g. `release_status(404, 410..=418)`".to_owned(),
        "replay_headers" => "write e.g. `replay_headers(\"location\", \"set-cookie\")`".to_owned(),
        _ => "write e.g. `state = AppState`".to_owned(),
    }
}
