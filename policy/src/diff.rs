//! A unified diff of two bundles' files, file by file: what `vigilctl
//! policy diff` prints and the dashboard's policy page shows. The text
//! is the stored files' own (unescaped): a terminal escapes it, a page
//! puts it in the DOM as text.

use std::collections::{BTreeMap, BTreeSet};

/// The unified diff of version `from`'s files `a` and version `to`'s files
/// `b` (`v<from>/<name>` against `v<to>/<name>` per file that differs), or
/// one line saying they have the same rules.
pub fn bundle_diff(
    from: u64,
    a: &BTreeMap<String, String>,
    to: u64,
    b: &BTreeMap<String, String>,
) -> String {
    let mut out = String::new();
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for name in names {
        let (old, new) = (
            a.get(name).map(String::as_str).unwrap_or(""),
            b.get(name).map(String::as_str).unwrap_or(""),
        );
        if old == new {
            continue;
        }
        out.push_str(
            &similar::TextDiff::from_lines(old, new)
                .unified_diff()
                .header(&format!("v{from}/{name}"), &format!("v{to}/{name}"))
                .to_string(),
        );
    }
    if out.is_empty() {
        out.push_str(&format!("v{from} and v{to} have the same rules\n"));
    }
    out
}
