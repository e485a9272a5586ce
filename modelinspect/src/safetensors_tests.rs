use std::io::Cursor;

use crate::{inspect, Budget, Format, Risk};

/// A safetensors file as the `safetensors` library writes one: tensors
/// laid out in the order given, a header padded with spaces to 8 bytes.
pub(crate) fn safetensors(tensors: &[(&str, &str, &[u64])], metadata: &[(&str, &str)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let m: serde_json::Map<_, _> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        header.insert("__metadata__".into(), m.into());
    }
    let mut offset = 0u64;
    for (name, dtype, shape) in tensors {
        let bytes = shape.iter().product::<u64>()
            * match *dtype {
                "F32" | "I32" => 4,
                "F16" | "BF16" => 2,
                _ => 1,
            };
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.resize(out.len() + offset as usize, 7);
    out
}

fn bert(dtype: &str) -> Vec<u8> {
    safetensors(
        &[
            ("embeddings.word_embeddings.weight", dtype, &[100, 8]),
            (
                "encoder.layer.0.attention.self.query.weight",
                dtype,
                &[8, 8],
            ),
            ("encoder.layer.0.attention.self.query.bias", "F32", &[8]),
        ],
        &[
            ("format", "pt"),
            ("model_type", "bert"),
            ("name", "tiny-bert"),
        ],
    )
}

fn run(bytes: Vec<u8>) -> Result<crate::ModelReport, crate::Failed> {
    inspect(
        Cursor::new(bytes),
        Budget::default(),
        Some("model.safetensors"),
    )
}

#[test]
fn header_metadata_tensors_dtypes_and_parameters_are_read() {
    let r = run(bert("F16")).unwrap();
    assert_eq!(r.format, Format::Safetensors);
    assert_eq!(r.format_version, "pt");
    assert_eq!(r.architecture, "bert");
    assert_eq!(r.name, "tiny-bert");
    assert_eq!(r.tensor_count, 3);
    assert_eq!(r.parameters, 800 + 64 + 8);
    assert_eq!(r.size_label, "872");
    assert_eq!(r.quantization, "F16");
    assert_eq!(
        r.dtypes.iter().map(String::as_str).collect::<Vec<_>>(),
        ["F16", "F32"]
    );
    assert_eq!(r.metadata["model_type"], "bert");
    assert_eq!(r.risk, Risk::Safe);
    assert!(
        r.bytes_read < 1024,
        "the weights were read: {}",
        r.bytes_read
    );
}

#[test]
fn a_resaved_copy_in_another_dtype_keeps_the_fingerprint_a_reshaped_one_does_not() {
    let a = run(bert("F16")).unwrap();
    let b = run(bert("BF16")).unwrap();
    assert_eq!(a.structure_fingerprint, b.structure_fingerprint);
    let c = run(safetensors(
        &[
            ("embeddings.word_embeddings.weight", "F16", &[101, 8]),
            (
                "encoder.layer.0.attention.self.query.weight",
                "F16",
                &[8, 8],
            ),
            ("encoder.layer.0.attention.self.query.bias", "F32", &[8]),
        ],
        &[("model_type", "bert")],
    ))
    .unwrap();
    assert_ne!(a.structure_fingerprint, c.structure_fingerprint);
}

fn error_of(bytes: Vec<u8>) -> String {
    inspect(Cursor::new(bytes), Budget::default(), None)
        .unwrap_err()
        .to_string()
}

#[test]
fn a_header_longer_than_the_file_is_refused_before_allocating() {
    let mut file = bert("F16");
    let len = file.len() as u64;
    file[..8].copy_from_slice(&(len * 4).to_le_bytes());
    let e = error_of(file.clone());
    assert!(
        e.starts_with("safetensors: truncated at byte 8: header ("),
        "{e}"
    );
    file[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = error_of(file);
    assert!(e.contains("over the format's limit"), "{e}");
}

#[test]
fn tensor_ranges_outside_the_data_or_unlike_their_shape_are_refused() {
    let mut file = safetensors(&[("w", "F32", &[2, 2])], &[]);
    let text = String::from_utf8_lossy(&file).replace("[0,16]", "[0,99]");
    file = text.into_bytes();
    assert!(error_of(file).contains("not within"));
    let mut file = safetensors(&[("w", "F32", &[2, 2]), ("v", "F32", &[4])], &[]);
    let text = String::from_utf8_lossy(&file).replace("[4]", "[5]");
    file = text.into_bytes();
    let e = error_of(file);
    assert!(
        e.contains("tensor v: 16 bytes for shape [5] of F32 (20 expected)"),
        "{e}"
    );
}

#[test]
fn bad_json_says_where() {
    let mut file = safetensors(&[("w", "F32", &[1])], &[]);
    let close = file.iter().position(|&b| b == b'}').unwrap();
    file[close] = b',';
    let e = error_of(file);
    assert!(e.starts_with("safetensors: malformed at byte"), "{e}");
    assert!(e.contains("header JSON"), "{e}");
}

#[test]
fn every_truncation_of_the_header_is_an_error() {
    let file = bert("F16");
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize + 8;
    for cut in 0..n {
        assert!(
            inspect(Cursor::new(file[..cut].to_vec()), Budget::default(), None).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn shape_overflow_does_not_panic() {
    let json = format!(
        r#"{{"w":{{"dtype":"U8","shape":[{m},{m}],"data_offsets":[0,4]}}}}"#,
        m = u64::MAX
    );
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(json.as_bytes());
    file.extend_from_slice(&[0; 4]);
    // The data range cannot match the shape's size.
    assert!(error_of(file).contains("tensor w"));
}
