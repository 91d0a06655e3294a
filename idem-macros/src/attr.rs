//! Parsing `#[idempotent(...)]` arguments: each argument's syntax and value, every error spanned
//! and collected. Checks across arguments, and against the function, are `validate`'s.

mod status;
mod value;

use std::time::Duration;

use proc_macro2::Span;
use syn::ext::IdentExt as _;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{parenthesized, Ident, LitStr, Path, Token, Type};

pub(crate) use status::StatusRange;

/// Every argument, as listed when an unknown one is given, and how it is written, as shown when
/// one is given in the wrong form. A new argument is one row here, one field of [`Args`] and one
/// arm in [`Args::parse`].
const ARGUMENTS: &[(&str, &str, &str)] = &[
    ("required", "`required`", "`required` takes no value; write just `required`"),
    ("optional", "`optional`", "`optional` takes no value; write just `optional`"),
    ("ttl", "`ttl`", "write `ttl = \"30s\"`"),
    ("scope", "`scope`", "write e.g. `scope = \"pat\"`"),
    ("fingerprint", "`fingerprint(...)`", "`fingerprint` lists parameter names, e.g. `fingerprint(order)`"),
    ("skip", "`skip(...)`", "`skip` lists parameter names, e.g. `skip(order)`"),
    ("lease", "`lease`", "write `lease = \"30s\"`"),
    ("on_conflict", "`on_conflict`", "write `on_conflict = \"reject\"` or `on_conflict = \"wait\"`"),
    ("on_expired_key", "`on_expired_key`", "write `on_expired_key = \"refuse\"` or `on_expired_key = \"run\"`"),
    ("header", "`header`", "write e.g. `header = \"Request-Id\"`"),
    ("keep_status", "`keep_status(...)`", "`keep_status` lists status codes, e.g. `keep_status(409, 500..=503)`"),
    (
        "release_status",
        "`release_status(...)`",
        "`release_status` lists status codes, e.g. `release_status(404, 410..=418)`",
    ),
    ("replay_headers", "`replay_headers(...)`", "write e.g. `replay_headers(\"location\", \"set-cookie\")`"),
    ("defaults", "`defaults`", "write e.g. `defaults = crate::IDEM`, the path of a `const` made with `defaults!(...)`"),
    ("store", "`store`", "write `store = \"layer\"` or `store = \"layer-or-embedded\"`"),
    ("crate", "`crate`", "write e.g. `crate = \"::my_idem\"`"),
    ("state", "`state`", "write e.g. `state = AppState`"),
];

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

/// An argument that may be given once; a second occurrence is an error at that occurrence.
pub(crate) struct SetOnce<T>(Option<(T, Span)>);

impl<T> Default for SetOnce<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> SetOnce<T> {
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
    /// The header's name, lower case.
    Header(String),
    With(Path),
}

/// `fingerprint(...)`: only the parameters named; `skip(...)`: all but those.
pub(crate) enum Select {
    Only(Vec<Ident>),
    Skip(Vec<Ident>),
}

/// The arguments as given; an argument not given is `None` and gets the runtime's default.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) required: SetOnce<bool>,
    pub(crate) ttl: SetOnce<Duration>,
    pub(crate) lease: SetOnce<Duration>,
    pub(crate) scope: SetOnce<Scope>,
    pub(crate) select: SetOnce<Select>,
    pub(crate) wait: SetOnce<bool>,
    /// Lower case.
    pub(crate) header: SetOnce<String>,
    pub(crate) krate: SetOnce<Path>,
    pub(crate) state: SetOnce<Type>,
    /// Statuses stored although the default releases them (`keep_status`), and the reverse.
    pub(crate) keep: SetOnce<Vec<StatusRange>>,
    pub(crate) release: SetOnce<Vec<StatusRange>>,
    /// Lower case.
    pub(crate) replay_headers: SetOnce<Vec<String>>,
    /// `defaults = path`: the `const` the arguments given here adjust.
    pub(crate) defaults: SetOnce<Path>,
    /// `store = "layer"` (true) or `"layer-or-embedded"` (false).
    pub(crate) layer_only: SetOnce<bool>,
    /// `on_expired_key = "refuse"` (true) or `"run"` (false).
    pub(crate) refuse_expired: SetOnce<bool>,
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

impl Args {
    /// Parses the arguments, each on its own; what is wrong goes to `errors`, and what is right
    /// is kept, so the function can still be checked.
    pub(crate) fn parse(tokens: proc_macro2::TokenStream, errors: &mut Errors) -> Self {
        let mut args = Args::default();
        let raws = match syn::parse::Parser::parse2(Punctuated::<Raw, Token![,]>::parse_terminated, tokens) {
            Ok(raws) => raws,
            Err(e) => {
                errors.push(e.span(), format!("{e}; arguments look like `required, ttl = \"24h\", scope = \"pat\"`"));
                return args;
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
                    args.required.set(key == "required", span, &key, errors);
                }
                (which @ ("ttl" | "lease"), RawValue::Eq(e)) => {
                    if let Some(d) = value::duration(&e, which, errors) {
                        let slot = if which == "ttl" { &mut args.ttl } else { &mut args.lease };
                        slot.set(d, e.span(), which, errors);
                    }
                }
                ("scope", RawValue::Eq(e)) => {
                    if let Some(scope) = value::scope(&e, errors) {
                        args.scope.set(scope, span, "scope", errors);
                    }
                }
                ("on_conflict", RawValue::Eq(e)) => match value::lit_str(&e).map(LitStr::value).as_deref() {
                    Some("reject") => args.wait.set(false, span, "on_conflict", errors),
                    Some("wait") => args.wait.set(true, span, "on_conflict", errors),
                    _ => errors.push(e.span(), "expected `on_conflict = \"reject\"` or `on_conflict = \"wait\"`"),
                },
                ("on_expired_key", RawValue::Eq(e)) => match value::lit_str(&e).map(LitStr::value).as_deref() {
                    Some("refuse") => args.refuse_expired.set(true, span, "on_expired_key", errors),
                    Some("run") => args.refuse_expired.set(false, span, "on_expired_key", errors),
                    _ => errors.push(e.span(), "expected `on_expired_key = \"refuse\"` or `on_expired_key = \"run\"`"),
                },
                ("header", RawValue::Eq(e)) => match value::lit_str(&e) {
                    Some(s) => {
                        if let Some(h) = value::header_name(s, "`header`", errors) {
                            args.header.set(h, span, "header", errors);
                        }
                    }
                    None => {
                        errors.push(e.span(), "`header` takes a header name string, e.g. `header = \"Request-Id\"`")
                    }
                },
                ("defaults", RawValue::Eq(e)) => match e {
                    syn::Expr::Path(syn::ExprPath { qself: None, path, attrs }) if attrs.is_empty() => {
                        args.defaults.set(path, span, "defaults", errors)
                    }
                    _ => errors.push(
                        e.span(),
                        "`defaults` takes the path of a `const` made with `defaults!(...)`, e.g. `defaults = crate::IDEM`",
                    ),
                },
                ("store", RawValue::Eq(e)) => match value::lit_str(&e).map(LitStr::value).as_deref() {
                    Some("layer") => args.layer_only.set(true, span, "store", errors),
                    Some("layer-or-embedded") => args.layer_only.set(false, span, "store", errors),
                    _ => errors.push(e.span(), "expected `store = \"layer\"` or `store = \"layer-or-embedded\"`"),
                },
                ("crate", RawValue::Eq(e)) => match value::lit_str(&e).map(|s| (s.parse::<Path>(), s)) {
                    Some((Ok(path), _)) => args.krate.set(path, span, "crate", errors),
                    Some((Err(_), s)) => errors.push(s.span(), "`crate` takes a path, e.g. `crate = \"::my_idem\"`"),
                    None => errors.push(e.span(), "`crate` takes a path string, e.g. `crate = \"::my_idem\"`"),
                },
                ("state", RawValue::Eq(e)) => match syn::parse2::<Type>(quote::ToTokens::to_token_stream(&e)) {
                    Ok(ty) => args.state.set(ty, span, "state", errors),
                    Err(_) => errors.push(e.span(), "`state` takes the router's state type, e.g. `state = AppState`"),
                },
                (which @ ("fingerprint" | "skip"), RawValue::List(tokens, list_span)) => {
                    if let Some(select) = args.select.get() {
                        let message = match select {
                            Select::Only(_) if which == "fingerprint" => {
                                "`fingerprint(...)` is given more than once; keep one"
                            }
                            Select::Skip(_) if which == "skip" => "`skip(...)` is given more than once; keep one",
                            _ => "`fingerprint(...)` and `skip(...)` cannot be combined; list what to include or what to leave out",
                        };
                        errors.push(span, message);
                        continue;
                    }
                    let names = value::parameter_names(tokens, which, list_span, errors);
                    let select = if which == "fingerprint" { Select::Only(names) } else { Select::Skip(names) };
                    args.select.set(select, span, which, errors);
                }
                (which @ ("keep_status" | "release_status"), RawValue::List(tokens, list_span)) => {
                    let ranges = status::parse(tokens, which, list_span, errors);
                    let slot = if which == "keep_status" { &mut args.keep } else { &mut args.release };
                    slot.set(ranges, span, which, errors);
                }
                ("replay_headers", RawValue::List(tokens, list_span)) => {
                    let names = value::replay_headers(tokens, list_span, errors);
                    args.replay_headers.set(names, span, "replay_headers", errors);
                }
                (other, _) => match ARGUMENTS.iter().find(|(name, ..)| *name == other) {
                    Some((_, _, usage)) => errors.push(span, usage),
                    None => {
                        let all: Vec<&str> = ARGUMENTS.iter().map(|(_, form, _)| *form).collect();
                        errors.push(span, format!("unknown argument `{other}`; expected one of {}", all.join(", ")))
                    }
                },
            }
        }
        args
    }

    /// The ttl in force: as given, else the runtime's default.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl.get().copied().unwrap_or(idem_rules::DEFAULT_TTL)
    }
}
