use std::io::Cursor;

use crate::{inspect, Budget, Format, InspectError, Risk};

/// Writes GGUF files by hand, as llama.cpp's `gguf` writer lays them out.
pub(crate) struct GgufWriter {
    version: u32,
    kv: Vec<u8>,
    keys: u64,
    tensors: Vec<(String, Vec<u64>, u32)>,
}

impl GgufWriter {
    pub(crate) fn new(version: u32) -> Self {
        Self {
            version,
            kv: Vec::new(),
            keys: 0,
            tensors: Vec::new(),
        }
    }

    fn count(&self, out: &mut Vec<u8>, n: u64) {
        if self.version == 1 {
            out.extend_from_slice(&(n as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&n.to_le_bytes());
        }
    }

    fn string(&self, out: &mut Vec<u8>, s: &str) {
        self.count(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }

    fn key(&mut self, k: &str, ty: u32) -> &mut Vec<u8> {
        let mut kv = std::mem::take(&mut self.kv);
        self.string(&mut kv, k);
        kv.extend_from_slice(&ty.to_le_bytes());
        self.kv = kv;
        self.keys += 1;
        &mut self.kv
    }

    pub(crate) fn str(mut self, k: &str, v: &str) -> Self {
        self.key(k, 8);
        let mut kv = std::mem::take(&mut self.kv);
        self.string(&mut kv, v);
        self.kv = kv;
        self
    }

    pub(crate) fn u32(mut self, k: &str, v: u32) -> Self {
        self.key(k, 4).extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn f32(mut self, k: &str, v: f32) -> Self {
        self.key(k, 6).extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn strings(mut self, k: &str, v: &[&str]) -> Self {
        self.key(k, 9).extend_from_slice(&8u32.to_le_bytes());
        let mut kv = std::mem::take(&mut self.kv);
        self.count(&mut kv, v.len() as u64);
        for s in v {
            self.string(&mut kv, s);
        }
        self.kv = kv;
        self
    }

    pub(crate) fn i32s(mut self, k: &str, v: &[i32]) -> Self {
        self.key(k, 9).extend_from_slice(&5u32.to_le_bytes());
        let mut kv = std::mem::take(&mut self.kv);
        self.count(&mut kv, v.len() as u64);
        for x in v {
            kv.extend_from_slice(&x.to_le_bytes());
        }
        self.kv = kv;
        self
    }

    /// A raw key: type and value bytes as given.
    pub(crate) fn raw(mut self, k: &str, ty: u32, value: &[u8]) -> Self {
        self.key(k, ty).extend_from_slice(value);
        self
    }

    /// `shape` as PyTorch writes it (slowest first); ggml type `ty`.
    pub(crate) fn tensor(mut self, name: &str, shape: &[u64], ty: u32) -> Self {
        self.tensors.push((name.into(), shape.to_vec(), ty));
        self
    }

    pub(crate) fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        self.count(&mut out, self.tensors.len() as u64);
        self.count(&mut out, self.keys);
        out.extend_from_slice(&self.kv);
        let mut offset = 0u64;
        for (name, shape, ty) in &self.tensors {
            self.string(&mut out, name);
            out.extend_from_slice(&(shape.len() as u32).to_le_bytes());
            for d in shape.iter().rev() {
                self.count(&mut out, *d);
            }
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset += shape.iter().product::<u64>() * 2;
        }
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        out.resize(out.len() + offset as usize, 0x5a);
        out
    }
}

fn llama(file_type: u32, tensor_type: u32) -> GgufWriter {
    GgufWriter::new(3)
        .str("general.architecture", "llama")
        .str("general.name", "TinyLlama 1.1B Chat")
        .str("general.size_label", "1.1B")
        .u32("general.file_type", file_type)
        .u32("llama.context_length", 2048)
        .f32("llama.rope.freq_base", 10000.0)
        .strings("tokenizer.ggml.tokens", &["<unk>", "<s>", "</s>", "hello"])
        .i32s("tokenizer.ggml.token_type", &[2, 3, 3, 1])
        .str("tokenizer.chat_template", &"{% x %}".repeat(200))
        .tensor("token_embd.weight", &[4, 16], tensor_type)
        .tensor("blk.0.attn_q.weight", &[16, 16], tensor_type)
        .tensor("output_norm.weight", &[16], 0)
}

/// A small LLaMA-shaped GGUF file, for other tests.
pub(crate) fn llama_file(file_type: u32, tensor_type: u32) -> Vec<u8> {
    llama(file_type, tensor_type).build()
}

fn run(bytes: Vec<u8>) -> Result<crate::ModelReport, crate::Failed> {
    inspect(Cursor::new(bytes), Budget::default(), Some("m.gguf"))
}

#[test]
fn every_header_field_is_read_and_no_weight_is() {
    let file = llama(15, 12).build();
    let r = run(file.clone()).expect("inspects");
    assert_eq!(r.format, Format::Gguf);
    assert_eq!(r.format_version, "3");
    assert_eq!(r.architecture, "llama");
    assert_eq!(r.name, "TinyLlama 1.1B Chat");
    assert_eq!(r.size_label, "1.1B");
    assert_eq!(r.quantization, "Q4_K_M");
    assert_eq!(r.context_length, Some(2048));
    assert_eq!(r.tensor_count, 3);
    assert_eq!(r.parameters, 4 * 16 + 16 * 16 + 16);
    assert_eq!(
        r.dtypes.iter().map(String::as_str).collect::<Vec<_>>(),
        ["F32", "Q4_K"]
    );
    assert_eq!(r.tensors[0].shape, [4, 16], "shapes as PyTorch lists them");
    assert_eq!(r.metadata["tokenizer.ggml.tokens"], "[4 × string]");
    assert_eq!(r.metadata["tokenizer.ggml.token_type"], "[4 × int32]");
    assert_eq!(r.metadata["llama.rope.freq_base"], "10000");
    assert!(r.metadata["tokenizer.chat_template"].ends_with('…'));
    assert_eq!(r.metadata.len(), 9);
    assert_eq!(r.risk, Risk::Safe);
    assert_eq!(r.structure_fingerprint.len(), 64);
    let weights = (4 * 16 + 16 * 16 + 16) * 2;
    assert!(
        r.bytes_read <= (file.len() - weights + crate::SNIFF_BYTES) as u64,
        "read {} of {} bytes",
        r.bytes_read,
        file.len()
    );
}

#[test]
fn a_requantized_copy_keeps_the_structure_fingerprint_a_changed_tensor_does_not() {
    let f16 = run(llama(1, 1).build()).unwrap();
    let q4 = run(llama(15, 12)
        .str("general.name", "renamed by someone")
        .build())
    .unwrap();
    assert_eq!(f16.quantization, "F16");
    assert_eq!(q4.quantization, "Q4_K_M");
    assert_eq!(f16.structure_fingerprint, q4.structure_fingerprint);
    let grown = run(llama(1, 1)
        .tensor("blk.1.attn_q.weight", &[16, 16], 1)
        .build())
    .unwrap();
    assert_ne!(f16.structure_fingerprint, grown.structure_fingerprint);
}

#[test]
fn version_1_files_with_32_bit_counts_are_read() {
    let r = run(GgufWriter::new(1)
        .str("general.architecture", "gpt2")
        .u32("gpt2.context_length", 1024)
        .tensor("wte", &[50, 8], 0)
        .build())
    .unwrap();
    assert_eq!(r.format_version, "1");
    assert_eq!(r.architecture, "gpt2");
    assert_eq!(r.context_length, Some(1024));
    assert_eq!(r.parameters, 400);
    assert_eq!(r.size_label, "400");
}

fn error_of(bytes: Vec<u8>, budget: Budget) -> InspectError {
    inspect(Cursor::new(bytes), budget, None).unwrap_err().error
}

#[test]
fn a_file_claiming_2_pow_60_tensors_is_refused_without_allocating() {
    let mut file = GgufWriter::new(3).str("general.architecture", "x").build();
    file[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let e = error_of(file.clone(), Budget::default());
    assert!(
        matches!(e, InspectError::TooMany { count, .. } if count == 1 << 60),
        "{e}"
    );
    let e = error_of(
        file,
        Budget {
            max_items: u64::MAX,
            ..Budget::default()
        },
    );
    assert!(matches!(e, InspectError::Truncated { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("1152921504606846976 tensors claimed"),
        "{e}"
    );
}

#[test]
fn lengths_past_the_end_are_truncation_errors_naming_the_field() {
    let mut file = GgufWriter::new(3).str("general.name", "abc").build();
    // The key's length, then the value string's length, claim 2^62 bytes.
    let at = 24 + 8 + "general.name".len() + 4;
    file[at..at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let e = error_of(file, Budget::default());
    assert!(e.to_string().contains("general.name"), "{e}");

    let array = GgufWriter::new(3)
        .raw(
            "tokenizer.ggml.tokens",
            9,
            &[&8u32.to_le_bytes()[..], &(1u64 << 59).to_le_bytes()].concat(),
        )
        .build();
    let e = error_of(array, Budget::default());
    assert!(e.to_string().contains("elements claimed"), "{e}");
}

#[test]
fn nested_arrays_past_the_depth_budget_are_refused() {
    let mut value = Vec::new();
    for _ in 0..300 {
        value.extend_from_slice(&9u32.to_le_bytes());
        value.extend_from_slice(&1u64.to_le_bytes());
    }
    value.extend_from_slice(&4u32.to_le_bytes());
    value.extend_from_slice(&0u64.to_le_bytes());
    let file = GgufWriter::new(3).raw("deep", 9, &value).build();
    let e = error_of(file, Budget::default());
    assert!(matches!(e, InspectError::TooDeep { .. }), "{e}");
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error_not_a_panic() {
    let file = llama(15, 12).build();
    let header_end = file.len() - (4 * 16 + 16 * 16 + 16) * 2;
    for n in 0..header_end {
        let e = inspect(
            Cursor::new(file[..n].to_vec()),
            Budget::default(),
            Some("x.gguf"),
        );
        assert!(e.is_err(), "a file cut at {n} bytes was accepted");
    }
}

#[test]
fn the_byte_budget_stops_a_huge_vocabulary() {
    let words: Vec<String> = (0..50_000).map(|i| format!("token{i:06}")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let file = GgufWriter::new(3)
        .strings("tokenizer.ggml.tokens", &refs)
        .build();
    let e = error_of(
        file.clone(),
        Budget {
            max_bytes: 64 << 10,
            ..Budget::default()
        },
    );
    assert!(matches!(e, InspectError::OverBytes { .. }), "{e}");
    let r = run(file).expect("within the default budget");
    assert_eq!(r.metadata["tokenizer.ggml.tokens"], "[50000 × string]");
}
