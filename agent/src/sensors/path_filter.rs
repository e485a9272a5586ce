//! The kernel's path filter table: patterns encoded as masked 16-byte windows
//! (see `struct vigil_path_filter`), filled into the BPF program's read-only
//! data before load.

use super::event_layout::{
    RawPathFilter, FILTER_PREFIX, FILTER_SLOTS, FILTER_SUFFIX, MATCH_MODEL_FILE,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    Suffix,
    Prefix,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("path pattern {0:?} must be 1 to 16 bytes")]
    BadLength(String),
    #[error("{0} path patterns given, the kernel table holds {FILTER_SLOTS}")]
    TooMany(usize),
}

/// Encodes one pattern. `matched` is the `VIGIL_MATCH_*` class reported on a hit.
pub fn encode(
    kind: PatternKind,
    pattern: &str,
    matched: u32,
) -> Result<RawPathFilter, FilterError> {
    let bytes = pattern.as_bytes();
    let n = bytes.len();
    if n == 0 || n > 16 {
        return Err(FilterError::BadLength(pattern.to_string()));
    }
    let mut value = [0u8; 16];
    let mut mask = [0u8; 16];
    let start = match kind {
        PatternKind::Suffix => 16 - n,
        PatternKind::Prefix => 0,
    };
    value[start..start + n].copy_from_slice(bytes);
    mask[start..start + n].fill(0xff);
    let word = |b: &[u8; 16], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
    Ok(RawPathFilter {
        kind: match kind {
            PatternKind::Suffix => FILTER_SUFFIX,
            PatternKind::Prefix => FILTER_PREFIX,
        },
        len: n as u32,
        matched,
        pad: 0,
        value: [word(&value, 0), word(&value, 1)],
        mask: [word(&mask, 0), word(&mask, 1)],
    })
}

/// The filters this agent loads: every model-weight extension of the domain.
pub fn default_filters() -> Result<Vec<RawPathFilter>, FilterError> {
    vigil_domain::MODEL_FILE_EXTENSIONS
        .iter()
        .map(|ext| encode(PatternKind::Suffix, ext, MATCH_MODEL_FILE))
        .collect()
}

/// The fixed-size table the BPF program holds, and how many entries are used.
pub fn table(
    filters: &[RawPathFilter],
) -> Result<([RawPathFilter; FILTER_SLOTS], u32), FilterError> {
    if filters.len() > FILTER_SLOTS {
        return Err(FilterError::TooMany(filters.len()));
    }
    let mut t = [RawPathFilter::default(); FILTER_SLOTS];
    t[..filters.len()].copy_from_slice(filters);
    Ok((t, filters.len() as u32))
}

/// The kernel's matching, in Rust: the same windows, masks and order. Used by
/// tests to pin down what the kernel keeps.
pub fn kernel_match(filters: &[RawPathFilter], path: &str) -> Option<u32> {
    let p = path.as_bytes();
    let len = p.len();
    let mut tail = [0u8; 16];
    let take = len.min(16);
    tail[16 - take..].copy_from_slice(&p[len - take..]);
    let mut head = [0u8; 16];
    head[..take].copy_from_slice(&p[..take]);
    let words = |b: &[u8; 16]| {
        [
            u64::from_le_bytes(b[..8].try_into().unwrap()),
            u64::from_le_bytes(b[8..].try_into().unwrap()),
        ]
    };
    let (tail, head) = (words(&tail), words(&head));
    filters.iter().find_map(|f| {
        if f.len as usize > len {
            return None;
        }
        let w = if f.kind == FILTER_SUFFIX { tail } else { head };
        ((w[0] & f.mask[0]) == f.value[0] && (w[1] & f.mask[1]) == f.value[1]).then_some(f.matched)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::event_layout::MATCH_GPU_DEVICE;

    #[test]
    fn model_suffixes_keep_model_files_and_nothing_else() {
        let f = default_filters().unwrap();
        for p in [
            "/tmp/model.onnx",
            "a.gguf",
            "/x/w.safetensors",
            "/c.pt",
            "/c.pth",
            "x/.pt",
        ] {
            assert_eq!(kernel_match(&f, p), Some(MATCH_MODEL_FILE), "{p}");
        }
        for p in [
            "/tmp/model.onnx.txt",
            "/etc/passwd",
            "/x/safetensors",
            "pt",
            "/a.PT",
            "",
        ] {
            assert_eq!(kernel_match(&f, p), None, "{p}");
        }
    }

    #[test]
    fn prefixes_match_from_the_start() {
        let f = vec![encode(PatternKind::Prefix, "/dev/nvidia", MATCH_GPU_DEVICE).unwrap()];
        assert_eq!(kernel_match(&f, "/dev/nvidia0"), Some(MATCH_GPU_DEVICE));
        assert_eq!(kernel_match(&f, "/dev/nvidia"), Some(MATCH_GPU_DEVICE));
        assert_eq!(kernel_match(&f, "/dev/nvidi"), None);
        assert_eq!(kernel_match(&f, "/tmp/dev/nvidia0"), None);
    }

    #[test]
    fn kernel_filter_is_a_superset_of_the_domain_rule() {
        let f = default_filters().unwrap();
        for p in ["/a/b.onnx", "/tmp/model.gguf", "x.pth", "/m.safetensors"] {
            assert!(vigil_domain::is_model_file_path(p));
            assert!(kernel_match(&f, p).is_some(), "{p}");
        }
    }

    #[test]
    fn bad_patterns_and_full_tables_are_errors() {
        assert!(encode(PatternKind::Suffix, "", 1).is_err());
        assert!(encode(PatternKind::Suffix, "0123456789abcdefX", 1).is_err());
        let many = vec![RawPathFilter::default(); FILTER_SLOTS + 1];
        assert_eq!(
            table(&many).unwrap_err(),
            FilterError::TooMany(FILTER_SLOTS + 1)
        );
        let (t, n) = table(&default_filters().unwrap()).unwrap();
        assert_eq!(n as usize, vigil_domain::MODEL_FILE_EXTENSIONS.len());
        assert_eq!(t[n as usize], RawPathFilter::default());
    }
}
