//! Policy directories and bundle files on disk, for `vigilctl policy`.

use std::path::Path;

use anyhow::Context;
use vigil_policy::{Diagnostic, PolicySet, PolicySource};

use crate::exit_code::ExitCode;
use crate::terminal_text::escape_lines;

/// Every `.yaml`/`.yml` file under `dir`, by path relative to it.
pub fn read_policy_dir(dir: &Path) -> anyhow::Result<PolicySource> {
    let mut files = PolicySource::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let is_yaml = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            );
            if !is_yaml {
                continue;
            }
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            files.insert(rel, text);
        }
    }
    if files.is_empty() {
        return Err(
            ExitCode::VerificationFailed.error(format!("{}: no .yaml policy files", dir.display()))
        );
    }
    Ok(files)
}

/// Compiles a directory's policy, printing every diagnostic with the
/// directory prefixed to its file.
pub fn check_dir(dir: &Path) -> anyhow::Result<(PolicySource, PolicySet)> {
    let files = read_policy_dir(dir)?;
    match PolicySet::compile(&files) {
        Ok(set) => Ok((files, set)),
        Err(diags) => {
            for d in &diags {
                // A diagnostic quotes the file (an unknown key, a CEL name).
                let located = Diagnostic {
                    file: dir.join(&d.file).display().to_string(),
                    ..d.clone()
                };
                eprintln!("{}", escape_lines(&located.to_string()));
            }
            Err(ExitCode::VerificationFailed.error(format!(
                "{}: {} problem(s)",
                dir.display(),
                diags.len()
            )))
        }
    }
}
