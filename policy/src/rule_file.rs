//! Policy files: YAML documents, each a rule, a `lists:` block or
//! `settings:`, parsed with unknown fields refused and every problem
//! located as `file:line:col`. Positions come from the YAML parser (the
//! documents and root keys from its events, values and errors from
//! `serde-saphyr`), not from scanning the text.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};
use serde_saphyr::{DefaultMessageFormatter, MessageFormatter, Spanned};
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
    #[schemars(with = "String", regex(pattern = r"^[a-z0-9._-]+$"))]
    id: Spanned<String>,
    description: String,
    #[schemars(schema_with = "crate::document_schema::severity")]
    severity: Severity,
    /// The signals this rule looks at.
    #[schemars(schema_with = "crate::document_schema::signals")]
    when: Vec<SignalKind>,
    /// CEL, must be a bool. Variables: signal, process, parent (pid, ppid, uid, exe, name, comm, argv, cmdline, exe_sha256, cgroup, ns_pid, in_container), file (path, name, dir), net (direction, address, port, host), gpu (uuid, name, index, memory_bytes, sm_util), host (hostname, agent_id), lists.<name>. Absent: always.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    condition: Option<Spanned<String>>,
    #[serde(default)]
    action: Action,
    /// Report what the action would do without doing it.
    #[serde(default)]
    dry_run: bool,
    /// CEL bools; the rule does not fire when any holds.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    exceptions: Vec<Spanned<String>>,
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
        let documents = match outline(text) {
            Ok(d) => d,
            Err((line, column, message)) => {
                errors.push(Diagnostic::new(file, line, column, message));
                continue;
            }
        };
        for doc in documents.iter().filter(|d| !d.empty) {
            let located = |(line, column, message): (usize, usize, String)| {
                Diagnostic::new(file, line, column, message)
            };
            if doc.key("settings").is_some() {
                match doc.deserialize::<SettingsDoc>(text) {
                    Ok(d) => match &settings {
                        Some((_, other)) => errors.push(Diagnostic::new(
                            file,
                            doc.first_line,
                            1,
                            format!("settings are already given in {other}"),
                        )),
                        None => settings = Some((d.settings, file.clone())),
                    },
                    Err(e) => errors.push(located(e)),
                }
                continue;
            }
            if doc.key("lists").is_some() {
                match doc.deserialize::<ListsDoc>(text) {
                    Ok(d) => {
                        for (name, values) in d.lists {
                            if lists.insert(name.clone(), values).is_some() {
                                errors.push(Diagnostic::new(
                                    file,
                                    doc.first_line,
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
            let d = match doc.deserialize::<RuleDoc>(text) {
                Ok(d) => d,
                Err(e) => {
                    errors.push(located(e));
                    continue;
                }
            };
            let (id_line, id_col) = doc.key("id").unwrap_or((doc.first_line, 1));
            let id = d.id.value;
            if !valid_id(&id) {
                errors.push(Diagnostic::new(
                    file,
                    id_line,
                    id_col,
                    format!("rule id {id:?} must be lowercase letters, digits, '.', '-' or '_'"),
                ));
            } else if let Some((other, line)) = ids.get(&id) {
                errors.push(Diagnostic::new(
                    file,
                    id_line,
                    id_col,
                    format!("rule id {id} is already used at {other}:{line}"),
                ));
            } else {
                ids.insert(id.clone(), (file.clone(), id_line));
            }
            if d.when.is_empty() {
                let (l, c) = doc.key("when").unwrap_or((id_line, 1));
                errors.push(Diagnostic::new(
                    file,
                    l,
                    c,
                    "when: list at least one signal",
                ));
            }
            let expr = |s: Spanned<String>| {
                let (line, column) = doc.value_start(text, &s);
                ExprSource {
                    text: s.value,
                    file: file.clone(),
                    line,
                    column,
                }
            };
            rules.push(RuleSpec {
                id,
                description: d.description,
                severity: d.severity,
                when: d.when,
                condition: d.condition.map(expr),
                action: d.action,
                dry_run: d.dry_run,
                exceptions: d.exceptions.into_iter().map(expr).collect(),
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

/// `(line, column, message)`, 1-based, in the whole file.
type Located = (usize, usize, String);

/// One document of a YAML stream, as the parser saw it.
#[derive(Debug)]
struct DocumentOutline {
    /// Byte range of its lines in the file: from the line its start event
    /// is on (the `---` line, if any) to the next document's.
    bytes: std::ops::Range<usize>,
    /// 1-based line of `bytes.start`.
    first_line: usize,
    /// Its root is nothing: only comments, or nothing at all.
    empty: bool,
    /// The root mapping's keys with their (line, column), 1-based.
    keys: Vec<(String, usize, usize)>,
}

impl DocumentOutline {
    fn key(&self, name: &str) -> Option<(usize, usize)> {
        self.keys
            .iter()
            .find(|(k, _, _)| k == name)
            .map(|(_, l, c)| (*l, *c))
    }

    /// Deserializes the document alone; an error is placed in the file and
    /// prefixed with the path to the value at fault (`settings: ...`).
    fn deserialize<T: serde::de::DeserializeOwned>(&self, text: &str) -> Result<T, Located> {
        let mut path: Vec<String> = Vec::new();
        serde_saphyr::with_deserializer_from_str(&text[self.bytes.clone()], |de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                path = e.path().iter().map(ToString::to_string).collect();
                e.into_inner()
            })
        })
        .map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line() as usize, l.column() as usize))
                .unwrap_or((1, 1));
            let message = DefaultMessageFormatter.format_message(e.without_snippet());
            // The path ends at the unknown key itself; name its mapping.
            if message.starts_with("unknown field") {
                path.pop();
            }
            let message = if path.is_empty() {
                message.into_owned()
            } else {
                format!("{}: {message}", path.join("."))
            };
            (self.first_line + line.max(1) - 1, column, message)
        })
    }

    /// Where a scalar's text starts in the file: inside its quotes when
    /// quoted; a block scalar (`|`, `>`) is placed at its first line.
    fn value_start(&self, text: &str, value: &Spanned<String>) -> (usize, usize) {
        let at = value.referenced;
        let (line, column) = (at.line() as usize, at.column() as usize);
        let quoted = at
            .span()
            .byte_offset()
            .and_then(|o| text[self.bytes.clone()].as_bytes().get(o as usize))
            .is_some_and(|b| matches!(b, b'"' | b'\''));
        (self.first_line + line - 1, column + usize::from(quoted))
    }
}

/// The documents of a YAML stream with their root keys, from the parser's
/// events; a syntax error is placed where the parser stopped.
fn outline(text: &str) -> Result<Vec<DocumentOutline>, Located> {
    // Byte offset of each line's start, found once: a stream of many
    // documents must not rescan the text for each one.
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let line_start = |line: usize| -> usize {
        line_starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(text.len())
    };
    let mut docs: Vec<DocumentOutline> = Vec::new();
    // Depth of collections open; whether the root mapping waits for a key.
    let mut depth = 0usize;
    let mut wants_key = false;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| {
            let m = e.marker();
            (m.line(), m.col() + 1, e.info().to_string())
        })?;
        let (line, column) = (span.start.line(), span.start.col() + 1);
        match event {
            Event::DocumentStart(..) => {
                let start = if docs.is_empty() { 0 } else { line_start(line) };
                if let Some(previous) = docs.last_mut() {
                    previous.bytes.end = start;
                }
                docs.push(DocumentOutline {
                    bytes: start..text.len(),
                    first_line: if docs.is_empty() { 1 } else { line },
                    empty: false,
                    keys: Vec::new(),
                });
                depth = 0;
            }
            Event::Scalar(value, style, ..) => {
                let Some(doc) = docs.last_mut() else { continue };
                if depth == 0 {
                    // The parser gives an absent root as a plain `~`.
                    doc.empty = style == ScalarStyle::Plain
                        && matches!(&*value, "" | "~" | "null" | "Null" | "NULL");
                } else if depth == 1 && wants_key {
                    doc.keys.push((value.into_owned(), line, column));
                }
                if depth == 1 {
                    wants_key = !wants_key;
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if depth == 1 {
                    wants_key = !wants_key;
                }
                depth += 1;
                if depth == 1 {
                    wants_key = matches!(event, Event::MappingStart(..));
                }
            }
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            Event::Alias(..) if depth == 1 => wants_key = !wants_key,
            _ => {}
        }
    }
    Ok(docs)
}

/// Names of the lists, for the CEL check.
pub fn list_names(lists: &BTreeMap<String, Vec<String>>) -> BTreeSet<String> {
    lists.keys().cloned().collect()
}
