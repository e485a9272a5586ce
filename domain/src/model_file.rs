use crate::{ApprovedWorkloads, FileObject, Finding, ProcessInfo, Severity, SignalKind};

/// File-name suffixes of model weights, matched case-sensitively at the end of
/// the opened path. The agent loads this same list into the kernel's filter
/// table, so user space and kernel agree on what may be a model file.
pub const MODEL_FILE_EXTENSIONS: &[&str] = &[".onnx", ".gguf", ".safetensors", ".pt", ".pth"];

/// Extensions that other software uses for other things (Python's
/// `site-packages/*.pth` path files): a file with one of them is a model only
/// if its content says so.
const AMBIGUOUS_EXTENSIONS: &[&str] = &[".pt", ".pth"];

/// How many leading bytes of a file `sniff_model_format` needs.
pub const MODEL_SNIFF_BYTES: usize = 16;

pub const MODEL_FILE_RULE_ID: &str = "vigil.builtin.model-file-unapproved";

/// What a path's name says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelPathClass {
    /// The extension alone makes it a model file.
    ModelByName,
    /// The extension is shared with other formats; look at the content.
    NeedsContent,
    NotModel,
}

/// Model formats recognised by their leading bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    Gguf,
    Safetensors,
    Onnx,
    PyTorchZip,
    Pickle,
    TfLite,
}

impl ModelFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::Safetensors => "safetensors",
            ModelFormat::Onnx => "onnx",
            ModelFormat::PyTorchZip => "pytorch-zip",
            ModelFormat::Pickle => "pickle",
            ModelFormat::TfLite => "tflite",
        }
    }
}

fn model_extension(path: &str) -> Option<&'static str> {
    MODEL_FILE_EXTENSIONS.iter().copied().find(|ext| {
        path.len() > ext.len()
            && path.ends_with(ext)
            && !path[..path.len() - ext.len()].ends_with('/')
    })
}

/// Whether `path` names a model-weight file by its extension.
pub fn is_model_file_path(path: &str) -> bool {
    model_extension(path).is_some()
}

pub fn classify_model_path(path: &str) -> ModelPathClass {
    match model_extension(path) {
        None => ModelPathClass::NotModel,
        Some(ext) if AMBIGUOUS_EXTENSIONS.contains(&ext) => ModelPathClass::NeedsContent,
        Some(_) => ModelPathClass::ModelByName,
    }
}

/// Recognises a model format from a file's first bytes (at least
/// `MODEL_SNIFF_BYTES` where the file has them).
pub fn sniff_model_format(head: &[u8]) -> Option<ModelFormat> {
    if head.starts_with(b"GGUF") {
        return Some(ModelFormat::Gguf);
    }
    if head.starts_with(b"PK\x03\x04") {
        return Some(ModelFormat::PyTorchZip);
    }
    if head.len() >= 8 && &head[4..8] == b"TFL3" {
        return Some(ModelFormat::TfLite);
    }
    // Legacy torch.save: a pickle, protocol 2 to 5.
    if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        return Some(ModelFormat::Pickle);
    }
    // safetensors: u64 little-endian header length, then a JSON object.
    if head.len() >= 9 && head[8] == b'{' {
        let n = u64::from_le_bytes(head[..8].try_into().ok()?);
        if n > 1 && n < 100 << 20 {
            return Some(ModelFormat::Safetensors);
        }
    }
    // ONNX ModelProto: field 1 (ir_version, varint) comes first.
    if head.len() >= 2 && head[0] == 0x08 && head[1] > 0 && head[1] < 0x20 {
        return Some(ModelFormat::Onnx);
    }
    None
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

    /// Evaluates one open of `path` by `process`. `head` is the file's first
    /// bytes, or None when they could not be read (then only the name
    /// counts). `process.exe_sha256` must be filled in when approvals are
    /// configured, or the process counts as unapproved.
    pub fn evaluate(
        &self,
        process: &ProcessInfo,
        path: &str,
        head: Option<&[u8]>,
        observed_at_unix_nanos: i64,
    ) -> Option<Finding> {
        let format = head.and_then(sniff_model_format);
        match classify_model_path(path) {
            ModelPathClass::NotModel => return None,
            // A readable file that does not look like a model is not one.
            ModelPathClass::NeedsContent if head.is_some() && format.is_none() => return None,
            ModelPathClass::NeedsContent | ModelPathClass::ModelByName => {}
        }
        if self.approved.approves_exe(&process.exe_sha256) {
            return None;
        }
        let format = format
            .map(|f| format!(" ({})", f.as_str()))
            .unwrap_or_default();
        Some(Finding {
            seq: 0,
            rule_id: MODEL_FILE_RULE_ID.to_string(),
            severity: Severity::High,
            signal: SignalKind::ModelFile,
            observed_at_unix_nanos,
            summary: format!(
                "model file {path}{format} opened by unapproved process {} (pid {})",
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
        let f = rule
            .evaluate(&python(), "/tmp/m/model.onnx", Some(b""), 7)
            .unwrap();
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
        assert!(rule
            .evaluate(&python(), "/tmp/m/model.onnx", None, 7)
            .is_none());
        let mut other = python();
        other.exe_sha256 = "cd34".into();
        assert!(rule
            .evaluate(&other, "/tmp/m/model.onnx", None, 7)
            .is_some());
        other.exe_sha256.clear();
        assert!(rule
            .evaluate(&other, "/tmp/m/model.onnx", None, 7)
            .is_some());
    }

    #[test]
    fn python_path_files_are_not_pytorch_checkpoints() {
        let rule = ModelFileOpenRule::default();
        let site = "/usr/lib/python3/site-packages/distutils-precedence.pth";
        assert!(rule
            .evaluate(&python(), site, Some(b"import os; var = 'SETUPTOOLS"), 7)
            .is_none());
        assert!(rule
            .evaluate(&python(), "/m/ckpt.pth", Some(b"PK\x03\x04\x00\x00"), 7)
            .is_some());
        assert!(rule
            .evaluate(&python(), "/m/old.pt", Some(b"\x80\x02\x8a\x0a"), 7)
            .is_some());
        // Unreadable: the name is all there is to go on.
        assert!(rule.evaluate(&python(), "/m/gone.pt", None, 7).is_some());
    }

    #[test]
    fn formats_are_recognised_by_their_magic() {
        assert_eq!(
            sniff_model_format(b"GGUF\x03\x00\x00\x00"),
            Some(ModelFormat::Gguf)
        );
        let mut st = 120u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{\"__metadata__\"");
        assert_eq!(sniff_model_format(&st), Some(ModelFormat::Safetensors));
        assert_eq!(
            sniff_model_format(b"\x08\x07\x12\x07pytorch"),
            Some(ModelFormat::Onnx)
        );
        assert_eq!(
            sniff_model_format(b"\x1c\x00\x00\x00TFL3"),
            Some(ModelFormat::TfLite)
        );
        assert_eq!(sniff_model_format(b"Hello, world. This is prose."), None);
        assert_eq!(sniff_model_format(b""), None);
    }

    #[test]
    fn other_files_are_not_findings() {
        let rule = ModelFileOpenRule::default();
        assert!(rule.evaluate(&python(), "/etc/passwd", None, 7).is_none());
    }
}
