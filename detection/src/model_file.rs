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
    ".pkl",
    ".pickle",
    ".joblib",
];

/// Extensions that other software uses for other things (Python's
/// `site-packages/*.pth` path files): a file with one of them is a model only
/// if its content says so.
const AMBIGUOUS_EXTENSIONS: &[&str] = &[".pt", ".pth"];

/// Pickles by name (`pickle.dump`, `joblib.dump`): data as often as models,
/// so opening one is no model-file finding; but loading one runs whatever
/// it imports, so each is examined for that.
const PICKLE_EXTENSIONS: &[&str] = &[".pkl", ".pickle", ".joblib"];

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

/// How many leading bytes of a file `sniff_model_format` and
/// `sniff_unnamed_model_format` need (a zip entry name is inside).
pub const MODEL_SNIFF_BYTES: usize = 128;

/// What a path's name says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelPathClass {
    /// The extension alone makes it a model file.
    ModelByName,
    /// The extension is shared with other formats; look at the content.
    NeedsContent,
    /// A pickle by name: examined for code it runs when loaded, a model
    /// finding of its own only if that code is dangerous.
    PickleByName,
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

/// The model extension `path` ends with, in any case (`.GGUF`, `.Onnx`:
/// the loaders do not care, so neither may the agent).
fn model_extension(path: &str) -> Option<&'static str> {
    let p = path.as_bytes();
    MODEL_FILE_EXTENSIONS.iter().copied().find(|ext| {
        let Some(stem) = p.len().checked_sub(ext.len()).filter(|&n| n > 0) else {
            return false;
        };
        p[stem..].eq_ignore_ascii_case(ext.as_bytes()) && p[stem - 1] != b'/'
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
        Some(ext) if PICKLE_EXTENSIONS.contains(&ext) => ModelPathClass::PickleByName,
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
    // A zip is a model only as torch.save writes one: its first entry is
    // `<archive>/data.pkl` (a plain zip, a jar, a docx named `.pt` is not).
    if head.starts_with(b"PK\x03\x04") {
        return is_torch_zip(head).then_some(ModelFormat::PyTorchZip);
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

/// torch.save's zip: the first local entry is `<archive>/data.pkl`.
fn is_torch_zip(head: &[u8]) -> bool {
    let Some(len) = head.get(26..28) else {
        return false;
    };
    let name_len = u16::from_le_bytes([len[0], len[1]]) as usize;
    head.get(30..30 + name_len)
        .is_some_and(|name| name.ends_with(b"/data.pkl") || name == b"data.pkl")
}

/// Whether `head` could start a pickle of any protocol: protocol 2 and
/// later open with `PROTO`, but 0 and 1 (which `torch.save` and
/// `pickle.dump` still write when asked) with any opcode, so this only rules
/// out bytes no pickle starts with. Enough to ask the inspector to walk it,
/// never a verdict.
pub fn may_be_pickle(head: &[u8]) -> bool {
    const FIRST_OPCODES: &[u8] = b"(.012BCFGIJKLMNPQRSTUVXabcdeghijlopqrstu}])";
    match head.first() {
        // GLOBAL and INST name a module on their first line: a dotted
        // identifier (non-ASCII letters allowed), so a Python path file's
        // `import os; ...` (which Python opens at every start) is not one.
        Some(b'c' | b'i') => {
            let line = head[1..].split(|&b| b == b'\n').next().unwrap_or(&[]);
            !line.is_empty()
                && line
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.".contains(b) || *b >= 0x80)
        }
        Some(&b) => FIRST_OPCODES.contains(&b) || (0x80..=0x98).contains(&b),
        None => false,
    }
}

/// Recognises model weights from content alone, for a file whose name says
/// nothing (`cache.dat`, `shard.000`): only headers that say more than a
/// first byte count, so an arbitrary file (a database, an archive, a
/// library, a cache pickle) is not a model. ONNX counts when its first
/// fields read as a ModelProto's, a pickle when it opens with torch.save's
/// magic number.
pub fn sniff_unnamed_model_format(head: &[u8]) -> Option<ModelFormat> {
    match sniff_model_format(head)? {
        // Magic, then a version this format has had (1 to 3).
        ModelFormat::Gguf => {
            let version = u32::from_le_bytes(head.get(4..8)?.try_into().ok()?);
            (1..=3).contains(&version).then_some(ModelFormat::Gguf)
        }
        // The JSON header opens with a quoted tensor or metadata name
        // (JSON allows whitespace before it).
        ModelFormat::Safetensors => head
            .get(9..)?
            .iter()
            .find(|b| !b" \t\r\n".contains(b))
            .is_some_and(|&b| b == b'"')
            .then_some(ModelFormat::Safetensors),
        ModelFormat::PyTorchZip => Some(ModelFormat::PyTorchZip),
        ModelFormat::TfLite => Some(ModelFormat::TfLite),
        ModelFormat::Onnx => starts_like_model_proto(head).then_some(ModelFormat::Onnx),
        ModelFormat::Pickle => starts_with_torch_magic(head).then_some(ModelFormat::Pickle),
    }
}

/// Legacy `torch.save` (and torch's own pickles) begin with PROTO, an
/// optional FRAME, then LONG1 of the magic number 0x1950a86a20f9469cfc6c.
fn starts_with_torch_magic(head: &[u8]) -> bool {
    const MAGIC: &[u8] = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";
    let Some(rest) = head.get(2..) else {
        return false;
    };
    // FRAME (protocol 4 and later): opcode and an 8-byte length.
    let rest = match rest.first() {
        Some(0x95) => rest.get(9..).unwrap_or(&[]),
        _ => rest,
    };
    rest.starts_with(MAGIC)
}

/// Whether `head` reads as the start of an ONNX ModelProto: ir_version
/// (field 1) of a version ONNX has had, then only ModelProto's own fields
/// with their wire types, up to the graph or an opset import, or to a
/// text field (producer, doc string) that goes on past the end of `head`.
fn starts_like_model_proto(head: &[u8]) -> bool {
    fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut at = 0;
    if head.first() != Some(&0x08) {
        return false;
    }
    at += 1;
    match varint(head, &mut at) {
        Some(v) if (1..=15).contains(&v) => {}
        _ => return false,
    }
    while at < head.len() {
        let Some(tag) = varint(head, &mut at) else {
            return false;
        };
        match (tag >> 3, tag & 7) {
            // graph, opset_import: a model.
            (7 | 8, 2) => return true,
            // producer_name, producer_version, domain, doc_string,
            // metadata_props, training_info, functions.
            (2 | 3 | 4 | 6 | 14 | 20 | 25, 2) => {
                let Some(len) = varint(head, &mut at) else {
                    return false;
                };
                if len > 1 << 24 {
                    return false;
                }
                let end = at.saturating_add(len as usize);
                if end > head.len() {
                    let text = &head[at.min(head.len())..];
                    return !text.is_empty()
                        && text
                            .iter()
                            .all(|&b| b.is_ascii_graphic() || b" \t\r\n".contains(&b));
                }
                at = end;
            }
            // model_version.
            (5, 0) => {
                if varint(head, &mut at).is_none() {
                    return false;
                }
            }
            _ => return false,
        }
    }
    false
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
        // Extensions in any case, as the loaders take them.
        assert!(is_model_file_path("/x/model.ONNX"));
        assert!(is_model_file_path("/x/é.GgUf"));
        assert_eq!(
            classify_model_path("/m/x.PKL"),
            ModelPathClass::PickleByName
        );
        assert_eq!(classify_model_path("/m/x.Pt"), ModelPathClass::NeedsContent);
        assert!(!is_model_file_path("/x/.GGUF"));
        assert!(!is_model_file_path("/x/modelé"));
        assert!(!is_model_file_path("é"));
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
        assert_eq!(classify_model_path("/tmp/x/clf.joblib"), PickleByName);
        assert_eq!(classify_model_path("/srv/cache.pkl"), PickleByName);
        assert_eq!(classify_model_path("/srv/frame.pickle"), PickleByName);
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
        // A zip only as torch.save writes one.
        let mut torch = b"PK\x03\x04".to_vec();
        torch.extend_from_slice(&[0; 22]);
        torch.extend_from_slice(&16u16.to_le_bytes());
        torch.extend_from_slice(&[0; 2]);
        torch.extend_from_slice(b"archive/data.pkl");
        assert_eq!(sniff_model_format(&torch), Some(ModelFormat::PyTorchZip));
        assert_eq!(sniff_model_format(b"PK\x03\x04\x00\x00"), None);
        let mut plain = torch[..26].to_vec();
        plain.extend_from_slice(&9u16.to_le_bytes());
        plain.extend_from_slice(&[0; 2]);
        plain.extend_from_slice(b"notes.txt");
        assert_eq!(sniff_model_format(&plain), None);
        assert_eq!(sniff_model_format(b"Hello, world. This is prose."), None);
        assert_eq!(sniff_model_format(b""), None);
    }

    #[test]
    fn any_protocol_of_pickle_may_be_one_and_text_or_binaries_are_not() {
        assert!(may_be_pickle(b"\x80\x04\x95"));
        assert!(may_be_pickle(b"cos\nsystem\n(S'id'\ntR."));
        assert!(may_be_pickle(b"(dp0\nS'a'\n"));
        assert!(may_be_pickle(b"}q\x00(X"));
        assert!(!may_be_pickle(b"/usr/lib/python3/dist-packages\n"));
        assert!(!may_be_pickle(b"# a comment\n"));
        assert!(!may_be_pickle(
            b"import os; var = 'SETUPTOOLS_USE_DISTUTILS'"
        ));
        assert!(may_be_pickle(b"c__builtin__\neval\n"));
        assert!(!may_be_pickle(b"\x7fELF"));
        assert!(!may_be_pickle(b""));
    }

    #[test]
    fn unnamed_files_count_as_models_only_with_a_distinctive_header() {
        let gguf = b"GGUF\x03\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00";
        assert_eq!(sniff_unnamed_model_format(gguf), Some(ModelFormat::Gguf));
        assert_eq!(sniff_unnamed_model_format(b"GGUF\x09\x00\x00\x00"), None);
        let mut st = 40u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{\"weight\":{\"dtype\":\"F32\"}}");
        assert_eq!(
            sniff_unnamed_model_format(&st),
            Some(ModelFormat::Safetensors)
        );
        let mut torch = b"PK\x03\x04".to_vec();
        torch.extend_from_slice(&[0; 22]);
        torch.extend_from_slice(&16u16.to_le_bytes());
        torch.extend_from_slice(&[0; 2]);
        torch.extend_from_slice(b"archive/data.pkl");
        assert_eq!(
            sniff_unnamed_model_format(&torch),
            Some(ModelFormat::PyTorchZip)
        );
        let mut jar = torch[..26].to_vec();
        jar.extend_from_slice(&20u16.to_le_bytes());
        jar.extend_from_slice(&[0; 2]);
        jar.extend_from_slice(b"META-INF/MANIFEST.MF");
        assert_eq!(sniff_unnamed_model_format(&jar), None);
        // Plain starts that only a model's name makes a model.
        assert_eq!(sniff_unnamed_model_format(b"\x08\x07\x12\x04"), None);
        assert_eq!(sniff_unnamed_model_format(b"\x80\x02}q\x00"), None);
        assert_eq!(sniff_unnamed_model_format(b"\x7fELF\x02\x01\x01"), None);
        assert_eq!(sniff_unnamed_model_format(b"SQLite format 3\0"), None);
    }

    #[test]
    fn onnx_and_torch_pickles_are_known_by_content_only_from_telling_headers() {
        // torch.onnx.export: ir_version 7, producer "pytorch" 2.1.0, graph.
        let onnx = b"\x08\x07\x12\x07pytorch\x1a\x052.1.0:\x90\x01\n\x05";
        assert_eq!(sniff_unnamed_model_format(onnx), Some(ModelFormat::Onnx));
        // onnx.helper: ir_version 9, opset first.
        assert_eq!(
            sniff_unnamed_model_format(b"\x08\x09B\x04\n\x00\x10\x11"),
            Some(ModelFormat::Onnx)
        );
        // A producer name running past the head.
        assert_eq!(
            sniff_unnamed_model_format(b"\x08\x08\x12\x40onnx-tensorflow conv"),
            Some(ModelFormat::Onnx)
        );
        // A field that ends with the head says nothing more; binary in a
        // "text" field, an unknown field, a version ONNX never had: no.
        assert_eq!(sniff_unnamed_model_format(b"\x08\x07\x12\x04abcd"), None);
        assert_eq!(
            sniff_unnamed_model_format(b"\x08\x07\x12\x40ab\x00\xff"),
            None
        );
        assert_eq!(sniff_unnamed_model_format(b"\x08\x07\x50\x01"), None);
        assert_eq!(sniff_unnamed_model_format(b"\x08\x1f:\x01\x00"), None);
        assert_eq!(
            sniff_model_format(b"\x08\x07\x12\x04abcd"),
            Some(ModelFormat::Onnx)
        );

        // Legacy torch.save, protocol 2, and protocol 4 with a FRAME.
        let magic = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";
        let mut legacy = b"\x80\x02".to_vec();
        legacy.extend_from_slice(magic);
        assert_eq!(
            sniff_unnamed_model_format(&legacy),
            Some(ModelFormat::Pickle)
        );
        let mut framed = b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00".to_vec();
        framed.extend_from_slice(magic);
        assert_eq!(
            sniff_unnamed_model_format(&framed),
            Some(ModelFormat::Pickle)
        );
        // Any other pickle (a cache, a dict) is not a model by content.
        assert_eq!(
            sniff_unnamed_model_format(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94."),
            None
        );
        assert_eq!(sniff_unnamed_model_format(b"\x80\x02"), None);
        // safetensors' JSON may open with whitespace.
        let mut spaced = 20u64.to_le_bytes().to_vec();
        spaced.extend_from_slice(b"{ \n \"w\": {}}");
        assert_eq!(
            sniff_unnamed_model_format(&spaced),
            Some(ModelFormat::Safetensors)
        );
        let mut object = 20u64.to_le_bytes().to_vec();
        object.extend_from_slice(b"{ 1: 2}");
        assert_eq!(sniff_unnamed_model_format(&object), None);
    }
}
