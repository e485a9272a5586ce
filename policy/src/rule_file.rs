//! Policy files: YAML documents, each a rule or a `lists:` block, parsed
//! with unknown fields refused and every problem located as
//! `file:line:col`.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::Deserialize;
use vigil_domain::{Severity, SignalKind};

use crate::policy_set::Action;
use crate::Diagnostic;

/// The files of a policy directory: relative path → contents.
pub type PolicySource = BTreeMap<String, String>;

/// Where a CEL expression sits in its file, to place its errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprSource {
    pub text: String,
    pub file: String,
    /// Position of the expression's first character (1-based).
    pub line: usize,
    pub column: usize,
}

impl ExprSource {
    /// A diagnostic at `(line, col)` inside the expression (1-based).
    pub fn at(&self, line: usize, col: usize, message: impl Into<String>) -> Diagnostic {
        // A block scalar's lines all start at the first line's column.
        Diagnostic::new(
            &self.file,
            self.line + line.saturating_sub(1),
            self.column + col.saturating_sub(1),
            message,
        )
    }
}

/// One rule as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub id: String,
    pub description: String,
    pub severity: Severity,
    pub when: Vec<SignalKind>,
    pub condition: Option<ExprSource>,
    pub action: Action,
    pub dry_run: bool,
    pub exceptions: Vec<ExprSource>,
    /// For `block_egress`: the list of hosts (names or addresses) to block.
    pub hosts: Option<String>,
    pub file: String,
    pub line: usize,
}

/// A rule: the signals it looks at, when it fires and what it does.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "rule")]
pub(crate) struct RuleDoc {
    /// Unique across the bundle; findings carry it.
    #[schemars(regex(pattern = r"^[a-z0-9._-]+$"))]
    id: String,
    description: String,
    #[schemars(schema_with = "crate::document_schema::severity")]
    severity: Severity,
    /// The signals this rule looks at.
    #[schemars(schema_with = "crate::document_schema::signals")]
    when: Vec<SignalKind>,
    /// CEL, must be a bool. Variables: signal, process, parent (pid, ppid, uid, exe, name, comm, argv, cmdline, exe_sha256, cgroup, ns_pid, in_container), file (path, name, dir), net (direction, address, port, host), gpu (uuid, name, index, memory_bytes, sm_util), host (hostname, agent_id), lists.<name>. Absent: always.
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    action: Action,
    /// Report what the action would do without doing it.
    #[serde(default)]
    dry_run: bool,
    /// CEL bools; the rule does not fire when any holds.
    #[serde(default)]
    exceptions: Vec<String>,
    /// For action block_egress: the name of a list (in `lists`) of host names or addresses whose traffic is dropped for the process's new sockets.
    #[serde(default)]
    hosts: Option<String>,
}

/// A `lists:` document: named lists of strings, `lists.NAME` in CEL.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "lists")]
pub(crate) struct ListsDoc {
    lists: BTreeMap<String, Vec<String>>,
}

/// Settings for the whole bundle (a `settings:` document).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleSettings {
    /// Every rule's action is reported (as a finding) but not carried out.
    #[serde(default)]
    pub dry_run: bool,
}

/// A `settings:` document: settings for the whole bundle.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "settings")]
pub(crate) struct SettingsDoc {
    settings: BundleSettings,
}

/// Named lists of strings (`lists:` documents).
pub type Lists = BTreeMap<String, Vec<String>>;

/// A policy directory, parsed: rules in order, lists, settings.
#[derive(Debug, Default)]
pub struct ParsedPolicy {
    pub rules: Vec<RuleSpec>,
    pub lists: Lists,
    pub settings: BundleSettings,
}

/// Rules (in file order, files sorted by path), named lists and settings.
pub fn parse_policy_files(files: &PolicySource) -> Result<ParsedPolicy, Vec<Diagnostic>> {
    let mut rules = Vec::new();
    let mut settings: Option<(BundleSettings, String)> = None;
    let mut lists = BTreeMap::new();
    let mut errors = Vec::new();
    let mut ids: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for (file, text) in files {
        if !(file.ends_with(".yaml") || file.ends_with(".yml")) {
            continue;
        }
        for (first_line, doc) in documents(text) {
            if doc
                .lines()
                .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
            {
                continue;
            }
            let located = |e: serde_yaml::Error| {
                let (l, c) = e
                    .location()
                    .map(|loc| (loc.line(), loc.column()))
                    .unwrap_or((1, 1));
                let msg = e.to_string();
                // serde_yaml appends " at line L column C"; the prefix says it.
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                Diagnostic::new(file, first_line + l - 1, c, msg)
            };
            let top = serde_yaml::from_str::<serde_yaml::Value>(&doc);
            let has_key =
                |k: &str| matches!(&top, Ok(serde_yaml::Value::Mapping(m)) if m.contains_key(k));
            if has_key("settings") {
                match serde_yaml::from_str::<SettingsDoc>(&doc) {
                    Ok(d) => match &settings {
                        Some((_, other)) => errors.push(Diagnostic::new(
                            file,
                            first_line,
                            1,
                            format!("settings are already given in {other}"),
                        )),
                        None => settings = Some((d.settings, file.clone())),
                    },
                    Err(e) => errors.push(located(e)),
                }
                continue;
            }
            let is_lists = has_key("lists");
            if is_lists {
                match serde_yaml::from_str::<ListsDoc>(&doc) {
                    Ok(d) => {
                        for (name, values) in d.lists {
                            if lists.insert(name.clone(), values).is_some() {
                                errors.push(Diagnostic::new(
                                    file,
                                    first_line,
                                    1,
                                    format!("list {name} is defined twice"),
                                ));
                            }
                        }
                    }
                    Err(e) => errors.push(located(e)),
                }
                continue;
            }
            let d = match serde_yaml::from_str::<RuleDoc>(&doc) {
                Ok(d) => d,
                Err(e) => {
                    errors.push(located(e));
                    continue;
                }
            };
            let key_line =
                |key: &str| key_position(&doc, key).map(|(l, c)| (first_line + l - 1, c));
            let (id_line, id_col) = key_line("id").unwrap_or((first_line, 1));
            if !valid_id(&d.id) {
                errors.push(Diagnostic::new(
                    file,
                    id_line,
                    id_col,
                    format!(
                        "rule id {:?} must be lowercase letters, digits, '.', '-' or '_'",
                        d.id
                    ),
                ));
            } else if let Some((other, line)) = ids.get(&d.id) {
                errors.push(Diagnostic::new(
                    file,
                    id_line,
                    id_col,
                    format!("rule id {} is already used at {other}:{line}", d.id),
                ));
            } else {
                ids.insert(d.id.clone(), (file.clone(), id_line));
            }
            if d.when.is_empty() {
                let (l, c) = key_line("when").unwrap_or((id_line, 1));
                errors.push(Diagnostic::new(
                    file,
                    l,
                    c,
                    "when: list at least one signal",
                ));
            }
            let condition = d.condition.map(|text| {
                let (l, c) = value_position(&doc, "condition").unwrap_or((1, 1));
                ExprSource {
                    text,
                    file: file.clone(),
                    line: first_line + l - 1,
                    column: c,
                }
            });
            let item_positions = list_item_positions(&doc, "exceptions");
            let exceptions = d
                .exceptions
                .into_iter()
                .enumerate()
                .map(|(i, text)| {
                    let (l, c) = item_positions.get(i).copied().unwrap_or((1, 1));
                    ExprSource {
                        text,
                        file: file.clone(),
                        line: first_line + l - 1,
                        column: c,
                    }
                })
                .collect();
            rules.push(RuleSpec {
                id: d.id,
                description: d.description,
                severity: d.severity,
                when: d.when,
                condition,
                action: d.action,
                dry_run: d.dry_run,
                exceptions,
                hosts: d.hosts,
                file: file.clone(),
                line: id_line,
            });
        }
    }
    if errors.is_empty() {
        Ok(ParsedPolicy {
            rules,
            lists,
            settings: settings.map(|(s, _)| s).unwrap_or_default(),
        })
    } else {
        Err(errors)
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
}

/// The documents of a YAML stream, split at `---` lines, with the 1-based
/// line each starts on.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut start = 1;
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
    docs
}

/// (line, column) of a top-level `key:` in a document, 1-based.
fn key_position(doc: &str, key: &str) -> Option<(usize, usize)> {
    let prefix = format!("{key}:");
    doc.lines()
        .enumerate()
        .find(|(_, l)| l.starts_with(&prefix))
        .map(|(i, _)| (i + 1, 1))
}

/// Where a top-level scalar value starts: after `key:` on its line, inside
/// quotes if quoted, or the first line of a block scalar (`|`, `>`).
fn value_position(doc: &str, key: &str) -> Option<(usize, usize)> {
    let prefix = format!("{key}:");
    let lines: Vec<&str> = doc.lines().collect();
    let (i, line) = lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.starts_with(&prefix))?;
    let rest = &line[prefix.len()..];
    let value = rest.trim_start();
    let col = prefix.len() + (rest.len() - value.len()) + 1;
    if value.starts_with('|') || value.starts_with('>') {
        let next = lines.get(i + 1)?;
        let indent = next.len() - next.trim_start().len();
        return Some((i + 2, indent + 1));
    }
    if value.starts_with('"') || value.starts_with('\'') {
        return Some((i + 1, col + 1));
    }
    Some((i + 1, col))
}

/// Positions of the items of a top-level block list `key:` (`- item`).
fn list_item_positions(doc: &str, key: &str) -> Vec<(usize, usize)> {
    let prefix = format!("{key}:");
    let lines: Vec<&str> = doc.lines().collect();
    let Some(start) = lines.iter().position(|l| l.starts_with(&prefix)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(start + 1) {
        let trimmed = line.trim_start();
        if !line.starts_with([' ', '-']) && !trimmed.is_empty() {
            break;
        }
        if let Some(item) = trimmed.strip_prefix("- ") {
            let indent = line.len() - trimmed.len();
            let value = item.trim_start();
            let mut col = indent + 2 + (item.len() - value.len()) + 1;
            if value.starts_with('"') || value.starts_with('\'') {
                col += 1;
            }
            out.push((i + 1, col));
        }
    }
    out
}

/// Names of the lists, for the CEL check.
pub fn list_names(lists: &BTreeMap<String, Vec<String>>) -> BTreeSet<String> {
    lists.keys().cloned().collect()
}
