//! The structure fingerprint: what stays the same when a model is renamed,
//! re-saved or re-quantized, and changes when its tensors do.

use sha2::{Digest, Sha256};

use crate::report::Tensor;

/// sha256 (hex) over the architecture and the tensors' names and shapes,
/// sorted by name. Element types are left out, so a Q4 and an F16 copy of
/// one model match; a tensor added, removed, renamed or reshaped changes
/// the fingerprint. (A tensor's values are in the file's sha256 instead.)
pub fn structure_fingerprint(architecture: &str, tensors: &[Tensor]) -> String {
    let mut rows: Vec<(&str, &[u64])> = tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice()))
        .collect();
    rows.sort_unstable();
    // Laid out in one buffer and hashed once: thousands of small updates
    // cost more than the hashing.
    let size: usize = rows.iter().map(|(n, s)| 16 + n.len() + 8 * s.len()).sum();
    let mut bytes = Vec::with_capacity(20 + architecture.len() + size);
    bytes.extend_from_slice(b"vigil-structure-v1\n");
    bytes.extend_from_slice(architecture.as_bytes());
    bytes.push(b'\n');
    for (name, shape) in rows {
        bytes.extend_from_slice(&(name.len() as u64).to_le_bytes());
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(&(shape.len() as u64).to_le_bytes());
        for d in shape {
            bytes.extend_from_slice(&d.to_le_bytes());
        }
    }
    hex::encode(Sha256::digest(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, shape: &[u64], dtype: &str) -> Tensor {
        Tensor {
            name: name.into(),
            shape: shape.to_vec(),
            dtype: dtype.into(),
        }
    }

    #[test]
    fn order_and_dtype_do_not_matter_names_and_shapes_do() {
        let a = structure_fingerprint("llama", &[t("a", &[2, 3], "F16"), t("b", &[4], "F16")]);
        let requant =
            structure_fingerprint("llama", &[t("b", &[4], "Q4_K"), t("a", &[2, 3], "Q4_K")]);
        assert_eq!(a, requant);
        let reshaped =
            structure_fingerprint("llama", &[t("a", &[3, 2], "F16"), t("b", &[4], "F16")]);
        assert_ne!(a, reshaped);
        let renamed =
            structure_fingerprint("llama", &[t("a", &[2, 3], "F16"), t("c", &[4], "F16")]);
        assert_ne!(a, renamed);
        assert_ne!(
            a,
            structure_fingerprint("qwen2", &[t("a", &[2, 3], "F16"), t("b", &[4], "F16")])
        );
        // Boundaries are length-prefixed: "ab"+[] is not "a"+"b".
        assert_ne!(
            structure_fingerprint("", &[t("ab", &[], "")]),
            structure_fingerprint("", &[t("a", &[], ""), t("b", &[], "")])
        );
    }
}
