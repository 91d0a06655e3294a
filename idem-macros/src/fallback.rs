//! What `#[idempotent]` gives back when the item does not parse as a function: the item as
//! written, so that rustc reports its own errors, plus the argument errors.

use crate::attr;

/// The item as written, plus the argument errors. A function whose body (or signature) does not
/// parse is left to rustc, which reports the syntax error where it is; anything else is not a
/// handler, and the error says so.
pub(crate) fn not_a_parsed_function(
    item: proc_macro2::TokenStream,
    mut errors: attr::Errors,
) -> proc_macro2::TokenStream {
    if !is_function(item.clone()) {
        errors.push(proc_macro2::Span::call_site(), "`#[idempotent]` goes on an `async fn` handler");
    }
    let mut out = item;
    if let Err(error) = errors.into_result() {
        out.extend(error.to_compile_error());
    }
    out
}

/// Whether the item is a function: `fn` after nothing but attributes, visibility and qualifiers.
fn is_function(item: proc_macro2::TokenStream) -> bool {
    use proc_macro2::{Delimiter, TokenTree};
    for token in item {
        match token {
            TokenTree::Ident(ident) if ident == "fn" => return true,
            TokenTree::Ident(ident) if ["pub", "const", "async", "unsafe", "extern"].iter().any(|q| ident == q) => {}
            // `#[…]`, `pub(crate)`, `extern "C"`
            TokenTree::Punct(punct) if punct.as_char() == '#' => {}
            TokenTree::Group(group) if matches!(group.delimiter(), Delimiter::Bracket | Delimiter::Parenthesis) => {}
            TokenTree::Literal(_) => {}
            _ => return false,
        }
    }
    false
}
