//! Real ELF files, compiled here with the system C compiler (`cc`), then
//! copied, renamed, stripped, byte-swapped and damaged.

use super::*;
use std::fmt::Write as _;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A directory to compile in, removed at the end of the test.
struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Self {
        Lab {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `cc -o NAME NAME.c ARGS...` in the lab (arguments after the source,
    /// so `-L. -lstub` links as written).
    fn cc(&self, name: &str, source: &str, args: &[&str]) -> PathBuf {
        let src = self.path(&format!("{name}.c"));
        fs::write(&src, source).unwrap();
        let out = self.path(name);
        let run = Command::new("cc")
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("the system C compiler, cc");
        assert!(
            run.status.success(),
            "cc {name} {args:?}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        out
    }

    /// A shared library of `source`, without the C library (no start files
    /// needed, so `-m32` works without 32-bit libraries installed).
    fn shared(&self, name: &str, source: &str, extra: &[&str]) -> PathBuf {
        let mut args = vec!["-shared", "-fPIC", "-nostdlib"];
        args.extend_from_slice(extra);
        self.cc(name, source, &args)
    }

    fn copy(&self, from: &Path, name: &str) -> PathBuf {
        let to = self.path(name);
        fs::copy(from, &to).unwrap();
        to
    }
}

/// C defining a function for each name, which may be any symbol name (an
/// assembler label), with no other exports.
fn defining(names: &[&str]) -> String {
    let mut src = String::new();
    for (i, name) in names.iter().enumerate() {
        writeln!(src, "int def{i}(void) __asm__(\"{name}\");").unwrap();
        writeln!(src, "int def{i}(void) {{ return {i}; }}").unwrap();
    }
    src
}

fn soname(name: &str) -> String {
    format!("-Wl,-soname,{name}")
}

fn identify_path(path: &Path) -> Result<Option<RuntimeLibraryIdentity>, RuntimeLibraryError> {
    identify_with(path, RuntimeLibraryBudget::default())
}

fn identify_with(
    path: &Path,
    budget: RuntimeLibraryBudget,
) -> Result<Option<RuntimeLibraryIdentity>, RuntimeLibraryError> {
    identify_runtime_library(fs::File::open(path).unwrap(), &budget)
}

fn identify_bytes(bytes: &[u8]) -> Result<Option<RuntimeLibraryIdentity>, RuntimeLibraryError> {
    identify_runtime_library(Cursor::new(bytes), &RuntimeLibraryBudget::default())
}

fn found(runtime: &'static str, evidence: &str) -> Option<RuntimeLibraryIdentity> {
    Some(RuntimeLibraryIdentity {
        runtime,
        evidence: evidence.to_string(),
    })
}

/// The tables `locate` finds in `bytes`.
fn tables_of(bytes: &[u8]) -> Tables {
    let meter = Meter {
        max_bytes: u64::MAX,
        used: Cell::new(0),
        exhausted: Cell::new(false),
        io_error: RefCell::new(None),
    };
    let cache = ReadCache::new(Trap {
        inner: Cursor::new(bytes),
        meter: &meter,
    });
    let data = Data {
        cache: &cache,
        meter: &meter,
        len: bytes.len() as u64,
    };
    let tables = if bytes[4] == elf::ELFCLASS64 {
        locate::<elf::FileHeader64<Endianness>, _>(data)
    } else {
        locate::<elf::FileHeader32<Endianness>, _>(data)
    };
    tables.unwrap().expect("dynamic tables")
}

/// An ELF file as bytes, with the few fields the tests change, read and
/// written in the file's own class and byte order.
struct Image {
    bytes: Vec<u8>,
}

/// One section header's fields.
#[derive(Debug, Clone, Copy)]
struct Section {
    header: usize,
    sh_type: u32,
    offset: usize,
    size: usize,
}

impl Image {
    fn read(path: &Path) -> Self {
        Image {
            bytes: fs::read(path).unwrap(),
        }
    }

    fn is64(&self) -> bool {
        self.bytes[4] == elf::ELFCLASS64
    }

    fn word(&self) -> usize {
        if self.is64() {
            8
        } else {
            4
        }
    }

    fn get(&self, at: usize, width: usize) -> u64 {
        let field = &self.bytes[at..at + width];
        let fold = |v: u64, b: &u8| v << 8 | u64::from(*b);
        if self.bytes[5] == elf::ELFDATA2MSB {
            field.iter().fold(0, fold)
        } else {
            field.iter().rev().fold(0, fold)
        }
    }

    fn set(&mut self, at: usize, width: usize, value: u64) {
        let big = self.bytes[5] == elf::ELFDATA2MSB;
        for i in 0..width {
            let byte = (value >> (8 * i)) as u8;
            let at = if big { at + width - 1 - i } else { at + i };
            self.bytes[at] = byte;
        }
    }

    /// (e_phoff, e_shoff, e_phnum, e_shnum, e_shstrndx) field offsets.
    fn header_fields(&self) -> (usize, usize, usize, usize, usize) {
        if self.is64() {
            (32, 40, 56, 60, 62)
        } else {
            (28, 32, 44, 48, 50)
        }
    }

    /// What `sstrip` does: no section headers (the loader never reads them).
    fn strip_section_headers(&mut self) {
        let (_, shoff, _, shnum, shstrndx) = self.header_fields();
        let word = self.word();
        self.set(shoff, word, 0);
        self.set(shnum, 2, 0);
        self.set(shstrndx, 2, 0);
    }

    fn strip_program_headers(&mut self) {
        let (phoff, _, phnum, _, _) = self.header_fields();
        let word = self.word();
        self.set(phoff, word, 0);
        self.set(phnum, 2, 0);
    }

    fn sections(&self) -> Vec<Section> {
        let (_, shoff, _, shnum, _) = self.header_fields();
        let (shoff, shnum) = (self.get(shoff, self.word()) as usize, self.get(shnum, 2));
        let (size, offset_at, size_at) = if self.is64() {
            (64, 24, 32)
        } else {
            (40, 16, 20)
        };
        (0..shnum as usize)
            .map(|i| {
                let header = shoff + i * size;
                Section {
                    header,
                    sh_type: self.get(header + 4, 4) as u32,
                    offset: self.get(header + offset_at, self.word()) as usize,
                    size: self.get(header + size_at, self.word()) as usize,
                }
            })
            .collect()
    }

    fn section(&self, sh_type: u32) -> Section {
        self.sections()
            .into_iter()
            .find(|s| s.sh_type == sh_type)
            .unwrap_or_else(|| panic!("no section of type {sh_type:#x}"))
    }

    /// Where a section header's sh_offset and sh_size fields are.
    fn section_fields(&self, s: Section) -> (usize, usize) {
        if self.is64() {
            (s.header + 24, s.header + 32)
        } else {
            (s.header + 16, s.header + 20)
        }
    }

    /// The file offset of the value of the first dynamic entry tagged `tag`.
    fn dynamic_value(&self, tag: i64) -> usize {
        let dynamic = self.section(elf::SHT_DYNAMIC);
        let word = self.word();
        (dynamic.offset..dynamic.offset + dynamic.size)
            .step_by(2 * word)
            .find(|at| self.get(*at, word) == tag as u64)
            .map(|at| at + word)
            .unwrap_or_else(|| panic!("no dynamic entry {tag:#x}"))
    }
}

/// The same file big-endian: EI_DATA flipped and every field of the
/// headers, the dynamic entries, the dynamic symbols and both hash tables
/// byte-swapped (the machine code stays as it was; nothing here reads it).
/// No cross linker for a big-endian target is installed, and none is
/// needed for what this module reads.
fn to_big_endian(little: &Image) -> Image {
    assert_eq!(little.bytes[5], elf::ELFDATA2LSB);
    let sections = little.sections();
    let (phoff_at, _, phnum_at, _, _) = little.header_fields();
    let phoff = little.get(phoff_at, little.word()) as usize;
    let phnum = little.get(phnum_at, 2) as usize;
    let is64 = little.is64();
    let word = little.word();
    let mut out = little.bytes.clone();
    out[5] = elf::ELFDATA2MSB;
    let mut swap = |at: usize, width: usize| out[at..at + width].reverse();
    let header: &[(usize, usize)] = if is64 {
        &[
            (16, 2),
            (18, 2),
            (20, 4),
            (24, 8),
            (32, 8),
            (40, 8),
            (48, 4),
            (52, 2),
            (54, 2),
            (56, 2),
            (58, 2),
            (60, 2),
            (62, 2),
        ]
    } else {
        &[
            (16, 2),
            (18, 2),
            (20, 4),
            (24, 4),
            (28, 4),
            (32, 4),
            (36, 4),
            (40, 2),
            (42, 2),
            (44, 2),
            (46, 2),
            (48, 2),
            (50, 2),
        ]
    };
    let (ph_size, ph_fields): (usize, &[(usize, usize)]) = if is64 {
        (
            56,
            &[
                (0, 4),
                (4, 4),
                (8, 8),
                (16, 8),
                (24, 8),
                (32, 8),
                (40, 8),
                (48, 8),
            ],
        )
    } else {
        (
            32,
            &[
                (0, 4),
                (4, 4),
                (8, 4),
                (12, 4),
                (16, 4),
                (20, 4),
                (24, 4),
                (28, 4),
            ],
        )
    };
    let sh_fields: &[(usize, usize)] = if is64 {
        &[
            (0, 4),
            (4, 4),
            (8, 8),
            (16, 8),
            (24, 8),
            (32, 8),
            (40, 4),
            (44, 4),
            (48, 8),
            (56, 8),
        ]
    } else {
        &[
            (0, 4),
            (4, 4),
            (8, 4),
            (12, 4),
            (16, 4),
            (20, 4),
            (24, 4),
            (28, 4),
            (32, 4),
            (36, 4),
        ]
    };
    let (sym_size, sym_fields): (usize, &[(usize, usize)]) = if is64 {
        (24, &[(0, 4), (6, 2), (8, 8), (16, 8)])
    } else {
        (16, &[(0, 4), (4, 4), (8, 4), (14, 2)])
    };
    for &(at, width) in header {
        swap(at, width);
    }
    for i in 0..phnum {
        for &(at, width) in ph_fields {
            swap(phoff + i * ph_size + at, width);
        }
    }
    for s in &sections {
        for &(at, width) in sh_fields {
            swap(s.header + at, width);
        }
        let words = |from: usize, to: usize, width: usize| (from..to).step_by(width);
        match s.sh_type {
            elf::SHT_DYNSYM => {
                for entry in (s.offset..s.offset + s.size).step_by(sym_size) {
                    for &(at, width) in sym_fields {
                        swap(entry + at, width);
                    }
                }
            }
            elf::SHT_DYNAMIC => {
                for at in words(s.offset, s.offset + s.size, word) {
                    swap(at, word);
                }
            }
            elf::SHT_HASH => {
                for at in words(s.offset, s.offset + s.size, 4) {
                    swap(at, 4);
                }
            }
            elf::SHT_GNU_HASH => {
                let bloom = little.get(s.offset + 8, 4) as usize;
                let bloom_end = s.offset + 16 + bloom * word;
                for at in words(s.offset, s.offset + 16, 4) {
                    swap(at, 4);
                }
                for at in words(s.offset + 16, bloom_end, word) {
                    swap(at, word);
                }
                for at in words(bloom_end, s.offset + s.size, 4) {
                    swap(at, 4);
                }
            }
            _ => {}
        }
    }
    Image { bytes: out }
}

/// Fails in CI (`VIGIL_REQUIRE_PRIVILEGED=1`), where what is missing is
/// installed by `make`; says why and skips elsewhere.
fn skip_or_fail(reason: &str) {
    if std::env::var("VIGIL_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{reason}, and CI forbids skipping");
    }
    eprintln!("SKIP {reason}");
}

#[test]
fn every_marker_symbol_is_found_in_a_library_of_any_name_that_defines_it() {
    let lab = Lab::new();
    let mut n = 0;
    for markers in RUNTIME_MARKERS {
        for name in markers.symbols {
            n += 1;
            // No soname, an unrelated file name: the symbol alone.
            let lib = lab.shared(&format!("libplain{n}.so"), &defining(&[name]), &[]);
            assert_eq!(
                identify_path(&lib).unwrap(),
                found(markers.runtime, &format!("dynamic symbol {name}")),
                "{name}"
            );
        }
    }
    assert!(n >= 20, "{n} marker symbols");
}

#[test]
fn every_soname_prefix_names_its_runtime() {
    let lab = Lab::new();
    let mut n = 0;
    for markers in RUNTIME_MARKERS {
        for prefix in markers.soname_prefixes {
            n += 1;
            let so = if prefix.ends_with('.') {
                format!("{prefix}so.0")
            } else {
                format!("{prefix}.so.1")
            };
            let lib = lab.shared(
                &format!("libother{n}.so"),
                "int helper(void) { return 1; }\n",
                &[&soname(&so)],
            );
            assert_eq!(
                identify_path(&lib).unwrap(),
                found(markers.runtime, &format!("soname {so}")),
                "{so}"
            );
        }
    }
    assert!(n >= 15, "{n} soname prefixes");
}

#[test]
fn a_renamed_copy_is_found_and_a_symbol_is_the_evidence_over_the_soname() {
    let lab = Lab::new();
    let ort = lab.shared(
        "libonnxruntime.so.1.17.1",
        &defining(&[
            "OrtGetApiBase",
            "OrtSessionOptionsAppendExecutionProvider_CPU",
        ]),
        &[&soname("libonnxruntime.so.1")],
    );
    let renamed = lab.copy(&ort, "libfoo.so");
    for lib in [&ort, &renamed] {
        assert_eq!(
            identify_path(lib).unwrap(),
            found("onnxruntime", "dynamic symbol OrtGetApiBase")
        );
    }
    // A soname and no marker symbol: the soname.
    let cudart = lab.shared(
        "libcudart.so.12",
        "int cudaGetDeviceCount(int *n) { *n = 0; return 0; }\n",
        &[&soname("libcudart.so.12")],
    );
    let renamed = lab.copy(&cudart, "x");
    assert_eq!(
        identify_path(&renamed).unwrap(),
        found("cuda", "soname libcudart.so.12")
    );
    // A torch symbol is a data object in C++: defined as data here.
    let c10 = lab.shared(
        "libc10-data.so",
        "int singleton __asm__(\"_ZN3c1019UndefinedTensorImpl10_singletonE\") = 1;\n",
        &[],
    );
    assert_eq!(
        identify_path(&c10).unwrap(),
        found(
            "torch",
            "dynamic symbol _ZN3c1019UndefinedTensorImpl10_singletonE"
        )
    );
}

#[test]
fn importing_a_marker_is_not_defining_it() {
    let lab = Lab::new();
    lab.shared(
        "libstub.so",
        &defining(&["cudaMalloc", "_ZN3c1019UndefinedTensorImpl10_singletonE"]),
        &[&soname("libstub.so")],
    );
    let caller = "int cuda_malloc(void **p, unsigned long n) __asm__(\"cudaMalloc\");\n\
                  extern int singleton __asm__(\"_ZN3c1019UndefinedTensorImpl10_singletonE\");\n\
                  int use(void **p) { return cuda_malloc(p, 16) + singleton; }\n";
    let user = lab.shared("libuser.so", caller, &["-L.", "-lstub"]);
    let program = lab.cc(
        "program",
        &format!("{caller}int main(void) {{ void *p; return use(&p); }}\n"),
        &["-fPIC", "-L.", "-lstub"],
    );
    // The imports are really there, undefined.
    for file in [&user, &program] {
        let bytes = fs::read(file).unwrap();
        let file = object::read::elf::ElfFile64::<Endianness>::parse(&bytes[..]).unwrap();
        use object::read::{Object as _, ObjectSymbol as _};
        let imported: Vec<_> = file
            .dynamic_symbols()
            .filter(|s| s.is_undefined())
            .filter_map(|s| s.name().ok().map(str::to_string))
            .collect();
        assert!(imported.contains(&"cudaMalloc".to_string()), "{imported:?}");
        assert!(imported.contains(&"_ZN3c1019UndefinedTensorImpl10_singletonE".to_string()));
    }
    assert_eq!(identify_path(&user).unwrap(), None);
    assert_eq!(identify_path(&program).unwrap(), None);
    // The stub defines both: the first in the table's order is the answer.
    assert_eq!(
        identify_path(&lab.path("libstub.so")).unwrap(),
        found(
            "torch",
            "dynamic symbol _ZN3c1019UndefinedTensorImpl10_singletonE"
        )
    );
}

#[test]
fn a_program_is_found_only_when_it_exports_a_runtime_it_links_statically() {
    let lab = Lab::new();
    // llama-server with libllama linked in: the definitions are in its
    // static symbol table, exported only with -rdynamic.
    let source = "int llama_backend_init(void) { return 0; }\n\
                  int main(void) { return llama_backend_init(); }\n";
    let plain = lab.cc("llama-server", source, &[]);
    let exporting = lab.cc("llama-server-rdynamic", source, &["-rdynamic"]);
    assert_eq!(identify_path(&plain).unwrap(), None);
    assert_eq!(
        identify_path(&exporting).unwrap(),
        found("llama.cpp", "dynamic symbol llama_backend_init")
    );
}

#[test]
fn names_match_whole_and_only_exported_definitions_count() {
    let lab = Lab::new();
    let source = format!(
        "{}\
         __attribute__((visibility(\"hidden\"))) int OrtGetApiBase(void) {{ return 1; }}\n\
         static int ggml_init(void) {{ return 2; }}\n\
         int keep(void) {{ return OrtGetApiBase() + ggml_init(); }}\n",
        defining(&[
            "OrtGetApiBase2",
            "my_ggml_init",
            "cudaMallocX",
            "xhipMalloc",
            "GetPjrtApi_",
        ])
    );
    let lib = lab.shared("liblookalike.so", &source, &[&soname("libcud.so.1")]);
    assert_eq!(identify_path(&lib).unwrap(), None);
}

#[test]
fn gnu_and_sysv_hash_tables_are_both_read_whatever_the_table_size() {
    let lab = Lab::new();
    // Thousands of symbols, so that chains are many and longer than one.
    let mut source = String::new();
    for i in 0..3000 {
        writeln!(source, "int f{i}(void) {{ return {i}; }}").unwrap();
    }
    source.push_str(&defining(&["llama_backend_init"]));
    for (style, gnu, sysv) in [
        ("gnu", true, false),
        ("sysv", false, true),
        ("both", true, true),
    ] {
        let lib = lab.shared(
            &format!("libmany-{style}.so"),
            &source,
            &[&format!("-Wl,--hash-style={style}")],
        );
        let tables = tables_of(&fs::read(&lib).unwrap());
        let symbols = tables.symbols.unwrap();
        assert_eq!(symbols.gnu_hash.is_some(), gnu, "{style}");
        assert_eq!(symbols.sysv_hash.is_some(), sysv, "{style}");
        assert_eq!(
            identify_path(&lib).unwrap(),
            found("llama.cpp", "dynamic symbol llama_backend_init"),
            "{style}"
        );
        // Every other marker is looked up, and missed, in the same tables.
        let plain = lab.shared(
            &format!("libplain-{style}.so"),
            &source.replace("llama_backend_init", "not_a_marker"),
            &[&format!("-Wl,--hash-style={style}")],
        );
        assert_eq!(identify_path(&plain).unwrap(), None, "{style}");
    }
}

#[test]
fn stripped_libraries_are_read_as_the_loader_reads_them() {
    let lab = Lab::new();
    for style in ["gnu", "sysv"] {
        let lib = lab.shared(
            &format!("libggml-{style}.so"),
            &defining(&["ggml_init"]),
            &["-g", &format!("-Wl,--hash-style={style}")],
        );
        let strip = Command::new("strip")
            .arg("--strip-all")
            .arg(&lib)
            .status()
            .unwrap();
        assert!(strip.success());
        let mut image = Image::read(&lib);
        // strip removed .symtab (and the debug sections) but kept .dynsym.
        assert!(image
            .sections()
            .iter()
            .all(|s| s.sh_type != elf::SHT_SYMTAB));
        let want = found("ggml", "dynamic symbol ggml_init");
        assert_eq!(identify_path(&lib).unwrap(), want);
        // Section headers of nonsense: ignored, as the loader ignores them.
        let (_, shoff, _, shnum, _) = image.header_fields();
        let mut nonsense = Image {
            bytes: image.bytes.clone(),
        };
        nonsense.set(shoff, 8, 0xdead_beef_dead);
        nonsense.set(shnum, 2, 0xfff0);
        assert_eq!(identify_bytes(&nonsense.bytes).unwrap(), want);
        // No section headers at all (sstrip): PT_DYNAMIC.
        image.strip_section_headers();
        assert_eq!(tables_of(&image.bytes).source, Source::DynamicSegment);
        assert_eq!(identify_bytes(&image.bytes).unwrap(), want, "{style}");
    }
}

#[test]
fn without_program_headers_the_section_headers_are_read() {
    let lab = Lab::new();
    for style in ["gnu", "sysv"] {
        let hash = format!("-Wl,--hash-style={style}");
        let lib = lab.shared("libs.so", &defining(&["TfLiteInterpreterCreate"]), &[&hash]);
        let mut image = Image::read(&lib);
        image.strip_program_headers();
        assert_eq!(tables_of(&image.bytes).source, Source::Sections);
        assert_eq!(
            identify_bytes(&image.bytes).unwrap(),
            found("tensorflow-lite", "dynamic symbol TfLiteInterpreterCreate"),
            "{style}"
        );
        let lib = lab.shared(
            "libt.so",
            "int f(void) { return 0; }\n",
            &[&hash, &soname("libtensorflow_framework.so.2")],
        );
        let mut image = Image::read(&lib);
        image.strip_program_headers();
        assert_eq!(
            identify_bytes(&image.bytes).unwrap(),
            found("tensorflow", "soname libtensorflow_framework.so.2"),
            "{style}"
        );
    }
    // Neither: nothing to read.
    let lib = lab.shared("libn.so", &defining(&["OrtGetApiBase"]), &[]);
    let mut image = Image::read(&lib);
    image.strip_program_headers();
    image.strip_section_headers();
    assert_eq!(identify_bytes(&image.bytes).unwrap(), None);
}

#[test]
fn thirty_two_bit_and_big_endian_files() {
    let lab = Lab::new();
    let source = defining(&["hipMalloc"]);
    let want = found("hip", "dynamic symbol hipMalloc");
    let lib64 = lab.shared(
        "libhip64.so",
        &source,
        &["-Wl,--hash-style=gnu", &soname("libamdhip64.so.6")],
    );
    // `-m32` with -nostdlib needs only the assembler and linker.
    let lib32 = lab.shared(
        "libhip32.so",
        &source,
        &["-m32", "-Wl,--hash-style=gnu", &soname("libamdhip64.so.6")],
    );
    let image32 = Image::read(&lib32);
    assert!(!image32.is64(), "cc -m32 made a 32-bit file");
    assert_eq!(identify_path(&lib32).unwrap(), want);
    for style in ["gnu", "sysv"] {
        let hash = format!("-Wl,--hash-style={style}");
        for (bits, m32) in [(64, None), (32, Some("-m32"))] {
            let mut args = vec![hash.as_str()];
            args.extend(m32);
            let lib = lab.shared(&format!("libbe{bits}.so"), &source, &args);
            let big = to_big_endian(&Image::read(&lib));
            assert_eq!(big.bytes[5], elf::ELFDATA2MSB);
            assert_eq!(identify_bytes(&big.bytes).unwrap(), want, "{bits} {style}");
            let mut no_sections = Image {
                bytes: big.bytes.clone(),
            };
            no_sections.strip_section_headers();
            assert_eq!(tables_of(&no_sections.bytes).source, Source::DynamicSegment);
            assert_eq!(
                identify_bytes(&no_sections.bytes).unwrap(),
                want,
                "{bits} {style}"
            );
            let mut no_segments = big;
            no_segments.strip_program_headers();
            assert_eq!(tables_of(&no_segments.bytes).source, Source::Sections);
            assert_eq!(
                identify_bytes(&no_segments.bytes).unwrap(),
                want,
                "{bits} {style}"
            );
        }
    }
    // The soname, big-endian, both classes.
    for lib in [&lib64, &lib32] {
        let mut image = Image::read(lib);
        let hip = image.dynamic_value(elf::DT_GNU_HASH);
        // Hide the symbol: no hash table entry (the loader would not find it).
        let word = image.word();
        image.set(hip - word, word, elf::DT_DEBUG as u64);
        let big = to_big_endian(&image);
        assert_eq!(
            identify_bytes(&big.bytes).unwrap(),
            found("hip", "soname libamdhip64.so.6")
        );
    }
    // Hand-made headers with no tables: 32-bit little- and big-endian.
    for data in [elf::ELFDATA2LSB, elf::ELFDATA2MSB] {
        let mut header = vec![0u8; 52];
        header[..4].copy_from_slice(&elf::ELFMAG);
        header[4] = elf::ELFCLASS32;
        header[5] = data;
        header[6] = elf::EV_CURRENT;
        let mut image = Image { bytes: header };
        image.set(16, 2, u64::from(elf::ET_DYN));
        image.set(18, 2, u64::from(elf::EM_386));
        image.set(20, 4, 1);
        image.set(40, 2, 52);
        assert_eq!(identify_bytes(&image.bytes).unwrap(), None);
        // And one whose program headers are past its end.
        image.set(28, 4, 52);
        image.set(42, 2, 32);
        image.set(44, 2, 3);
        assert!(matches!(
            identify_bytes(&image.bytes),
            Err(RuntimeLibraryError::Truncated {
                what: "program header table"
            })
        ));
    }
}

/// Where this host's C compiler finds `name`, if it does.
fn system_library(name: &str) -> Option<PathBuf> {
    let out = Command::new("cc")
        .arg(format!("-print-file-name={name}"))
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    // An unknown name comes back as it went.
    (path.is_absolute() && path.exists()).then(|| path.canonicalize().unwrap())
}

#[test]
fn ordinary_libraries_and_programs_are_no_runtime() {
    let libc = system_library("libc.so.6").expect("the C library");
    let mut checked = vec![libc.clone(), system_library("libm.so.6").expect("libm")];
    for name in [
        "libstdc++.so.6",
        "libz.so.1",
        "libssl.so.3",
        "libcrypto.so.3",
        "libgcc_s.so.1",
    ] {
        checked.extend(system_library(name));
    }
    // libpython, whichever version is installed beside the C library.
    for entry in fs::read_dir(libc.parent().unwrap()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("libpython3") && name.contains(".so") {
            checked.push(path);
        }
    }
    checked.push(std::env::current_exe().unwrap());
    checked.push(PathBuf::from("/bin/sh"));
    for path in &checked {
        assert_eq!(identify_path(path).unwrap(), None, "{}", path.display());
    }
    eprintln!("no runtime in {checked:?}");
    assert!(checked.len() >= 5, "{checked:?}");
}

/// A reader counting what is read through it.
struct Counting<R> {
    inner: R,
    bytes: u64,
    reads: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        self.reads += 1;
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn the_c_library_is_read_in_a_few_kib_and_well_under_a_millisecond_or_so() {
    let libc = system_library("libc.so.6").expect("the C library");
    let size = fs::metadata(&libc).unwrap().len();
    // The budget counts every read: 1 MiB is plenty.
    let budget = RuntimeLibraryBudget { max_bytes: 1 << 20 };
    let mut fastest = Duration::MAX;
    let mut counted = (0, 0);
    for _ in 0..5 {
        let mut reader = Counting {
            inner: fs::File::open(&libc).unwrap(),
            bytes: 0,
            reads: 0,
        };
        let start = Instant::now();
        assert_eq!(
            identify_runtime_library(&mut reader, &budget).unwrap(),
            None
        );
        fastest = fastest.min(start.elapsed());
        counted = (reader.bytes, reader.reads);
    }
    eprintln!(
        "{}: {} bytes of {size} in {} reads, {fastest:?}",
        libc.display(),
        counted.0,
        counted.1
    );
    assert!(counted.0 < 64 << 10, "{counted:?}");
    // Timing on a shared CI machine: a bound far above the measured tens of
    // microseconds, far below reading the file whole.
    assert!(fastest < Duration::from_millis(100), "{fastest:?}");
}

#[test]
fn the_real_onnxruntime_libraries_of_the_python_wheel() {
    // install-deps puts the onnxruntime 1.32.0 wheel here.
    let capi = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.vigil/deps/python/onnxruntime/capi");
    let lib = capi.join("libonnxruntime.so.1.32.0");
    if !lib.exists() {
        skip_or_fail(&format!("no {} (make installs it)", lib.display()));
        return;
    }
    let budget = RuntimeLibraryBudget {
        max_bytes: 64 << 10,
    };
    assert_eq!(
        identify_with(&lib, budget).unwrap(),
        found("onnxruntime", "dynamic symbol OrtGetApiBase")
    );
    assert_eq!(
        identify_with(
            &capi.join("onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so"),
            budget
        )
        .unwrap(),
        found(
            "onnxruntime",
            "dynamic symbol PyInit_onnxruntime_pybind11_state"
        )
    );
    assert_eq!(
        identify_with(&capi.join("libonnxruntime_providers_shared.so"), budget).unwrap(),
        found("onnxruntime", "soname libonnxruntime_providers_shared.so")
    );
}

#[test]
fn not_elf_and_truncated_headers() {
    for bytes in [
        &b""[..],
        b"\x7fEL",
        b"#!/bin/sh\necho hi\n",
        b"MZ\x90\x00\x03\x00\x00\x00",
    ] {
        assert!(
            matches!(identify_bytes(bytes), Err(RuntimeLibraryError::NotElf)),
            "{bytes:?}"
        );
    }
    assert!(matches!(
        identify_bytes(b"\x7fELF\x02\x01\x01"),
        Err(RuntimeLibraryError::Truncated {
            what: "ELF identification"
        })
    ));
    let libc = fs::read(system_library("libc.so.6").unwrap()).unwrap();
    assert!(matches!(
        identify_bytes(&libc[..40]),
        Err(RuntimeLibraryError::Truncated { what: "ELF header" })
    ));
    for (at, value) in [(4, 3u8), (5, 0), (6, 0)] {
        let mut bad = libc[..4096].to_vec();
        bad[at] = value;
        assert!(
            matches!(
                identify_bytes(&bad),
                Err(RuntimeLibraryError::Malformed { .. })
            ),
            "e_ident[{at}] = {value}"
        );
    }
}

#[test]
fn claimed_sizes_are_never_allocated_or_read_before_they_are_checked() {
    let lab = Lab::new();
    let lib = lab.shared(
        "libllama.so",
        &defining(&["llama_model_load_from_file"]),
        &["-Wl,--hash-style=gnu"],
    );
    let want = found("llama.cpp", "dynamic symbol llama_model_load_from_file");
    let original = Image::read(&lib);
    let len = original.bytes.len() as u64;
    // Small enough that reading any claimed table would pass it.
    let small = RuntimeLibraryBudget {
        max_bytes: 64 << 10,
    };
    let check = |image: &Image| identify_runtime_library(Cursor::new(&image.bytes), &small);
    let patched = |change: &dyn Fn(&mut Image)| {
        let mut image = Image {
            bytes: original.bytes.clone(),
        };
        change(&mut image);
        image
    };
    let no_segments = |image: &mut Image| image.strip_program_headers();

    // The section header table's offset past the end of the file.
    let image = patched(&|i| {
        no_segments(i);
        i.set(40, 8, len + 4096);
    });
    assert!(matches!(
        check(&image),
        Err(RuntimeLibraryError::Truncated {
            what: "section header table"
        })
    ));
    // e_shnum at its largest, and an extended count of 2^40 in section 0.
    let image = patched(&|i| {
        no_segments(i);
        i.set(60, 2, 0xffff);
    });
    assert!(matches!(
        check(&image),
        Err(RuntimeLibraryError::Truncated {
            what: "section header table"
        })
    ));
    let image = patched(&|i| {
        no_segments(i);
        let shoff = i.get(40, 8) as usize;
        i.set(60, 2, 0);
        i.set(shoff + 32, 8, 1 << 40);
    });
    assert!(matches!(
        check(&image),
        Err(RuntimeLibraryError::Truncated {
            what: "section header table"
        })
    ));
    // e_phnum at its largest below PN_XNUM, and PN_XNUM with 2^32 - 1 in
    // section 0.
    let image = patched(&|i| i.set(56, 2, 0xfffe));
    assert!(matches!(
        check(&image),
        Err(RuntimeLibraryError::Truncated {
            what: "program header table"
        })
    ));
    let image = patched(&|i| {
        let shoff = i.get(40, 8) as usize;
        i.set(56, 2, u64::from(elf::PN_XNUM));
        i.set(shoff + 44, 4, 0xffff_ffff);
    });
    assert!(matches!(
        check(&image),
        Err(RuntimeLibraryError::Truncated {
            what: "program header table"
        })
    ));
    let image = patched(&|i| i.set(54, 2, 48));
    assert!(matches!(
        check(&image),
        Err(RuntimeLibraryError::Malformed {
            what: "program header entry size"
        })
    ));

    // A string table at 2^60: in the dynamic segment, and in the sections.
    let image = patched(&|i| {
        let at = i.dynamic_value(elf::DT_STRTAB);
        i.set(at, 8, 1 << 60);
    });
    assert!(
        matches!(check(&image), Err(RuntimeLibraryError::Malformed { .. })),
        "{:?}",
        check(&image)
    );
    let image = patched(&|i| {
        let at = i.dynamic_value(elf::DT_STRSZ);
        i.set(at, 8, 1 << 60);
    });
    assert!(matches!(
        check(&image),
        Err(RuntimeLibraryError::Malformed {
            what: "DT_STRSZ runs past the end of its segment"
        })
    ));
    let image = patched(&|i| {
        no_segments(i);
        let dynstr = i.section(elf::SHT_STRTAB);
        let (offset, _) = i.section_fields(dynstr);
        i.set(offset, 8, 1 << 60);
    });
    assert!(
        matches!(check(&image), Err(RuntimeLibraryError::Truncated { .. })),
        "{:?}",
        check(&image)
    );

    // A dynamic symbol table of 10^9 entries: only the symbols a lookup
    // lands on are read, so the answer stands, within the small budget.
    let image = patched(&|i| {
        no_segments(i);
        let dynsym = i.section(elf::SHT_DYNSYM);
        let (_, size) = i.section_fields(dynsym);
        i.set(size, 8, 1_000_000_000 * 24);
    });
    assert_eq!(check(&image).unwrap(), want);
    // A System V table claiming 10^9 chain entries: likewise.
    let sysv = lab.shared(
        "libsysv.so",
        &defining(&["llama_model_load_from_file"]),
        &["-Wl,--hash-style=sysv"],
    );
    let mut image = Image::read(&sysv);
    let hash = image.section(elf::SHT_HASH);
    image.set(hash.offset + 4, 4, 1_000_000_000);
    assert_eq!(check(&image).unwrap(), want);

    // A GNU table with 2^32 - 1 buckets, or as many Bloom words: the
    // bucket lies past the table's segment.
    for field in [0, 8] {
        let image = patched(&|i| {
            let gnu = i.section(elf::SHT_GNU_HASH);
            i.set(gnu.offset + field, 4, 0xffff_ffff);
        });
        assert!(
            matches!(
                check(&image),
                Err(RuntimeLibraryError::Malformed {
                    what: "GNU hash table"
                })
            ),
            "{:?}",
            check(&image)
        );
    }
    // The same with a soname naming a runtime: the soname is the answer.
    let named = lab.shared(
        "libcudnn.so",
        &defining(&["cudnnCreate"]),
        &["-Wl,--hash-style=gnu", &soname("libcudnn.so.9")],
    );
    let mut image = Image::read(&named);
    let gnu = image.section(elf::SHT_GNU_HASH);
    image.set(gnu.offset, 4, 0xffff_ffff);
    assert_eq!(
        check(&image).unwrap(),
        found("cudnn", "soname libcudnn.so.9")
    );
}

#[test]
fn hash_chains_that_loop_or_never_end_stop() {
    let lab = Lab::new();
    let source =
        "int a(void) { return 1; }\nint b(void) { return 2; }\nint c(void) { return 3; }\n";
    let sysv = Image::read(&lab.shared("libloop.so", source, &["-Wl,--hash-style=sysv"]));
    let hash = sysv.section(elf::SHT_HASH);
    let nbucket = sysv.get(hash.offset, 4) as usize;
    let nchain = sysv.get(hash.offset + 4, 4) as usize;
    assert!(nchain >= 4, "{nchain} symbols");
    let buckets = hash.offset + 8;
    let chains = buckets + nbucket * 4;
    // Every bucket to symbol 1, and every chain a loop: to itself, and
    // through all the symbols.
    for next in [&(|i: usize| i) as &dyn Fn(usize) -> usize, &|i| {
        i % (nchain - 1) + 1
    }] {
        let mut image = Image {
            bytes: sysv.bytes.clone(),
        };
        for b in 0..nbucket {
            image.set(buckets + b * 4, 4, 1);
        }
        for i in 0..nchain {
            image.set(chains + i * 4, 4, next(i) as u64);
        }
        assert!(matches!(
            identify_bytes(&image.bytes),
            Err(RuntimeLibraryError::Malformed {
                what: "System V hash chain loops"
            })
        ));
    }
    // A GNU chain with no end bit: the walk stops at the end of the
    // segment, or sooner where the bytes after the table say so; it does
    // not invent a runtime.
    let gnu = Image::read(&lab.shared("libendless.so", source, &["-Wl,--hash-style=gnu"]));
    let table = gnu.section(elf::SHT_GNU_HASH);
    let nbuckets = gnu.get(table.offset, 4) as usize;
    let bloom = gnu.get(table.offset + 8, 4) as usize;
    let chains = table.offset + 16 + bloom * 8 + nbuckets * 4;
    let mut image = Image {
        bytes: gnu.bytes.clone(),
    };
    for at in (chains..table.offset + table.size).step_by(4) {
        image.set(at, 4, 0);
    }
    for b in 0..nbuckets {
        let at = table.offset + 16 + bloom * 8 + b * 4;
        if image.get(at, 4) == 0 {
            image.set(at, 4, gnu.get(table.offset + 4, 4));
        }
    }
    assert!(!matches!(identify_bytes(&image.bytes), Ok(Some(_))));
}

#[test]
fn the_budget_is_a_hard_limit() {
    let lab = Lab::new();
    let lib = lab.shared("libb.so", &defining(&["GetPjrtApi"]), &[]);
    for max_bytes in [0, 100, 300] {
        let budget = RuntimeLibraryBudget { max_bytes };
        assert!(
            matches!(identify_with(&lib, budget), Err(RuntimeLibraryError::Budget { max_bytes: m, .. }) if m == max_bytes),
            "{max_bytes}: {:?}",
            identify_with(&lib, budget)
        );
    }
    assert_eq!(
        identify_with(
            &lib,
            RuntimeLibraryBudget {
                max_bytes: 16 << 10
            }
        )
        .unwrap(),
        found("xla-pjrt", "dynamic symbol GetPjrtApi")
    );
    assert_eq!(RuntimeLibraryBudget::default().max_bytes, 64 << 20);
}

/// A reader whose reads fail, or whose length cannot be had.
struct Failing {
    seek_end_fails: bool,
}

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other("disk on fire"))
    }
}

impl Seek for Failing {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match pos {
            SeekFrom::End(_) if self.seek_end_fails => Err(io::Error::other("no length")),
            SeekFrom::End(_) => Ok(4096),
            _ => Ok(0),
        }
    }
}

#[test]
fn reader_errors_are_passed_on() {
    let budget = RuntimeLibraryBudget::default();
    let err = identify_runtime_library(
        Failing {
            seek_end_fails: false,
        },
        &budget,
    )
    .unwrap_err();
    assert!(
        matches!(&err, RuntimeLibraryError::Io { what: "ELF magic", source } if source.to_string() == "disk on fire"),
        "{err:?}"
    );
    let err = identify_runtime_library(
        Failing {
            seek_end_fails: true,
        },
        &budget,
    )
    .unwrap_err();
    assert!(
        matches!(&err, RuntimeLibraryError::Io { what: "file length", source } if source.to_string() == "no length"),
        "{err:?}"
    );
}

#[test]
fn damaged_files_never_panic_and_stay_within_the_budget() {
    let lab = Lab::new();
    let mut files = Vec::new();
    for (bits, style) in [("", "gnu"), ("", "sysv"), ("-m32", "gnu"), ("-m32", "sysv")] {
        let mut args = vec![
            format!("-Wl,--hash-style={style}"),
            soname("libonnxruntime.so.1"),
        ];
        if !bits.is_empty() {
            args.push(bits.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let lib = lab.shared(
            &format!("libd{bits}{style}.so"),
            &defining(&["f", "OrtGetApiBase", "g"]),
            &args,
        );
        let image = Image::read(&lib);
        files.push(to_big_endian(&image).bytes);
        files.push(image.bytes);
    }
    let budget = RuntimeLibraryBudget {
        max_bytes: 256 << 10,
    };
    let run = |bytes: &[u8]| {
        let start = Instant::now();
        let _ = identify_runtime_library(Cursor::new(bytes), &budget);
        assert!(start.elapsed() < Duration::from_secs(2));
    };
    // Every truncation of the first few KiB, then every 61st byte.
    for bytes in &files {
        for cut in (0..bytes.len().min(4096)).chain((4096..bytes.len()).step_by(61)) {
            run(&bytes[..cut]);
        }
    }
    // Random bytes written at random places (xorshift: the same each run).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..20_000 {
        let mut bytes = files[i % files.len()].clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            let value = next();
            // A whole field's worth sometimes, a byte mostly.
            let width = [1, 1, 2, 4, 8][(value % 5) as usize].min(bytes.len() - at);
            bytes[at..at + width].copy_from_slice(&(value >> 3).to_le_bytes()[..width]);
        }
        run(&bytes);
    }
}
