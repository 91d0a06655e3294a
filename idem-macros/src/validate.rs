//! Checks that need more than one argument, or the function: what `expand` may rely on.

use syn::spanned::Spanned as _;
use syn::{FnArg, Ident, ItemFn, Pat, Type};

use crate::attr::{Args, Errors, Select};

/// The most parameters a handler may have: axum takes 16, idem adds one.
const MAX_PARAMS: usize = 15;

/// The annotated function, checked against the arguments.
pub(crate) struct Handler<'a> {
    pub(crate) func: &'a ItemFn,
    pub(crate) params: Vec<Param<'a>>,
}

pub(crate) struct Param<'a> {
    pub(crate) ty: &'a Type,
    /// Every name its pattern binds.
    pub(crate) bindings: Vec<Ident>,
    /// Part of the fingerprint.
    pub(crate) selected: bool,
}

/// Checks the arguments together: `lease` against `ttl`, and the status lists against the
/// default status rule and each other.
pub(crate) fn arguments(args: &Args, errors: &mut Errors) {
    // Next to `defaults = …` and no `ttl`, the ttl in force is the defaults', which only the
    // compiler sees: the expansion checks it there.
    let ttl_known = args.ttl.get().is_some() || args.defaults.get().is_none();
    if let (Some(lease), Some(span), true) = (args.lease.get(), args.lease.span(), ttl_known) {
        let ttl = args.ttl();
        if *lease >= ttl {
            let default = if args.ttl.get().is_none() { ", the default" } else { "" };
            errors.push(
                span,
                format!(
                    "`lease` ({}) must be shorter than `ttl` ({}{default})",
                    humantime::format_duration(*lease),
                    humantime::format_duration(ttl)
                ),
            );
        }
    }
    statuses(args, errors);
}

/// Refuses, in `defaults!(...)`, the arguments that only make sense on one handler.
pub(crate) fn service_wide(args: &Args, errors: &mut Errors) {
    if let (Some(select), Some(span)) = (args.select.get(), args.select.span()) {
        let name = match select {
            Select::Only(_) => "fingerprint(...)",
            Select::Skip(_) => "skip(...)",
        };
        errors
            .push(span, format!("`{name}` names one handler's parameters; give it on that handler's `#[idempotent]`"));
    }
    if let Some(span) = args.state.span() {
        errors.push(span, "`state` names one handler's router state; give it on that handler's `#[idempotent]`");
    }
}

/// Each status list changes something and names each status once, and no status is in both.
fn statuses(args: &Args, errors: &mut Errors) {
    if let (Some(keep), Some(release)) = (args.keep.get(), args.release.get()) {
        for r in release {
            if let Some(both) = keep.iter().find_map(|k| k.common(r)) {
                errors.push(r.span, format!("{both} is in both `keep_status` and `release_status`; list it in one"));
            }
        }
    }
    let released_4xx = idem_rules::RELEASED_4XX.map(|code| code.to_string()).join(", ");
    let lists = [("keep_status", args.keep.get(), true), ("release_status", args.release.get(), false)];
    for (name, ranges, keep) in lists {
        let Some(ranges) = ranges else { continue };
        for (i, r) in ranges.iter().enumerate() {
            if let Some(earlier) = ranges[..i].iter().find(|e| e.common(r).is_some()) {
                errors
                    .push(r.span, format!("{r} overlaps {earlier}, listed before in `{name}`; list each status once"));
            } else if r.codes().all(|code| idem_rules::stored_by_default(code) == keep) {
                let message = if keep {
                    format!("{r} is stored by default; `keep_status` lists what the default releases: {released_4xx}, 500..=599")
                } else {
                    format!("{r} is released by default; `release_status` lists what the default stores: 200..=499 but {released_4xx}")
                };
                errors.push(r.span, message);
            }
        }
    }
}

/// Checks the function: a free `async fn` with at most [`MAX_PARAMS`] parameters, whose bindings
/// include every name in `fingerprint(...)` / `skip(...)`.
pub(crate) fn handler<'a>(args: &Args, func: &'a ItemFn, errors: &mut Errors) -> Handler<'a> {
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        errors.push(sig.fn_token.span(), "`#[idempotent]` handlers must be `async fn`; write `async fn`");
    }
    for attr in &func.attrs {
        let segments: Vec<String> = attr.path().segments.iter().map(|s| s.ident.to_string()).collect();
        if segments == ["utoipa", "path"] {
            errors.push(
                attr.path().span(),
                "`#[utoipa::path]` must come above `#[idempotent]`: below it, it would document the function the \
                 attribute keeps inside the routable one, out of utoipa's reach; move it above `#[idempotent]`",
            );
        }
    }
    let mut params = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                errors.push(r.span(), "`#[idempotent]` handlers cannot take `self`; make the handler a free function")
            }
            FnArg::Typed(p) => {
                let mut names = Vec::new();
                bindings(&p.pat, &mut names);
                params.push(Param { ty: &p.ty, bindings: names, selected: true });
            }
        }
    }
    if params.len() > MAX_PARAMS {
        errors.push(sig.inputs.span(), format!("`#[idempotent]` handlers take at most {MAX_PARAMS} parameters"));
    }
    if let Some(select) = args.select.get() {
        let (names, only) = match select {
            Select::Only(names) => (names, true),
            Select::Skip(names) => (names, false),
        };
        let all: Vec<String> = params.iter().flat_map(|p| p.bindings.iter().map(Ident::to_string)).collect();
        for name in names {
            if !params.iter().any(|p| p.bindings.contains(name)) {
                let known = if all.is_empty() {
                    "it binds no names".to_owned()
                } else {
                    format!("its parameters bind `{}`", all.join("`, `"))
                };
                errors.push(name.span(), format!("`{name}` is not a parameter of this handler; {known}"));
            }
        }
        for p in &mut params {
            let named = p.bindings.iter().any(|b| names.contains(b));
            p.selected = named == only;
        }
    }
    Handler { func, params }
}

/// Every identifier a pattern binds (`Json(order)` binds `order`).
fn bindings(pat: &Pat, out: &mut Vec<Ident>) {
    match pat {
        Pat::Ident(p) => {
            out.push(p.ident.clone());
            if let Some((_, sub)) = &p.subpat {
                bindings(sub, out);
            }
        }
        Pat::Reference(p) => bindings(&p.pat, out),
        Pat::Struct(p) => p.fields.iter().for_each(|f| bindings(&f.pat, out)),
        Pat::Tuple(p) => p.elems.iter().for_each(|p| bindings(p, out)),
        Pat::TupleStruct(p) => p.elems.iter().for_each(|p| bindings(p, out)),
        Pat::Slice(p) => p.elems.iter().for_each(|p| bindings(p, out)),
        Pat::Paren(p) => bindings(&p.pat, out),
        Pat::Type(p) => bindings(&p.pat, out),
        _ => {}
    }
}
