//! Writing the annotated handler: the original function becomes an inner function, and the
//! routable outer function reads the key, fingerprints the selected parameters
//! and hands the call to the runtime.
//!
//! The expansion reaches the runtime only through `<crate>::__private_<version>`, the module
//! named after this crate's own version, and builds the handler's configuration with one `const
//! fn` call per argument given: an expansion never spells a default or a field of the runtime.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens as _};
use syn::spanned::Spanned as _;
use syn::{Attribute, GenericParam, Ident, Path, Type};

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
    let config = config(args, &private);
    let scope_fn = match args.scope.get() {
        Some(Scope::With(path)) => {
            let call = quote_spanned!(path.span()=> #private::resolve_with(parts, #path));
            quote! {
                fn scope(parts: &#private::Parts) -> ::core::result::Result<#private::Scope, #private::Response> {
                    #call
                }
            }
        }
        _ => TokenStream::new(),
    };

    let cfgs: Vec<&Attribute> = func.attrs.iter().filter(|a| a.path().is_ident("cfg")).collect();

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
    let attrs = &func.attrs;
    let inner_inputs = &sig.inputs;
    let output = &sig.output;
    let block = &func.block;
    let unsafety = &sig.unsafety;
    let ctx = Ident::new("__idem_ctx", Span::mixed_site());
    let inner = Ident::new("__idem_handler", Span::mixed_site());
    let digests = Ident::new("__idem_params", Span::mixed_site());

    quote! {
        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #spec {}

        #(#cfgs)*
        impl #private::HandlerSpec for #spec {
            const CONFIG: #private::HandlerConfig = #config;
            #scope_fn
        }

        #(#attrs)*
        #vis async #unsafety fn #name #impl_generics (
            #ctx: #private::IdempotencyContext<#spec>,
            #(#outer_params),*
        ) -> #private::Response #where_clause {
            #[allow(clippy::too_many_arguments)]
            async #unsafety fn #inner #impl_generics (#inner_inputs) #output #where_clause #block

            #checks
            let #digests = [#(#selected.digest()),*];
            #(let #selected = #selected.into_inner();)*
            #ctx.run(&#digests, async move {
                #private::IntoResponse::into_response(#inner #turbofish (#(#arg_names),*).await)
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

fn duration(d: std::time::Duration, private: &TokenStream) -> TokenStream {
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    quote!(#private::Duration::new(#secs, #nanos))
}

/// `HandlerConfig::new()` and one builder call per argument given.
fn config(args: &Args, private: &TokenStream) -> TokenStream {
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
        Some(Scope::With(_)) => Some(quote!(#private::ScopeKind::With)),
    };
    if let Some(scope) = scope {
        calls.extend(quote!(.scope(#scope)));
    }
    let ranges = |ranges: &[StatusRange]| {
        let pairs = ranges.iter().map(|r| {
            let (first, last) = (r.first, r.last);
            quote!((#first, #last))
        });
        quote!(&[#(#pairs),*])
    };
    if let Some(keep) = args.keep.get() {
        let keep = ranges(keep);
        calls.extend(quote!(.keep_status(#keep)));
    }
    if let Some(release) = args.release.get() {
        let release = ranges(release);
        calls.extend(quote!(.release_status(#release)));
    }
    if let Some(names) = args.replay_headers.get() {
        calls.extend(quote!(.replay_headers(&[#(#names),*])));
    }
    quote!(#private::HandlerConfig::new() #calls)
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
