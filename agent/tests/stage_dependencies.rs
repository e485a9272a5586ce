//! The agent's stages import only stages upstream of them, and its modules
//! import each other without a cycle. Read from the source: every
//! `crate::<module>` path, per top-level module of `src/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Stages by position in the data flow: a stage may import only stages
/// of a lower position (upstream), never one beside or below it.
const STAGES: &[(&str, u32)] = &[
    ("sensors", 0),
    ("gpu", 0),
    ("detect", 1),
    ("respond", 2),
    ("ship", 3),
    // Follows the deployments the shipper publishes; its findings go into
    // the ship stage's input.
    ("serve", 4),
];

/// Shared leaves: any module may import them; they import only leaves.
const LEAVES: &[&str] = &[
    "attest",
    "blocked_destination",
    "clock",
    "config",
    "metrics",
    "procfs",
    "sled_reopen",
];

/// Leaf → stage imports that are allowed, and why.
const LEAF_EXCEPTIONS: &[(&str, &str, &str)] = &[(
    "config",
    "sensors",
    "the command line names the sensor choice and the eBPF options",
)];

/// Imports everything, imported by nothing.
const WIRING: &str = "host_agent";

/// One `crate::<to>` reference: where it is.
#[derive(Debug, Clone)]
struct Reference {
    file: PathBuf,
    line: usize,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (None: the crate root).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (!matches!(name.as_str(), "lib" | "main")).then_some(name)
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The modules a line names after `crate::`, grouped imports included
/// (`crate::{a, b::C}`).
fn referenced_modules(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        // `vigil_crate::` or `some_crate::` are not this crate.
        if code[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            for item in group.split(',') {
                let name = ident_at(item.trim());
                if !name.is_empty() {
                    out.push(name.to_string());
                }
            }
        } else {
            let name = ident_at(rest);
            if !name.is_empty() {
                out.push(name.to_string());
            }
        }
    }
    out
}

fn rank(module: &str) -> Option<u32> {
    STAGES.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

fn graph() -> BTreeMap<String, BTreeMap<String, Vec<Reference>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut edges: BTreeMap<String, BTreeMap<String, Vec<Reference>>> = BTreeMap::new();
    for file in files {
        let Some(from) = top_module(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let from_edges = edges.entry(from.clone()).or_default();
        for (n, line) in text.lines().enumerate() {
            for to in referenced_modules(line) {
                if to != from {
                    from_edges.entry(to).or_default().push(Reference {
                        file: file.clone(),
                        line: n + 1,
                    });
                }
            }
        }
    }
    edges
}

fn at(refs: &[Reference]) -> String {
    refs.iter()
        .map(|r| format!("{}:{}", r.file.display(), r.line))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn every_module_is_a_stage_a_leaf_or_the_wiring() {
    for module in graph().keys() {
        assert!(
            rank(module).is_some() || LEAVES.contains(&module.as_str()) || module == WIRING,
            "src/{module}: a new top-level module; add it to STAGES or LEAVES in {}",
            file!()
        );
    }
}

#[test]
fn stages_import_only_stages_upstream_and_leaves_only_leaves() {
    let mut wrong = Vec::new();
    for (from, targets) in graph() {
        for (to, refs) in targets {
            if to == WIRING {
                wrong.push(format!("{from} imports the wiring ({to}) at {}", at(&refs)));
                continue;
            }
            if LEAVES.contains(&to.as_str()) {
                continue;
            }
            if LEAVES.contains(&from.as_str()) {
                if !LEAF_EXCEPTIONS
                    .iter()
                    .any(|(f, t, _)| *f == from && *t == to)
                {
                    wrong.push(format!("leaf {from} imports stage {to} at {}", at(&refs)));
                }
                continue;
            }
            match (rank(&from), rank(&to)) {
                (Some(f), Some(t)) if t >= f && !same_stage(&from, &to, f, t) => wrong.push(
                    format!("{from} imports {to} (not upstream of it) at {}", at(&refs)),
                ),
                _ => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The ship stage's parts import each other.
fn same_stage(from: &str, to: &str, f: u32, t: u32) -> bool {
    f == t && f == 3 && from != to
}

#[test]
fn the_module_graph_has_no_cycle() {
    let edges = graph();
    // Depth-first, with the path so far: a back edge is a cycle.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeMap<String, Vec<Reference>>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Result<(), String> {
        if done.contains(m) {
            return Ok(());
        }
        if let Some(i) = path.iter().position(|p| p == m) {
            let cycle = &path[i..];
            let last = cycle.last().unwrap();
            let refs = &edges[last][m];
            return Err(format!(
                "import cycle {} -> {m} (closing at {})",
                cycle.join(" -> "),
                at(refs)
            ));
        }
        path.push(m.to_string());
        if let Some(targets) = edges.get(m) {
            for to in targets.keys() {
                visit(to, edges, path, done)?;
            }
        }
        path.pop();
        done.insert(m.to_string());
        Ok(())
    }
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        if let Err(e) = visit(m, &edges, &mut Vec::new(), &mut done) {
            panic!("{e}");
        }
    }
}

#[test]
fn references_are_read_from_plain_and_grouped_paths() {
    assert_eq!(
        referenced_modules("use crate::detect::TimedFinding;"),
        ["detect"]
    );
    assert_eq!(
        referenced_modules("use crate::{clock, sensors::SensorEvent};"),
        ["clock", "sensors"]
    );
    assert_eq!(
        referenced_modules("x = crate::clock::boot_now_ns(); // crate::ship"),
        ["clock"]
    );
    assert!(referenced_modules("use vigil_crate::x;").is_empty());
}
