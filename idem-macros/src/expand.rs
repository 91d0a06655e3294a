//! Writing the annotated handler: the function as written becomes an inner function, and the
//! routable outer function of the same name reads the key, fingerprints the selected parameters
//! and hands the call to the runtime.
//!
//! The expansion reaches the runtime only through `<crate>::__private_<version>`, the module
//! named after this crate's own version, and builds the handler's configuration with one `const
//! fn` call per argument given: an expansion never spells a default or a field of the runtime.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens as _};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{AttrStyle, Attribute, GenericParam, Ident, Meta, Path, Token, Type};

use crate::attr::{Args, Scope, StatusRange};
use crate::validate::{Handler, Param};

pub(crate) fn expand(args: &Args, handler: &Handler<'_>) -> TokenStream {
    let func = handler.func;
    let params = &handler.params;
    let private = private_path(args);
    let sig = &func.sig;
    let name = &sig.ident;
    let spec = format_ident!("__idem_{}", name);
    let vis = &func.vis;
    let config = config(args, params.iter().any(|p| crate::steps::is_steps(p.ty)), &private);

    let (outer_attrs, mut inner) = split_attributes(func);
    let cfgs: Vec<&Attribute> = outer_attrs.iter().filter(|a| a.path().is_ident("cfg")).collect();
    inner.attrs.insert(0, syn::parse_quote!(#[allow(clippy::too_many_arguments)]));

    let arg_names: Vec<Ident> =
        (0..params.len()).map(|i| format_ident!("__idem_arg{}", i, span = Span::mixed_site())).collect();
    let outer_params = params.iter().zip(&arg_names).map(|(p, arg)| {
        let ty = p.ty;
        if p.selected {
            quote!(#arg: #private::Fingerprinted<#ty>)
        } else {
            quote!(#arg: #ty)
        }
    });
    let selected: Vec<&Ident> = params.iter().zip(&arg_names).filter(|(p, _)| p.selected).map(|(_, a)| a).collect();
    let checks = checks(args, handler, &private);

    let (impl_generics, _, where_clause) = sig.generics.split_for_impl();
    let turbofish_args: Vec<TokenStream> = sig
        .generics
        .params
        .iter()
        .filter_map(|g| match g {
            GenericParam::Type(t) => Some(t.ident.to_token_stream()),
            GenericParam::Const(c) => Some(c.ident.to_token_stream()),
            GenericParam::Lifetime(_) => None,
        })
        .collect();
    let turbofish = if turbofish_args.is_empty() { quote!() } else { quote!(::<#(#turbofish_args),*>) };
    let unsafety = &sig.unsafety;
    let ctx = Ident::new("__idem_ctx", Span::mixed_site());
    let digests = Ident::new("__idem_params", Span::mixed_site());
    // Located at the handler's name, so that the `Send` check's errors point there.
    let future = Ident::new("__idem_future", Span::mixed_site().located_at(name.span()));
    let is_send = Ident::new("handler_future_is_send", name.span());
    let assert_send = Ident::new("assert_send", name.span());
    let send_check = quote_spanned! {name.span()=>
        #private::#is_send(&#future);
        #private::#assert_send(&#future);
    };

    quote! {
        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #spec {}

        #(#cfgs)*
        impl #private::HandlerSpec for #spec {
            const CONFIG: #private::HandlerConfig = #config;
        }

        #(#outer_attrs)*
        #vis async #unsafety fn #name #impl_generics (
            #ctx: #private::IdempotencyContext<#spec>,
            #(#outer_params),*
        ) -> #private::Response #where_clause {
            #inner

            #checks
            let #digests = [#(#selected.digest()),*];
            #(let #selected = #selected.into_inner();)*
            let #future = #name #turbofish (#(#arg_names),*);
            #send_check
            #ctx.run(&#digests, async move {
                #private::IntoResponse::into_response(#future.await)
            })
            .await
        }
    }
}

/// `::idem_runtime::__private_0_1_0`: the runtime's module for this macro's version, under the
/// crate's name or the `crate = "…"` path.
fn private_path(args: &Args) -> TokenStream {
    let krate: Path = args.krate.get().cloned().unwrap_or_else(|| syn::parse_quote!(::idem_runtime));
    let module = Ident::new(&idem_rules::private_module(env!("CARGO_PKG_VERSION")), Span::call_site());
    quote!(#krate::#module)
}

/// Attributes that stay on the routable function: its documentation, its `cfg`, lint levels
/// (which the inner function, nested in it, inherits), and what its callers see.
const ROUTABLE_ATTRIBUTES: [&str; 9] =
    ["doc", "cfg", "allow", "warn", "deny", "forbid", "expect", "deprecated", "must_use"];

/// The routable function's attributes, and the inner function: the function as written, with
/// every other attribute (those that name its parameters, such as `#[tracing::instrument]`,
/// among them). A `cfg_attr` is split between the two by the same rule.
fn split_attributes(func: &syn::ItemFn) -> (Vec<Attribute>, syn::ItemFn) {
    let mut outer = Vec::new();
    let mut inner = func.clone();
    inner.vis = syn::Visibility::Inherited;
    inner.attrs.clear();
    for attr in &func.attrs {
        match place(&attr.meta) {
            // `#![…]` inside the body stays there.
            _ if matches!(attr.style, AttrStyle::Inner(_)) => inner.attrs.push(attr.clone()),
            Place::Routable => outer.push(attr.clone()),
            Place::Written => inner.attrs.push(attr.clone()),
            Place::Split(routable, written) => {
                outer.push(syn::parse_quote_spanned!(attr.span()=> #[#routable]));
                inner.attrs.push(syn::parse_quote_spanned!(attr.span()=> #[#written]));
            }
        }
    }
    (outer, inner)
}

/// Where an attribute goes.
enum Place {
    Routable,
    Written,
    /// A `cfg_attr` with attributes for both functions: one `cfg_attr` for each.
    Split(Box<Meta>, Box<Meta>),
}

fn place(meta: &Meta) -> Place {
    let path = meta.path();
    if ROUTABLE_ATTRIBUTES.iter().any(|name| path.is_ident(name)) {
        return Place::Routable;
    }
    if !path.is_ident("cfg_attr") {
        return Place::Written;
    }
    let Ok(list) = meta.require_list() else { return Place::Written };
    let Ok(items) = list.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated) else {
        return Place::Written;
    };
    let mut items = items.into_iter();
    let Some(predicate) = items.next() else { return Place::Written };
    let (mut routable, mut written) = (Vec::new(), Vec::new());
    for item in items {
        match place(&item) {
            Place::Routable => routable.push(item),
            Place::Written => written.push(item),
            Place::Split(r, w) => {
                routable.push(*r);
                written.push(*w);
            }
        }
    }
    match (routable.is_empty(), written.is_empty()) {
        (false, true) => Place::Routable,
        (true, _) => Place::Written,
        (false, false) => {
            let span = list.path.span();
            Place::Split(
                Box::new(syn::parse_quote_spanned!(span=> cfg_attr(#predicate, #(#routable),*))),
                Box::new(syn::parse_quote_spanned!(span=> cfg_attr(#predicate, #(#written),*))),
            )
        }
    }
}

fn duration(d: std::time::Duration, private: &TokenStream) -> TokenStream {
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    quote!(#private::Duration::new(#secs, #nanos))
}

/// `HandlerConfig::new()`, or the named defaults, and one builder call per argument given, in a
/// block `const`: evaluated when the crate compiles, used or not, so that a rule only the
/// compiler can check (an argument against the defaults it adjusts) fails there.
fn config(args: &Args, steps: bool, private: &TokenStream) -> TokenStream {
    let start = match args.defaults.get() {
        // Spanned at the path: a `const` of another type is an error there.
        Some(path) => quote_spanned!(path.span()=> #private::HandlerConfig::from_defaults(#path)),
        None => quote!(#private::HandlerConfig::new()),
    };
    let mut calls = TokenStream::new();
    if let Some(required) = args.required.get() {
        calls.extend(quote!(.required(#required)));
    }
    if let Some(&ttl) = args.ttl.get() {
        let ttl = duration(ttl, private);
        calls.extend(quote!(.ttl(#ttl)));
    }
    if let Some(&lease) = args.lease.get() {
        let lease = duration(lease, private);
        calls.extend(quote!(.lease(#lease)));
    }
    if let Some(wait) = args.wait.get() {
        calls.extend(quote!(.wait(#wait)));
    }
    if let Some(header) = args.header.get() {
        calls.extend(quote!(.header(#header)));
    }
    let scope = match args.scope.get() {
        None => None,
        Some(Scope::Auto) => Some(quote!(#private::ScopeKind::Auto)),
        Some(Scope::Global) => Some(quote!(#private::ScopeKind::Global)),
        Some(Scope::Pat) => Some(quote!(#private::ScopeKind::Pat)),
        Some(Scope::Header(h)) => Some(quote!(#private::ScopeKind::Header(#h))),
        Some(Scope::With(path)) => {
            // Spanned at the path: a function of the wrong type is an error there.
            let resolve = quote_spanned!(path.span()=> #private::resolve_with(parts, #path));
            Some(quote!(#private::ScopeKind::With(|parts| #resolve)))
        }
    };
    if let Some(scope) = scope {
        calls.extend(quote!(.scope(#scope)));
    }
    // The two lists are one setting: given either, both replace those of the defaults.
    if args.keep.get().is_some() || args.release.get().is_some() {
        let ranges = |ranges: Option<&Vec<StatusRange>>| {
            let pairs = ranges.into_iter().flatten().map(|r| {
                let (first, last) = (r.first, r.last);
                quote!((#first, #last))
            });
            quote!(&[#(#pairs),*])
        };
        let (keep, release) = (ranges(args.keep.get()), ranges(args.release.get()));
        calls.extend(quote!(.keep_status(#keep).release_status(#release)));
    }
    if let Some(names) = args.replay_headers.get() {
        calls.extend(quote!(.replay_headers(&[#(#names),*])));
    }
    if let Some(layer_only) = args.layer_only.get() {
        calls.extend(quote!(.layer_only(#layer_only)));
    }
    if let Some(refuse_expired) = args.refuse_expired.get() {
        calls.extend(quote!(.refuse_expired(#refuse_expired)));
    }
    // Seen in the signature, not an argument: the handler keeps the results of its steps.
    if steps {
        calls.extend(quote!(.steps(true)));
    }
    let mut config = quote!(#start #calls);
    // A `ttl` or a `lease` given next to `defaults = …` alone: checked against the lease or the
    // ttl taken from them, with the error at the argument.
    if args.defaults.get().is_some() {
        match (args.ttl.span(), args.lease.span()) {
            (Some(ttl), None) => config = quote_spanned!(ttl=> (#config).ttl_outlasts_inherited_lease()),
            (None, Some(lease)) => config = quote_spanned!(lease=> (#config).lease_within_inherited_ttl()),
            _ => {}
        }
    }
    // Not `CONFIG`: a user's defaults may be called that.
    let name = Ident::new("__IDEM_CONFIG", Span::mixed_site());
    quote!({
        const #name: #private::HandlerConfig = #config;
        #name
    })
}

/// What `defaults!(...)` expands to: an `idem_runtime::Defaults` value, made of the
/// arguments as [`config`] makes a handler's.
pub(crate) fn defaults(args: &Args) -> TokenStream {
    let private = private_path(args);
    let config = config(args, false, &private);
    quote!(#private::HandlerConfig::into_defaults(#config))
}

/// The value `defaults!(...)` gives when its arguments are wrong (next to the errors), so that
/// the `const` it initializes still has one.
pub(crate) fn defaults_fallback(args: &Args) -> TokenStream {
    let private = private_path(args);
    quote!(#private::HandlerConfig::into_defaults(#private::HandlerConfig::new()))
}

/// The type inside a parameter written `State<T>`.
fn state_type(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "State" {
        return None;
    }
    match &last.arguments {
        syn::PathArguments::AngleBracketed(a) if a.args.len() == 1 => match &a.args[0] {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        },
        _ => None,
    }
}

/// Compile-time checks spanned on the user's parameter types: every selected parameter can be
/// fingerprinted, and every parameter is an extractor for the router's state (taken from
/// `state = T`, else from a `State<T>` parameter, else `()`; skipped for generic handlers).
fn checks(args: &Args, handler: &Handler<'_>, private: &TokenStream) -> TokenStream {
    let mut out = TokenStream::new();
    let generic = handler.func.sig.generics.params.iter().any(|g| !matches!(g, GenericParam::Lifetime(_)));
    if !generic {
        out.extend(extractor_checks(args, &handler.params, private));
    }
    for p in handler.params.iter().filter(|p| p.selected) {
        let ty = p.ty;
        out.extend(quote_spanned!(ty.span()=> #private::assert_fingerprint_source::<#ty>();));
    }
    out
}

fn extractor_checks(args: &Args, params: &[Param<'_>], private: &TokenStream) -> TokenStream {
    let mut out = TokenStream::new();
    let state = args
        .state
        .get()
        .cloned()
        .or_else(|| params.iter().find_map(|p| state_type(p.ty)).cloned())
        .unwrap_or_else(|| syn::parse_quote!(()));
    let last = params.len().saturating_sub(1);
    for (i, p) in params.iter().enumerate() {
        let ty = p.ty;
        out.extend(if i == last {
            quote_spanned!(ty.span()=> #private::assert_extractor::<#ty, #state, _>();)
        } else {
            quote_spanned!(ty.span()=> #private::assert_parts_extractor::<#ty, #state>();)
        });
    }
    out
}
