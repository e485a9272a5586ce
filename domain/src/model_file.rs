use crate::{ApprovedWorkloads, FileObject, Finding, ProcessInfo, Severity, SignalKind};

/// File-name suffixes of model weights, matched case-sensitively at the end of
/// the opened path. The agent loads this same list into the kernel's filter
/// table, so user space and kernel agree on what a model file is.
pub const MODEL_FILE_EXTENSIONS: &[&str] = &[".onnx", ".gguf", ".safetensors", ".pt", ".pth"];

pub const MODEL_FILE_RULE_ID: &str = "vigil.builtin.model-file-unapproved";

/// Whether `path` names a model-weight file by its extension.
pub fn is_model_file_path(path: &str) -> bool {
    MODEL_FILE_EXTENSIONS.iter().any(|ext| {
        path.len() > ext.len()
            && path.ends_with(ext)
            && !path[..path.len() - ext.len()].ends_with('/')
    })
}

/// Built-in rule: a model file opened by a process that is not an approved workload.
#[derive(Debug, Clone, Default)]
pub struct ModelFileOpenRule {
    pub approved: ApprovedWorkloads,
}

impl ModelFileOpenRule {
    pub fn new(approved: ApprovedWorkloads) -> Self {
        Self { approved }
    }

    /// Evaluates one open of `path` by `process`. `process.exe_sha256` must be
    /// filled in when approvals are configured, or the process counts as unapproved.
    pub fn evaluate(
        &self,
        process: &ProcessInfo,
        path: &str,
        observed_at_unix_nanos: i64,
    ) -> Option<Finding> {
        if !is_model_file_path(path) || self.approved.approves_exe(&process.exe_sha256) {
            return None;
        }
        Some(Finding {
            seq: 0,
            rule_id: MODEL_FILE_RULE_ID.to_string(),
            severity: Severity::High,
            signal: SignalKind::ModelFile,
            observed_at_unix_nanos,
            summary: format!(
                "model file {path} opened by unapproved process {} (pid {})",
                process.name(),
                process.pid
            ),
            process: process.clone(),
            file: Some(FileObject {
                path: path.to_string(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn python() -> ProcessInfo {
        ProcessInfo {
            pid: 42,
            exe: "/usr/bin/python3.11".into(),
            argv: vec!["python3".into(), "-c".into(), "pass".into()],
            comm: "python3".into(),
            exe_sha256: "AB12".into(),
            ..Default::default()
        }
    }

    #[test]
    fn model_extensions_match_only_at_the_end_of_a_file_name() {
        assert!(is_model_file_path("/tmp/x/model.onnx"));
        assert!(is_model_file_path("weights.safetensors"));
        assert!(is_model_file_path("/m/llama-3.Q4.gguf"));
        assert!(is_model_file_path("ckpt.pth"));
        assert!(!is_model_file_path("/tmp/model.onnx.txt"));
        assert!(!is_model_file_path("/tmp/model.txt"));
        assert!(!is_model_file_path("/tmp/.onnx/"));
        assert!(!is_model_file_path(".onnx"));
        assert!(!is_model_file_path("/x/.pt"));
        assert!(!is_model_file_path("/x/model.ONNX"));
    }

    #[test]
    fn unapproved_process_opening_a_model_file_is_a_high_finding() {
        let rule = ModelFileOpenRule::default();
        let f = rule.evaluate(&python(), "/tmp/m/model.onnx", 7).unwrap();
        assert_eq!(f.rule_id, MODEL_FILE_RULE_ID);
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.signal, SignalKind::ModelFile);
        assert_eq!(f.file.unwrap().path, "/tmp/m/model.onnx");
        assert_eq!(f.process.pid, 42);
        assert!(f.summary.contains("python3.11"), "{}", f.summary);
    }

    #[test]
    fn approved_exe_digest_suppresses_the_finding_case_insensitively() {
        let rule = ModelFileOpenRule::new(ApprovedWorkloads::new(["ab12"]));
        assert!(rule.evaluate(&python(), "/tmp/m/model.onnx", 7).is_none());
        let mut other = python();
        other.exe_sha256 = "cd34".into();
        assert!(rule.evaluate(&other, "/tmp/m/model.onnx", 7).is_some());
        other.exe_sha256.clear();
        assert!(rule.evaluate(&other, "/tmp/m/model.onnx", 7).is_some());
    }

    #[test]
    fn other_files_are_not_findings() {
        let rule = ModelFileOpenRule::default();
        assert!(rule.evaluate(&python(), "/etc/passwd", 7).is_none());
    }
}
