//! The handler's steps as the attribute can see them: whether it takes `Steps`, and the names
//! it runs them under, each of which must be used once.

use std::collections::HashMap;

use syn::visit::Visit;
use syn::{Expr, ExprLit, ExprMethodCall, Ident, ItemFn, Lit, Type};

use crate::attr::Errors;
use crate::validate::Param;

/// Whether `ty` names the runtime's `Steps` (by its last path segment: what the attribute can
/// see of a type).
pub(crate) fn is_steps(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path.path.segments.last().is_some_and(|s| s.ident == "Steps"),
        _ => false,
    }
}

/// Refuses a step name given twice as a literal, in calls `steps.run("name", …)` on a `Steps`
/// parameter: the name is where the step's result is kept, and two steps under one name would
/// share it (the second would return the first's result without running).
pub(crate) fn check_names(func: &ItemFn, params: &[Param<'_>], errors: &mut Errors) {
    let receivers: Vec<&Ident> = params.iter().filter(|p| is_steps(p.ty)).flat_map(|p| &p.bindings).collect();
    if receivers.is_empty() {
        return;
    }
    let mut names = Names { receivers, seen: HashMap::new(), errors };
    names.visit_block(&func.block);
}

struct Names<'a, 'e> {
    receivers: Vec<&'a Ident>,
    seen: HashMap<String, proc_macro2::Span>,
    errors: &'e mut Errors,
}

impl<'ast> Visit<'ast> for Names<'_, '_> {
    fn visit_expr_method_call(&mut self, call: &'ast ExprMethodCall) {
        let on_steps = match &*call.receiver {
            Expr::Path(path) => path.path.get_ident().is_some_and(|id| self.receivers.contains(&id)),
            _ => false,
        };
        if on_steps && call.method == "run" {
            if let Some(Expr::Lit(ExprLit { lit: Lit::Str(name), .. })) = call.args.first() {
                if self.seen.insert(name.value(), name.span()).is_some() {
                    self.errors.push(
                        name.span(),
                        format!(
                            "step `{}` is run twice in this handler; a step's name is where its result is kept, \
                             so the second would return the first's result without running: give each step its \
                             own name",
                            name.value()
                        ),
                    );
                }
            }
        }
        syn::visit::visit_expr_method_call(self, call);
    }
}
