//! Writing the annotated handler: the original function becomes an inner function, and the
//! routable outer function reads the key, fingerprints the selected parameters and hands the
//! call to the runtime.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens as _};
use syn::spanned::Spanned as _;
use syn::{FnArg, GenericParam, Ident, ItemFn, Pat, Path, Type};

use crate::attr::{Args, Errors, Scope, Select};

/// The most parameters a handler may have: axum takes 16, idem adds one.
const MAX_PARAMS: usize = 15;

struct Param<'a> {
    ty: &'a Type,
    bindings: Vec<Ident>,
    selected: bool,
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

/// Checks the function and arguments together, then writes the expansion.
pub(crate) fn expand(args: &Args, func: &ItemFn) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        errors.push(sig.fn_token.span(), "`#[idempotent]` handlers must be `async fn`; write `async fn`");
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
    errors.into_result()?;

    let krate: Path = args.krate.get().cloned().unwrap_or_else(|| syn::parse_quote!(::idem_runtime));
    let private = quote!(#krate::__private);
    let name = &sig.ident;
    let spec = format_ident!("__idem_{}", name);
    let vis = &func.vis;
    let cfgs: Vec<_> = func.attrs.iter().filter(|a| a.path().is_ident("cfg")).collect();
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

    let arg_names: Vec<Ident> =
        (0..params.len()).map(|i| format_ident!("__idem_arg{}", i, span = Span::mixed_site())).collect();
    let outer_params = params.iter().zip(&arg_names).map(|(p, arg)| {
        let ty = p.ty;
        if p.selected {
            quote!(#arg: #private::Fp<#ty>)
        } else {
            quote!(#arg: #ty)
        }
    });
    let selected: Vec<&Ident> = params.iter().zip(&arg_names).filter(|(p, _)| p.selected).map(|(_, a)| a).collect();
    let checks = checks(args, func, &params, &private);

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

    Ok(quote! {
        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #spec {}

        #(#cfgs)*
        impl #private::Spec for #spec {
            const CONFIG: #private::HandlerConfig = #config;
            #scope_fn
        }

        #(#attrs)*
        #vis async #unsafety fn #name #impl_generics (
            #ctx: #private::Idem<#spec>,
            #(#outer_params),*
        ) -> #private::Response #where_clause {
            #[allow(clippy::too_many_arguments)]
            async #unsafety fn #inner #impl_generics (#inner_inputs) #output #where_clause #block

            #checks
            let __idem_params = [#(#selected.digest()),*];
            #(let #selected = #selected.into_inner();)*
            #ctx.run(&__idem_params, async move {
                #private::IntoResponse::into_response(#inner #turbofish (#(#arg_names),*).await)
            })
            .await
        }
    })
}

fn duration(d: std::time::Duration, private: &TokenStream) -> TokenStream {
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    quote!(#private::Duration::new(#secs, #nanos))
}

fn config(args: &Args, private: &TokenStream) -> TokenStream {
    let required = args.required.get().copied().unwrap_or(false);
    let ttl = duration(args.ttl(), private);
    let lease = duration(args.lease(), private);
    let wait = args.wait.get().copied().unwrap_or(false);
    let header = match args.header.get() {
        Some(h) => quote!(::core::option::Option::Some(#h)),
        None => quote!(::core::option::Option::None),
    };
    let scope = match args.scope.get() {
        None | Some(Scope::Auto) => quote!(#private::ScopeKind::Auto),
        Some(Scope::Global) => quote!(#private::ScopeKind::Global),
        Some(Scope::Pat) => quote!(#private::ScopeKind::Pat),
        Some(Scope::Header(h)) => quote!(#private::ScopeKind::Header(#h)),
        Some(Scope::With(_)) => quote!(#private::ScopeKind::With),
    };
    let ranges = |ranges: Option<&Vec<crate::attr::StatusRange>>| {
        let pairs = ranges.into_iter().flatten().map(|r| {
            let (first, last) = (r.first, r.last);
            quote!((#first, #last))
        });
        quote!(&[#(#pairs),*])
    };
    let keep = ranges(args.keep.get());
    let release = ranges(args.release.get());
    let replay_headers = match args.replay_headers.get() {
        Some(names) => quote!(::core::option::Option::Some(&[#(#names),*])),
        None => quote!(::core::option::Option::None),
    };
    quote! {
        #private::HandlerConfig {
            required: #required,
            ttl: #ttl,
            lease: #lease,
            wait: #wait,
            header: #header,
            scope: #scope,
            keep_status: #keep,
            release_status: #release,
            replay_headers: #replay_headers,
        }
    }
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
fn checks(args: &Args, func: &ItemFn, params: &[Param<'_>], private: &TokenStream) -> TokenStream {
    let mut out = TokenStream::new();
    let generic = func.sig.generics.params.iter().any(|g| !matches!(g, GenericParam::Lifetime(_)));
    if !generic {
        out.extend(extractor_checks(args, params, private));
    }
    for p in params.iter().filter(|p| p.selected) {
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
