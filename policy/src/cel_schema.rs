//! What a rule's CEL may name, and a check before anything runs: every
//! variable and field exists, every function is known, and the types the
//! schema knows line up (a comparison of a string field with a number, or
//! a condition that is not a bool, is an error).

use std::collections::BTreeSet;

use cel::common::ast::operators as op;
use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};

/// Types the check knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Int,
    String,
    Bool,
    ListOfString,
    Map,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Int => "int",
            Ty::String => "string",
            Ty::Bool => "bool",
            Ty::ListOfString => "list(string)",
            Ty::Map => "map",
        }
    }
}

const PROCESS_FIELDS: &[(&str, Ty)] = &[
    ("pid", Ty::Int),
    ("ppid", Ty::Int),
    ("uid", Ty::Int),
    ("exe", Ty::String),
    ("name", Ty::String),
    ("comm", Ty::String),
    ("argv", Ty::ListOfString),
    ("cmdline", Ty::String),
    ("exe_sha256", Ty::String),
    ("cgroup", Ty::String),
    ("ns_pid", Ty::Int),
    ("in_container", Ty::Bool),
];

/// The variables a condition sees, with their fields.
pub const VARIABLES: &[(&str, &[(&str, Ty)])] = &[
    ("process", PROCESS_FIELDS),
    ("parent", PROCESS_FIELDS),
    (
        "file",
        &[
            ("path", Ty::String),
            ("name", Ty::String),
            ("dir", Ty::String),
            // What an inspected model file is (empty, 0 or "unknown"
            // otherwise): flat names, as policies/README.md says.
            ("model_format", Ty::String),
            ("model_architecture", Ty::String),
            ("model_name", Ty::String),
            ("model_size_label", Ty::String),
            ("model_quantization", Ty::String),
            ("model_parameters", Ty::Int),
            ("model_sha256", Ty::String),
            ("model_fingerprint", Ty::String),
            ("model_risk", Ty::String),
            ("model_dangerous_imports", Ty::ListOfString),
        ],
    ),
    (
        "net",
        &[
            ("direction", Ty::String),
            ("address", Ty::String),
            ("port", Ty::Int),
            ("host", Ty::String),
        ],
    ),
    (
        "gpu",
        &[
            ("uuid", Ty::String),
            ("name", Ty::String),
            ("index", Ty::Int),
            ("memory_bytes", Ty::Int),
            ("sm_util", Ty::Int),
        ],
    ),
    (
        "host",
        &[("hostname", Ty::String), ("agent_id", Ty::String)],
    ),
];

/// `signal` (the signal's name) and `lists` (the bundle's lists) besides.
const SIGNAL: &str = "signal";
const LISTS: &str = "lists";

const FUNCTIONS: &[&str] = &[
    "contains",
    "size",
    "max",
    "min",
    "startsWith",
    "endsWith",
    "string",
    "bytes",
    "double",
    "int",
    "uint",
    "matches",
    "duration",
    "timestamp",
];

const OPERATORS: &[&str] = &[
    op::CONDITIONAL,
    op::LOGICAL_AND,
    op::LOGICAL_OR,
    op::LOGICAL_NOT,
    op::SUBSTRACT,
    op::ADD,
    op::MULTIPLY,
    op::DIVIDE,
    op::MODULO,
    op::EQUALS,
    op::NOT_EQUALS,
    op::GREATER_EQUALS,
    op::LESS_EQUALS,
    op::GREATER,
    op::LESS,
    op::NEGATE,
    op::INDEX,
    op::NOT_STRICTLY_FALSE,
    op::IN,
];

/// A problem found in an expression; `needle` is text to place it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    pub message: String,
    pub needle: String,
}

fn err(message: String, needle: impl Into<String>) -> SchemaError {
    SchemaError {
        message,
        needle: needle.into(),
    }
}

/// The variables (and their fields) an expression reads: only these are
/// built for an evaluation. `(root, "*")` means the whole variable.
pub type Needs = BTreeSet<(String, String)>;

/// Checks a whole condition: names, functions, types, and that it is a
/// bool; returns what it reads.
pub fn check_condition(e: &IdedExpr, lists: &BTreeSet<String>) -> Result<Needs, SchemaError> {
    let mut bound = Vec::new();
    let mut needs = Needs::new();
    match check(e, lists, &mut bound, &mut needs)? {
        Some(t) if t != Ty::Bool => Err(err(
            format!("a condition must be a bool, this is a {}", t.name()),
            "",
        )),
        _ => Ok(needs),
    }
}

fn fields_of(var: &str) -> Option<&'static [(&'static str, Ty)]> {
    VARIABLES.iter().find(|(v, _)| *v == var).map(|(_, f)| *f)
}

/// The expression's type where the schema says it, after checking it.
fn check(
    e: &IdedExpr,
    lists: &BTreeSet<String>,
    bound: &mut Vec<String>,
    needs: &mut Needs,
) -> Result<Option<Ty>, SchemaError> {
    match &e.expr {
        Expr::Ident(name) => {
            if bound.iter().any(|b| b == name) {
                Ok(None)
            } else if name == SIGNAL {
                needs.insert((SIGNAL.to_string(), "*".to_string()));
                Ok(Some(Ty::String))
            } else if name == LISTS {
                Ok(Some(Ty::Map))
            } else if fields_of(name).is_some() {
                needs.insert((name.clone(), "*".to_string()));
                Ok(Some(Ty::Map))
            } else {
                let known: Vec<&str> = VARIABLES
                    .iter()
                    .map(|(v, _)| *v)
                    .chain([SIGNAL, LISTS])
                    .collect();
                Err(err(
                    format!("unknown variable {name} (known: {})", known.join(", ")),
                    name.clone(),
                ))
            }
        }
        Expr::Select(s) => {
            if let Expr::Ident(root) = &s.operand.expr {
                if !bound.iter().any(|b| b == root) {
                    if root == LISTS {
                        return if lists.contains(&s.field) {
                            Ok(Some(Ty::ListOfString))
                        } else {
                            let known: Vec<&str> = lists.iter().map(String::as_str).collect();
                            Err(err(
                                format!(
                                    "unknown list lists.{} (defined: {})",
                                    s.field,
                                    if known.is_empty() {
                                        "none".to_string()
                                    } else {
                                        known.join(", ")
                                    }
                                ),
                                format!("lists.{}", s.field),
                            ))
                        };
                    }
                    if let Some(fields) = fields_of(root) {
                        return match fields.iter().find(|(f, _)| *f == s.field) {
                            Some((_, t)) => {
                                needs.insert((root.clone(), s.field.clone()));
                                Ok(Some(if s.test { Ty::Bool } else { *t }))
                            }
                            None => {
                                let known: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
                                Err(err(
                                    format!(
                                        "unknown field {root}.{} (known: {})",
                                        s.field,
                                        known.join(", ")
                                    ),
                                    format!("{root}.{}", s.field),
                                ))
                            }
                        };
                    }
                }
            }
            check(&s.operand, lists, bound, needs)?;
            Ok(if s.test { Some(Ty::Bool) } else { None })
        }
        Expr::Call(c) => {
            let mut arg_types = Vec::with_capacity(c.args.len() + 1);
            if let Some(t) = &c.target {
                arg_types.push(check(t, lists, bound, needs)?);
            }
            for a in &c.args {
                arg_types.push(check(a, lists, bound, needs)?);
            }
            let name = c.func_name.as_str();
            if !OPERATORS.contains(&name) && !FUNCTIONS.contains(&name) {
                return Err(err(format!("unknown function {name}"), name));
            }
            let t = |i: usize| arg_types.get(i).copied().flatten();
            match name {
                op::EQUALS
                | op::NOT_EQUALS
                | op::LESS
                | op::LESS_EQUALS
                | op::GREATER
                | op::GREATER_EQUALS => {
                    if let (Some(a), Some(b)) = (t(0), t(1)) {
                        if a != b {
                            return Err(err(
                                format!("cannot compare {} with {}", a.name(), b.name()),
                                "",
                            ));
                        }
                    }
                    Ok(Some(Ty::Bool))
                }
                op::LOGICAL_AND | op::LOGICAL_OR | op::LOGICAL_NOT => {
                    for a in arg_types.iter().flatten() {
                        if *a != Ty::Bool {
                            return Err(err(format!("{name} needs bools, not {}", a.name()), ""));
                        }
                    }
                    Ok(Some(Ty::Bool))
                }
                op::IN => {
                    if let (Some(elem), Some(coll)) = (t(0), t(1)) {
                        if coll == Ty::ListOfString && elem != Ty::String {
                            return Err(err(
                                format!("a {} cannot be in a list(string)", elem.name()),
                                "",
                            ));
                        }
                    }
                    Ok(Some(Ty::Bool))
                }
                "startsWith" | "endsWith" | "contains" | "matches" => {
                    // A literal pattern is compiled now: an invalid one
                    // would make the condition silently false at run time.
                    if name == "matches" {
                        if let Some(pattern) = c.args.last().and_then(|p| match &p.expr {
                            Expr::Literal(LiteralValue::String(text)) => Some(text),
                            _ => None,
                        }) {
                            if let Err(e) = regex::Regex::new(pattern) {
                                let first = e.to_string();
                                let first = first.lines().last().unwrap_or("").trim();
                                return Err(err(
                                    format!("invalid regular expression in matches: {first}"),
                                    name,
                                ));
                            }
                        }
                    }
                    if let Some(target) = t(0) {
                        if target != Ty::String
                            && !(name == "contains" && target == Ty::ListOfString)
                        {
                            return Err(err(
                                format!("{name} applies to strings, not {}", target.name()),
                                name,
                            ));
                        }
                    }
                    Ok(Some(Ty::Bool))
                }
                "size" | "int" | "uint" => Ok(Some(Ty::Int)),
                "string" => Ok(Some(Ty::String)),
                _ => Ok(None),
            }
        }
        Expr::Comprehension(c) => {
            check(&c.iter_range, lists, bound, needs)?;
            check(&c.accu_init, lists, bound, needs)?;
            let n = bound.len();
            bound.push(c.iter_var.clone());
            if let Some(v) = &c.iter_var2 {
                bound.push(v.clone());
            }
            bound.push(c.accu_var.clone());
            let r = check(&c.loop_cond, lists, bound, needs)
                .and_then(|_| check(&c.loop_step, lists, bound, needs))
                .and_then(|_| check(&c.result, lists, bound, needs));
            bound.truncate(n);
            r.map(|_| None)
        }
        Expr::List(l) => {
            for e in &l.elements {
                check(e, lists, bound, needs)?;
            }
            Ok(None)
        }
        Expr::Map(m) => {
            for entry in &m.entries {
                if let EntryExpr::MapEntry(me) = &entry.expr {
                    check(&me.key, lists, bound, needs)?;
                    check(&me.value, lists, bound, needs)?;
                }
            }
            Ok(Some(Ty::Map))
        }
        Expr::Literal(v) => Ok(match v {
            LiteralValue::String(_) => Some(Ty::String),
            LiteralValue::Int(_) | LiteralValue::UInt(_) => Some(Ty::Int),
            LiteralValue::Boolean(_) => Some(Ty::Bool),
            _ => None,
        }),
        Expr::Struct(_) => Err(err("message literals are not supported".to_string(), "")),
        Expr::Unspecified => Ok(None),
    }
}
