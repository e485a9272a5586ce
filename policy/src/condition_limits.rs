//! Bounds on a CEL condition, so that checking and evaluating it cannot
//! exhaust a thread's stack. The `cel` crate's parser, its interpreter and
//! the schema check all recurse once per level of the expression tree: a
//! long chain (`1 + 1 + ... + 1`, `a[0][0]...[0]`) or deep nesting aborts
//! the process with a stack overflow, which no `catch_unwind` stops. The
//! agent evaluates on tokio worker threads (2 MiB stacks), so the tree's
//! depth is bounded here, before anything recurses over it.

use cel::common::ast::{EntryExpr, Expr, IdedExpr};

/// Longest condition or exception, in bytes. Rules name long lists of
/// values through `lists:`, not literals, so real conditions stay far
/// below this.
pub const MAX_CONDITION_BYTES: usize = 4096;

/// Deepest expression tree accepted. `&&` and `||` chains are balanced
/// by the parser (a thousand terms are ten levels), so this refuses only
/// pathological nesting; unoptimised builds evaluate it within 2 MiB.
pub const MAX_CONDITION_DEPTH: usize = 32;

/// Stack for parsing and checking one expression. The parser stops by
/// itself at a nesting of 96, which an unoptimised build needs about
/// 10 MiB for; the thread only touches what it uses.
pub const COMPILE_STACK_BYTES: usize = 64 << 20;

/// The depth of an expression tree, counted without recursion.
pub fn expression_depth(root: &IdedExpr) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(root, 1usize)];
    while let Some((e, depth)) = pending.pop() {
        deepest = deepest.max(depth);
        let below = depth + 1;
        match &e.expr {
            Expr::Call(c) => {
                pending.extend(c.target.iter().map(|t| (&**t, below)));
                pending.extend(c.args.iter().map(|a| (a, below)));
            }
            Expr::Comprehension(c) => pending.extend(
                [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ]
                .map(|x| (x, below)),
            ),
            Expr::List(l) => pending.extend(l.elements.iter().map(|x| (x, below))),
            Expr::Map(m) => {
                for entry in &m.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(me) => {
                            pending.extend([(&me.key, below), (&me.value, below)]);
                        }
                        EntryExpr::StructField(f) => pending.push((&f.value, below)),
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(me) => {
                            pending.extend([(&me.key, below), (&me.value, below)]);
                        }
                        EntryExpr::StructField(f) => pending.push((&f.value, below)),
                    }
                }
            }
            Expr::Select(s) => pending.push((&s.operand, below)),
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
    deepest
}
