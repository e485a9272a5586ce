//! Compiled rules and their evaluation against findings.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cel::objects::{Key, Map, Value};
use cel::{Context, Program};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vigil_domain::{Finding, ProcessInfo, Severity, SignalKind};

use crate::cel_schema::{check_condition, Needs};
use crate::condition_limits::{
    expression_depth, COMPILE_STACK_BYTES, MAX_CONDITION_BYTES, MAX_CONDITION_DEPTH,
};
use crate::facts::{finding_values, HostFacts};
use crate::rule_file::{list_names, parse_policy_files, ExprSource, ParsedPolicy, PolicySource};
use crate::Diagnostic;

/// What a matching rule does on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Report only.
    #[default]
    Alert,
    /// Kill the process and its descendants.
    Kill,
    /// Freeze the process's cgroup (cgroup v2), until unfrozen.
    Freeze,
    /// Refuse GPU device nodes to the process's cgroup.
    DenyGpu,
    /// Drop the process's traffic to the listed hosts.
    BlockEgress,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Kill => "kill",
            Action::Freeze => "freeze",
            Action::DenyGpu => "deny_gpu",
            Action::BlockEgress => "block_egress",
        }
    }
}

/// The rule a finding matched, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub rule_id: String,
    pub severity: Severity,
    pub action: Action,
    /// Report what the action would do, without doing it.
    pub dry_run: bool,
    /// For block_egress: the hosts (names or addresses) to block.
    pub hosts: Vec<String>,
}

struct CompiledRule {
    /// For block_egress: the hosts to block.
    hosts: Vec<String>,
    /// What its condition and exceptions read.
    needs: Needs,
    id: String,
    severity: Severity,
    when: Vec<SignalKind>,
    condition: Option<Program>,
    exceptions: Vec<Program>,
    action: Action,
    dry_run: bool,
}

/// A checked, compiled policy: rules in order, lists, and the root CEL
/// context (functions and lists) every evaluation starts from.
pub struct PolicySet {
    rules: Vec<CompiledRule>,
    /// Indexes into `rules` by signal, in rule order.
    by_signal: HashMap<SignalKind, Vec<usize>>,
    /// What the rules of a signal read, together.
    needs_by_signal: HashMap<SignalKind, Needs>,
    root: Context<'static, 'static>,
    lists: BTreeMap<String, Vec<String>>,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("rules", &self.rule_ids())
            .field("lists", &self.lists.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Compiles one expression, checks it against the schema and returns what
/// it reads. The `cel` parser reports malformed input as errors (the 0.10
/// parser panicked on some); a panic would still be a bug there, so it is
/// caught here and becomes a diagnostic. The panic hook is left alone: the
/// panic is reported like any other, and no other thread's panic is hidden.
///
/// A stack overflow is not a panic: it aborts. So the text's length is
/// bounded first, the parser and the check run on a thread with a stack
/// sized for the parser's own nesting limit, and a tree deeper than
/// evaluation on a small stack allows is refused (`condition_limits`).
fn compile_expr(
    src: &ExprSource,
    lists: &std::collections::BTreeSet<String>,
) -> Result<(Program, Needs), Diagnostic> {
    if src.text.len() > MAX_CONDITION_BYTES {
        return Err(src.at(
            1,
            1,
            format!(
                "a condition is at most {MAX_CONDITION_BYTES} bytes, this one is {}; name long lists of values in `lists:`",
                src.text.len()
            ),
        ));
    }
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("policy-compile".into())
            .stack_size(COMPILE_STACK_BYTES)
            .spawn_scoped(scope, || compile_expr_on_this_stack(src, lists))
            .map_err(|e| src.at(1, 1, format!("cannot start the CEL compiler: {e}")))?
            .join()
            .unwrap_or_else(|_| {
                Err(src.at(1, 1, "CEL syntax error: the expression does not parse"))
            })
    })
}

fn compile_expr_on_this_stack(
    src: &ExprSource,
    lists: &std::collections::BTreeSet<String>,
) -> Result<(Program, Needs), Diagnostic> {
    let program = std::panic::catch_unwind(|| Program::compile(&src.text))
        .map_err(|_| src.at(1, 1, "CEL syntax error: the expression does not parse"))?
        .map_err(|errs| match errs.errors.first() {
            Some(e) => {
                let (line, col) = (e.pos.0.max(1) as usize, e.pos.1.max(0) as usize + 1);
                src.at(line, col, format!("CEL syntax error: {}", e.msg))
            }
            None => src.at(1, 1, "CEL syntax error"),
        })?;
    let depth = expression_depth(program.expression());
    if depth > MAX_CONDITION_DEPTH {
        return Err(src.at(
            1,
            1,
            format!(
                "a condition nests at most {MAX_CONDITION_DEPTH} levels deep, this one {depth}; split it, or use `lists:` and `in`"
            ),
        ));
    }
    let needs = check_condition(program.expression(), lists).map_err(|e| {
        let offset = if e.needle.is_empty() {
            None
        } else {
            src.text.find(&e.needle)
        };
        let (line, col) = match offset {
            Some(o) => {
                let before = &src.text[..o];
                let line = before.matches('\n').count() + 1;
                let col = o - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
                (line, col)
            }
            None => (1, 1),
        };
        src.at(line, col, e.message)
    })?;
    Ok((program, needs))
}

impl PolicySet {
    /// Parses, checks and compiles a policy directory's files. Every
    /// problem is reported, each as `file:line:col: message`.
    pub fn compile(files: &PolicySource) -> Result<PolicySet, Vec<Diagnostic>> {
        let ParsedPolicy {
            rules: specs,
            lists,
            settings,
        } = parse_policy_files(files)?;
        let names = list_names(&lists);
        let mut errors = Vec::new();
        let mut rules = Vec::new();
        for spec in specs {
            let mut needs = Needs::new();
            let condition = match spec.condition.as_ref().map(|c| compile_expr(c, &names)) {
                Some(Err(d)) => {
                    errors.push(d);
                    None
                }
                Some(Ok((p, n))) => {
                    needs.extend(n);
                    Some(p)
                }
                None => None,
            };
            let mut exceptions = Vec::new();
            for x in &spec.exceptions {
                match compile_expr(x, &names) {
                    Ok((p, n)) => {
                        needs.extend(n);
                        exceptions.push(p);
                    }
                    Err(d) => errors.push(d),
                }
            }
            let hosts = match (spec.action, &spec.hosts) {
                (Action::BlockEgress, Some(list)) => match lists.get(list) {
                    Some(h) => h.clone(),
                    None => {
                        errors.push(Diagnostic::new(
                            &spec.file,
                            spec.line,
                            1,
                            format!("rule {}: hosts: no list named {list}", spec.id),
                        ));
                        Vec::new()
                    }
                },
                (Action::BlockEgress, None) => {
                    errors.push(Diagnostic::new(
                        &spec.file,
                        spec.line,
                        1,
                        format!(
                            "rule {}: action block_egress needs `hosts:` naming a list of hosts",
                            spec.id
                        ),
                    ));
                    Vec::new()
                }
                (_, Some(_)) => {
                    errors.push(Diagnostic::new(
                        &spec.file,
                        spec.line,
                        1,
                        format!(
                            "rule {}: `hosts:` only goes with action block_egress",
                            spec.id
                        ),
                    ));
                    Vec::new()
                }
                (_, None) => Vec::new(),
            };
            rules.push(CompiledRule {
                hosts,
                needs,
                id: spec.id,
                severity: spec.severity,
                when: spec.when,
                condition,
                exceptions,
                action: spec.action,
                dry_run: spec.dry_run || settings.dry_run,
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut root = Context::default();
        let lists_value: std::collections::HashMap<Key, Value> = lists
            .iter()
            .map(|(k, v)| {
                (
                    Key::String(Arc::new(k.clone())),
                    Value::List(Arc::new(
                        v.iter()
                            .map(|s| Value::String(Arc::new(s.clone())))
                            .collect(),
                    )),
                )
            })
            .collect();
        root.add_variable_from_value(
            "lists",
            Value::Map(Map {
                map: Arc::new(lists_value),
            }),
        );
        let mut by_signal: HashMap<SignalKind, Vec<usize>> = HashMap::new();
        let mut needs_by_signal: HashMap<SignalKind, Needs> = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            for s in &r.when {
                by_signal.entry(*s).or_default().push(i);
                needs_by_signal
                    .entry(*s)
                    .or_default()
                    .extend(r.needs.iter().cloned());
            }
        }
        Ok(PolicySet {
            rules,
            by_signal,
            needs_by_signal,
            root,
            lists,
        })
    }

    /// Whether the rules for `signal` read `parent`: only then is it worth
    /// looking the parent up.
    pub fn reads_parent(&self, signal: SignalKind) -> bool {
        self.needs_by_signal
            .get(&signal)
            .is_some_and(|n| n.iter().any(|(root, _)| root == "parent"))
    }

    pub fn rule_ids(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.id.as_str()).collect()
    }

    pub fn lists(&self) -> &BTreeMap<String, Vec<String>> {
        &self.lists
    }

    /// The first rule (in file order) for this finding's signal whose
    /// condition holds and no exception does. None: the policy allows it.
    /// A condition that fails to evaluate counts as not holding.
    pub fn evaluate(
        &self,
        finding: &Finding,
        parent: Option<&ProcessInfo>,
        host: &HostFacts,
    ) -> Option<Decision> {
        let candidates = self.by_signal.get(&finding.signal)?;
        let first = &self.rules[*candidates.first()?];
        // A rule with nothing to evaluate decides without building anything.
        let decided = if first.condition.is_none() && first.exceptions.is_empty() {
            Some(first)
        } else {
            let needs = &self.needs_by_signal[&finding.signal];
            let mut ctx = self.root.new_inner_scope();
            for (name, value) in finding_values(finding, parent, host, needs) {
                ctx.add_variable_as_val(name, value);
            }
            let holds = |p: &Program| matches!(p.execute(&ctx), Ok(Value::Bool(true)));
            candidates
                .iter()
                .map(|i| &self.rules[*i])
                .find(|r| r.condition.as_ref().is_none_or(holds) && !r.exceptions.iter().any(holds))
        };
        decided.map(|r| Decision {
            rule_id: r.id.clone(),
            severity: r.severity,
            action: r.action,
            dry_run: r.dry_run,
            hosts: r.hosts.clone(),
        })
    }
}

#[cfg(test)]
#[path = "policy_set_tests.rs"]
mod tests;
