//! What an inspection finds: the model's identity, its structure, and for
//! pickles, every import it makes and how dangerous they are.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Gguf,
    Safetensors,
    Onnx,
    PytorchZip,
    Pickle,
    Tflite,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Gguf => "gguf",
            Format::Safetensors => "safetensors",
            Format::Onnx => "onnx",
            Format::PytorchZip => "pytorch-zip",
            Format::Pickle => "pickle",
            Format::Tflite => "tflite",
        }
    }
}

/// How dangerous loading the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// No code runs on load: a weights-only format, or a pickle whose every
    /// import is a known PyTorch or NumPy reconstruction function.
    Safe,
    /// A pickle importing something this inspector does not know as safe
    /// (not known to be harmful either).
    Suspicious,
    /// A pickle importing something that runs commands, code, or reaches
    /// the network or file system on load.
    Dangerous,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Safe => "safe",
            Risk::Suspicious => "suspicious",
            Risk::Dangerous => "dangerous",
        }
    }
}

/// One tensor's name, shape and element type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: String,
}

impl Tensor {
    /// Elements in all (saturating: a hostile shape cannot overflow).
    pub fn elements(&self) -> u64 {
        self.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }
}

/// ONNX specifics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OnnxDetails {
    pub ir_version: i64,
    /// Operator-set domain ("" is the default, ai.onnx) → version.
    pub opsets: BTreeMap<String, i64>,
    pub producer_name: String,
    pub producer_version: String,
    pub domain: String,
    pub model_version: i64,
    pub graph_name: String,
    /// Graph inputs and outputs: name and type, as "float32[1,3,224,224]"
    /// (a symbolic dimension by its name).
    pub inputs: Vec<(String, String)>,
    pub outputs: Vec<(String, String)>,
    pub node_count: u64,
    /// Initializers whose data lives in another file.
    pub external_data: bool,
}

/// TFLite specifics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TfliteDetails {
    pub schema_version: u32,
    pub subgraphs: u64,
    pub tensors: u64,
    pub operator_codes: u64,
    pub buffers: u64,
    pub description: String,
}

/// One import a pickle makes (`GLOBAL`, `STACK_GLOBAL`, `INST`), and what
/// it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PickleImport {
    pub module: String,
    pub name: String,
    pub class: ImportClass,
    /// Where in the file (the pickle inside a zip: its entry name).
    pub at: String,
    /// Called by `REDUCE`, `OBJ`, `INST` or `NEWOBJ` (not merely named).
    pub called: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportClass {
    /// A known PyTorch, NumPy or collections reconstruction function.
    Safe,
    /// Not known either way.
    Unknown,
    /// Known to run commands or code, or to reach the network or disk.
    Dangerous,
}

/// What the opcode walker saw in every pickle of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PickleScan {
    /// The pickles scanned: the entry name ("archive/data.pkl") in a torch zip, "pickle" for a
    /// bare one (a legacy torch.save file holds several in a row).
    pub pickles: Vec<String>,
    pub protocol: u8,
    /// Every import, in file order, each once per place.
    pub imports: Vec<PickleImport>,
    /// Opcodes walked in all.
    pub opcodes: u64,
    /// Why a pickle the loader would run could not be walked to its end
    /// (a budget ran out, entries under duplicate names): what it imports
    /// past that point is unknown, and the file counts as dangerous.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unscanned: Option<String>,
}

impl PickleScan {
    pub fn dangerous(&self) -> impl Iterator<Item = &PickleImport> {
        self.imports
            .iter()
            .filter(|i| i.class == ImportClass::Dangerous)
    }

    pub fn unknown(&self) -> impl Iterator<Item = &PickleImport> {
        self.imports
            .iter()
            .filter(|i| i.class == ImportClass::Unknown)
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelReport {
    pub format: Format,
    /// The container's own version (GGUF 3, ONNX IR 8, pickle protocol 2...).
    pub format_version: String,
    /// `general.architecture` (GGUF), the model type a header names, or
    /// the ONNX producer's graph name; empty where the file does not say.
    pub architecture: String,
    pub name: String,
    /// "7B", "8x7B": as the file labels itself, else from the parameter
    /// count.
    pub size_label: String,
    /// GGUF file type, the dominant tensor dtype elsewhere ("Q4_K_M", "F16").
    pub quantization: String,
    pub context_length: Option<u64>,
    pub parameters: u64,
    pub tensor_count: u64,
    pub dtypes: BTreeSet<String>,
    /// Metadata as the file gives it: GGUF key/values (arrays summarised),
    /// safetensors `__metadata__`, ONNX `metadata_props`.
    pub metadata: BTreeMap<String, String>,
    /// Hash of the architecture and the sorted tensor names and shapes
    /// (`fingerprint.rs`): the same for a renamed, re-saved or
    /// re-quantized copy. Empty where no tensor list could be read.
    pub structure_fingerprint: String,
    pub risk: Risk,
    /// Why the risk is what it is, one line each.
    pub risk_reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onnx: Option<OnnxDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tflite: Option<TfliteDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pickle: Option<PickleScan>,
    /// Bytes the inspection read (skipped weights not counted).
    pub bytes_read: u64,
    /// Tensors, for the fingerprint; not in the JSON report (thousands).
    #[serde(skip)]
    pub tensors: Vec<Tensor>,
}

impl ModelReport {
    pub fn new(format: Format) -> Self {
        Self {
            format,
            format_version: String::new(),
            architecture: String::new(),
            name: String::new(),
            size_label: String::new(),
            quantization: String::new(),
            context_length: None,
            parameters: 0,
            tensor_count: 0,
            dtypes: BTreeSet::new(),
            metadata: BTreeMap::new(),
            structure_fingerprint: String::new(),
            risk: Risk::Safe,
            risk_reasons: Vec::new(),
            onnx: None,
            tflite: None,
            pickle: None,
            bytes_read: 0,
            tensors: Vec::new(),
        }
    }
}
