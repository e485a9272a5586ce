/// File-name suffixes of model weights, matched case-sensitively at the end of
/// the opened path. The agent loads this same list into the kernel's filter
/// table, so user space and kernel agree on what may be a model file.
pub const MODEL_FILE_EXTENSIONS: &[&str] = &[
    ".onnx",
    ".gguf",
    ".ggml",
    ".safetensors",
    ".pt",
    ".pth",
    ".ckpt",
    ".tflite",
    ".mlmodel",
    ".pb",
    ".bin",
];

/// Extensions that other software uses for other things (Python's
/// `site-packages/*.pth` path files): a file with one of them is a model only
/// if its content says so.
const AMBIGUOUS_EXTENSIONS: &[&str] = &[".pt", ".pth"];

/// Extensions that are model weights only inside a model directory
/// (`pytorch_model.bin` in a Hugging Face snapshot, `saved_model.pb`), and
/// countless other things elsewhere.
const CONTEXT_EXTENSIONS: &[&str] = &[".bin", ".pb"];

/// Path components that mark a model directory.
const MODEL_DIRECTORY_MARKERS: &[&str] = &[
    "/models/",
    "/model/",
    "/weights/",
    "/checkpoints/",
    "/saved_model",
    "/huggingface/",
    "/.ollama/",
    "/snapshots/",
];

pub const MODEL_FILE_RULE_ID: &str = "vigil.builtin.model-file-unapproved";

/// How many leading bytes of a file `sniff_model_format` needs.
pub const MODEL_SNIFF_BYTES: usize = 16;

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
        Some(ext) if CONTEXT_EXTENSIONS.contains(&ext) => {
            let dir = &path[..path.rfind('/').map(|i| i + 1).unwrap_or(0)];
            if MODEL_DIRECTORY_MARKERS.iter().any(|m| dir.contains(m)) {
                ModelPathClass::ModelByName
            } else {
                ModelPathClass::NotModel
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn bin_and_pb_files_are_models_only_in_model_directories() {
        use ModelPathClass::*;
        let hf = "/root/.cache/huggingface/hub/models--gpt2/snapshots/abc/pytorch_model.bin";
        assert_eq!(classify_model_path(hf), ModelByName);
        assert_eq!(
            classify_model_path("/srv/models/resnet/saved_model.pb"),
            ModelByName
        );
        assert_eq!(classify_model_path("/lib/firmware/iwlwifi.bin"), NotModel);
        assert_eq!(classify_model_path("/tmp/unpacked/data.bin"), NotModel);
        assert_eq!(
            classify_model_path("/usr/share/proto/descriptor.pb"),
            NotModel
        );
        assert_eq!(classify_model_path("/m/ckpt.pth"), NeedsContent);
        assert_eq!(classify_model_path("/m/llama.gguf"), ModelByName);
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
        assert_eq!(
            sniff_model_format(b"PK\x03\x04\x00\x00"),
            Some(ModelFormat::PyTorchZip)
        );
        assert_eq!(sniff_model_format(b"Hello, world. This is prose."), None);
        assert_eq!(sniff_model_format(b""), None);
    }
}
