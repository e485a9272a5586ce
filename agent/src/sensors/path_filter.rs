//! The kernel's path filter table: patterns encoded as masked 16-byte windows
//! (see `struct vigil_path_filter`), filled into the BPF program's read-only
//! data before load.

use super::event_layout::{
    RawPathFilter, FILTER_BASENAME_PREFIX, FILTER_PREFIX, FILTER_SLOTS, FILTER_SUFFIX,
    MATCH_AI_RUNTIME, MATCH_GPU_DEVICE, MATCH_MODEL_FILE, PORT_SLOTS,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    /// The path ends with the pattern.
    Suffix,
    /// The path starts with the pattern.
    Prefix,
    /// The file name of an executable mapping starts with the pattern.
    BasenamePrefix,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("path pattern must not be empty")]
    Empty,
    #[error("{0} path patterns given, the kernel table holds {FILTER_SLOTS}")]
    TooMany(usize),
    #[error("{0} ports given, the kernel table holds {PORT_SLOTS}")]
    TooManyPorts(usize),
}

/// Encodes one pattern. `matched` is the `VIGIL_MATCH_*` class reported on a
/// hit. A pattern longer than the 16-byte window is cut to the 16 bytes at
/// its anchored end (the first 16 of a prefix, the last 16 of a suffix): the
/// kernel then keeps a superset, and user space checks the whole pattern.
pub fn encode(
    kind: PatternKind,
    pattern: &str,
    matched: u32,
) -> Result<RawPathFilter, FilterError> {
    let all = pattern.as_bytes();
    if all.is_empty() {
        return Err(FilterError::Empty);
    }
    let bytes = match kind {
        PatternKind::Suffix => &all[all.len().saturating_sub(16)..],
        PatternKind::Prefix | PatternKind::BasenamePrefix => &all[..all.len().min(16)],
    };
    let n = bytes.len();
    let mut value = [0u8; 16];
    let mut mask = [0u8; 16];
    let start = match kind {
        PatternKind::Suffix => 16 - n,
        PatternKind::Prefix | PatternKind::BasenamePrefix => 0,
    };
    value[start..start + n].copy_from_slice(bytes);
    mask[start..start + n].fill(0xff);
    // Suffixes (file extensions) match in any case: a letter's case bit is
    // masked out and its value upper-cased (`.GgUf` is `.gguf`).
    if kind == PatternKind::Suffix {
        for i in start..start + n {
            if value[i].is_ascii_alphabetic() {
                value[i] &= !0x20;
                mask[i] = !0x20;
            }
        }
    }
    let word = |b: &[u8; 16], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
    Ok(RawPathFilter {
        kind: match kind {
            PatternKind::Suffix => FILTER_SUFFIX,
            PatternKind::Prefix => FILTER_PREFIX,
            PatternKind::BasenamePrefix => FILTER_BASENAME_PREFIX,
        },
        len: n as u32,
        matched,
        pad: 0,
        value: [word(&value, 0), word(&value, 1)],
        mask: [word(&mask, 0), word(&mask, 1)],
    })
}

/// The filters this agent loads, from the domain's lists: model-weight
/// extensions, accelerator device nodes, AI runtime library names.
pub fn default_filters() -> Result<Vec<RawPathFilter>, FilterError> {
    let models = vigil_detection::MODEL_FILE_EXTENSIONS
        .iter()
        .map(|p| (PatternKind::Suffix, *p, MATCH_MODEL_FILE));
    let devices = vigil_detection::GPU_DEVICE_PREFIXES
        .iter()
        .map(|p| (PatternKind::Prefix, *p, MATCH_GPU_DEVICE));
    let libraries = vigil_detection::AI_RUNTIME_LIBRARY_PREFIXES
        .iter()
        .map(|p| (PatternKind::BasenamePrefix, *p, MATCH_AI_RUNTIME));
    models
        .chain(devices)
        .chain(libraries)
        .map(|(kind, pattern, matched)| encode(kind, pattern, matched))
        .collect()
}

/// The kernel's TCP port table: ports whose connects are reported (a
/// listen on any port is).
pub fn default_ports() -> Vec<u16> {
    vigil_detection::AI_SERVING_PORTS
        .iter()
        .map(|(p, _)| *p)
        .collect()
}

pub fn port_table(ports: &[u16]) -> Result<([u16; PORT_SLOTS], u32), FilterError> {
    if ports.len() > PORT_SLOTS {
        return Err(FilterError::TooManyPorts(ports.len()));
    }
    let mut t = [0u16; PORT_SLOTS];
    t[..ports.len()].copy_from_slice(ports);
    Ok((t, ports.len() as u32))
}

/// The filter table as the BPF program holds it: entries sorted by kind,
/// with the prefilters that let most opens skip the loops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelTable {
    pub filters: [RawPathFilter; FILTER_SLOTS],
    pub count: u32,
    /// Suffix entries are `[0, suffix_end)`.
    pub suffix_end: u32,
    /// Prefix entries are `[suffix_end, prefix_end)`, basename prefixes the rest.
    pub prefix_end: u32,
    /// Bit b is set when some suffix ends in byte b.
    pub suffix_last_bytes: [u64; 4],
    /// What every prefix entry has in common over the first 8 bytes.
    pub prefix_common_mask: u64,
    pub prefix_common_value: u64,
}

pub fn table(filters: &[RawPathFilter]) -> Result<KernelTable, FilterError> {
    if filters.len() > FILTER_SLOTS {
        return Err(FilterError::TooMany(filters.len()));
    }
    let rank = |f: &RawPathFilter| match f.kind {
        FILTER_SUFFIX => 0,
        FILTER_PREFIX => 1,
        _ => 2,
    };
    let mut sorted = filters.to_vec();
    sorted.sort_by_key(rank);
    let suffix_end = sorted.iter().filter(|f| rank(f) == 0).count();
    let prefix_end = suffix_end + sorted.iter().filter(|f| rank(f) == 1).count();
    let mut suffix_last_bytes = [0u64; 4];
    for f in &sorted[..suffix_end] {
        let last = (f.value[1] >> 56) as u8;
        // A case-folded letter ends words in either case.
        let cases = if (f.mask[1] >> 56) as u8 == !0x20 {
            [last, last | 0x20]
        } else {
            [last, last]
        };
        for b in cases {
            suffix_last_bytes[(b >> 6) as usize] |= 1 << (b & 63);
        }
    }
    let (mut mask, mut value) = (0u64, 0u64);
    let prefixes = &sorted[suffix_end..prefix_end];
    if let Some(first) = prefixes.first() {
        for byte in 0..8 {
            let m = 0xffu64 << (byte * 8);
            let v = first.value[0] & m;
            if !prefixes
                .iter()
                .all(|f| f.mask[0] & m == m && f.value[0] & m == v)
            {
                break;
            }
            mask |= m;
            value |= v;
        }
    }
    let mut t = [RawPathFilter::default(); FILTER_SLOTS];
    t[..sorted.len()].copy_from_slice(&sorted);
    Ok(KernelTable {
        filters: t,
        count: sorted.len() as u32,
        suffix_end: suffix_end as u32,
        prefix_end: prefix_end as u32,
        suffix_last_bytes,
        prefix_common_mask: mask,
        prefix_common_value: value,
    })
}

fn match_range(t: &KernelTable, from: u32, to: u32, w: [u64; 2], len: usize) -> Option<u32> {
    t.filters[from as usize..to as usize].iter().find_map(|f| {
        (f.len as usize <= len
            && (w[0] & f.mask[0]) == f.value[0]
            && (w[1] & f.mask[1]) == f.value[1])
            .then_some(f.matched)
    })
}

/// The kernel's matching, in Rust: the same windows, masks, prefilters and
/// order. Used by tests to pin down what the kernel keeps. `basename`
/// selects the entries for executable mappings, as the mmap program does.
pub fn kernel_match(t: &KernelTable, path: &str, basename: bool) -> Option<u32> {
    let p = path.as_bytes();
    let len = p.len();
    if len == 0 {
        return None;
    }
    let take = len.min(16);
    let mut tail = [0u8; 16];
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
    if basename {
        return match_range(t, t.prefix_end, t.count, head, len);
    }
    let last = p[len - 1];
    if (t.suffix_last_bytes[(last >> 6) as usize] >> (last & 63)) & 1 == 1 {
        if let Some(m) = match_range(t, 0, t.suffix_end, tail, len) {
            return Some(m);
        }
    }
    if head[0] & t.prefix_common_mask == t.prefix_common_value {
        return match_range(t, t.suffix_end, t.prefix_end, head, len);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_suffixes_keep_model_files_and_nothing_else() {
        let f = table(&default_filters().unwrap()).unwrap();
        for p in [
            "/tmp/model.onnx",
            "a.gguf",
            "/x/w.safetensors",
            "/c.pt",
            "/c.pth",
            "x/.pt",
            // Extensions in any case.
            "/a.PT",
            "/m/Model.GgUf",
            "/m/x.ONNX",
            "/w.SafeTensors",
        ] {
            assert_eq!(kernel_match(&f, p, false), Some(MATCH_MODEL_FILE), "{p}");
        }
        for p in [
            "/tmp/model.onnx.txt",
            "/etc/passwd",
            "/x/safetensors",
            "pt",
            // Case folding is for letters only: '.' is not '\x0e'.
            "/a\x0ePT",
            "/model.gguF.txt",
            "",
        ] {
            assert_eq!(kernel_match(&f, p, false), None, "{p}");
        }
    }

    #[test]
    fn prefixes_match_from_the_start() {
        let f = table(&default_filters().unwrap()).unwrap();
        assert_eq!(
            kernel_match(&f, "/dev/nvidia0", false),
            Some(MATCH_GPU_DEVICE)
        );
        assert_eq!(
            kernel_match(&f, "/dev/nvidia", false),
            Some(MATCH_GPU_DEVICE)
        );
        assert_eq!(
            kernel_match(&f, "/dev/dri/renderD128", false),
            Some(MATCH_GPU_DEVICE)
        );
        assert_eq!(kernel_match(&f, "/dev/nvidi", false), None);
        assert_eq!(kernel_match(&f, "/tmp/dev/nvidia0", false), None);
    }

    #[test]
    fn library_names_match_only_executable_mappings() {
        let f = table(&default_filters().unwrap()).unwrap();
        for name in [
            "libonnxruntime.so.1.17.1",
            "libtorch_cpu.so",
            "libcudart.so.12",
            "onnxruntime_pybind11_state.so",
        ] {
            assert_eq!(
                kernel_match(&f, name, true),
                Some(MATCH_AI_RUNTIME),
                "{name}"
            );
            assert!(vigil_detection::is_ai_runtime_library(name), "{name}");
        }
        assert_eq!(kernel_match(&f, "libc.so.6", true), None);
        // Path entries never apply to mappings, nor names to paths.
        assert_eq!(kernel_match(&f, "model.onnx", true), None);
        assert_eq!(kernel_match(&f, "libtorch_cpu.so", false), None);
    }

    #[test]
    fn long_patterns_are_cut_to_a_superset() {
        let long = "onnxruntime_pybind11_state";
        let e = encode(PatternKind::BasenamePrefix, long, MATCH_AI_RUNTIME).unwrap();
        assert_eq!(e.len, 16);
        let f = table(&[e]).unwrap();
        let name = "onnxruntime_pybind11_state.so";
        assert_eq!(kernel_match(&f, name, true), Some(MATCH_AI_RUNTIME));
        let long_suffix = encode(
            PatternKind::Suffix,
            "x.verylongsuffix.onnx",
            MATCH_MODEL_FILE,
        );
        let f = table(&[long_suffix.unwrap()]).unwrap();
        let path = "/a/x.verylongsuffix.onnx";
        assert_eq!(kernel_match(&f, path, false), Some(MATCH_MODEL_FILE));
    }

    #[test]
    fn the_prefilters_never_drop_a_match() {
        // Every path that matches some entry by brute force also passes the
        // prefilters: try each pattern embedded in assorted paths.
        let filters = default_filters().unwrap();
        let t = table(&filters).unwrap();
        let mut paths = Vec::new();
        for ext in vigil_detection::MODEL_FILE_EXTENSIONS {
            paths.push(format!("/a/b/c{ext}"));
            paths.push(format!("x{ext}"));
        }
        for p in vigil_detection::GPU_DEVICE_PREFIXES {
            paths.push(format!("{p}0"));
            paths.push(p.to_string());
        }
        paths.extend(
            [
                "/etc/hostname",
                "/usr/lib/libc.so.6",
                "/dev/null",
                "/dev/nvidia-uvm",
            ]
            .map(String::from),
        );
        for p in &paths {
            let brute = filters.iter().find_map(|f| {
                let one = table(std::slice::from_ref(f)).unwrap();
                kernel_match(&one, p, false)
            });
            assert_eq!(kernel_match(&t, p, false).is_some(), brute.is_some(), "{p}");
        }
    }

    #[test]
    fn kernel_filter_is_a_superset_of_the_domain_rule() {
        let f = table(&default_filters().unwrap()).unwrap();
        for p in [
            "/a/b.onnx",
            "/tmp/model.gguf",
            "x.pth",
            "/m.safetensors",
            "/models/x/model.bin",
            "/a/b.ONNX",
            "/tmp/Model.GgUf",
            "/models/x/MODEL.BIN",
        ] {
            assert!(vigil_detection::is_model_file_path(p));
            assert!(kernel_match(&f, p, false).is_some(), "{p}");
        }
    }

    #[test]
    fn bad_patterns_and_full_tables_are_errors() {
        assert_eq!(
            encode(PatternKind::Suffix, "", 1).unwrap_err(),
            FilterError::Empty
        );
        assert!(port_table(&[1; PORT_SLOTS + 1]).is_err());
        let (ports, n) = port_table(&default_ports()).unwrap();
        assert!(ports[..n as usize].contains(&11434));
        let many = vec![RawPathFilter::default(); FILTER_SLOTS + 1];
        assert_eq!(
            table(&many).unwrap_err(),
            FilterError::TooMany(FILTER_SLOTS + 1)
        );
        let t = table(&default_filters().unwrap()).unwrap();
        let n = t.count;
        assert_eq!(
            n as usize,
            vigil_detection::MODEL_FILE_EXTENSIONS.len()
                + vigil_detection::GPU_DEVICE_PREFIXES.len()
                + vigil_detection::AI_RUNTIME_LIBRARY_PREFIXES.len()
        );
        assert_eq!(t.filters[n as usize], RawPathFilter::default());
        // Sorted by kind, with the prefilters derived from the entries.
        assert!(t.filters[..t.suffix_end as usize]
            .iter()
            .all(|f| f.kind == FILTER_SUFFIX));
        assert_eq!(t.prefix_common_value.to_le_bytes()[..5], *b"/dev/");
        assert_eq!(t.prefix_common_mask, 0xff_ffff_ffff);
        for ext in vigil_detection::MODEL_FILE_EXTENSIONS {
            let last = *ext.as_bytes().last().unwrap();
            assert_eq!(
                (t.suffix_last_bytes[(last >> 6) as usize] >> (last & 63)) & 1,
                1,
                "{ext}"
            );
        }
    }
}
