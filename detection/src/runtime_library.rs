//! Which AI runtime a shared library or executable is, by its ELF content
//! rather than its file name: a copy of `libonnxruntime.so` renamed
//! `/tmp/libfoo.so` and loaded with `dlopen` or `ctypes` still exports
//! `OrtGetApiBase` and still says `libonnxruntime.so.1` in its `DT_SONAME`.
//!
//! What is read is what the dynamic linker reads: the program headers, the
//! `PT_DYNAMIC` segment's entries, the dynamic symbol hash table
//! (`DT_GNU_HASH`, else `DT_HASH`) and the few symbols and names it leads to.
//! Each marker symbol is looked up by name the way `dlsym` looks it up, so
//! the work is a few small reads per marker whatever the library's size
//! (`libc.so.6`, 1.9 MB: under 2 KiB in under a hundred reads); nothing
//! reads a whole table, and nothing is allocated from a size the file claims
//! before that many bytes are found to be in the file and within the
//! budget. Section headers are used only when there is no `PT_DYNAMIC`:
//! the loader ignores them, so a library whose section headers are stripped
//! (`sstrip`) or rewritten is still read as it is loaded.
//!
//! Only DEFINED exported symbols count: a program that imports `cudaMalloc`
//! from `libcudart` is not itself `libcudart`. Hash tables hold only what
//! the library exports (a GNU hash table leaves the imports out altogether),
//! and a hit must have a section index (`st_shndx != SHN_UNDEF`) and a
//! global, weak or unique binding, as the dynamic linker requires of a
//! definition.
//!
//! Limits, knowingly: a program that links a runtime statically (a
//! `llama-server` built with static `libllama`) defines its symbols in the
//! static `.symtab`, which `strip` removes and the loader never reads; it is
//! found here only when it exports them (`-rdynamic`) or by its executable
//! name (`ai_runtime_binary`). A library with neither hash table exports
//! nothing the loader can find, so only its `DT_SONAME` is read.
//! `DT_HASH` is read as 32-bit words, as on every Linux ABI but 64-bit s390
//! and Alpha (8-byte words: there a file with only `DT_HASH` reads as
//! malformed or exporting nothing); `DT_GNU_HASH`, what current toolchains
//! emit, has the same layout everywhere.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Seek, SeekFrom};
use std::mem::size_of;
use std::ops::Range;

use object::elf;
use object::read::elf::{Dyn as _, FileHeader, ProgramHeader as _, SectionHeader as _, Sym as _};
use object::read::{ReadCache, ReadRef};
use object::{Endianness, Pod, U32};

/// What one identification may read before it gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeLibraryBudget {
    /// Bytes handed to the parser, each read counted with 64 more for the
    /// bookkeeping of a cached read, so that this bounds the memory held as
    /// well as the bytes read.
    pub max_bytes: u64,
}

/// The default budget: far above what any real library needs (a few KiB),
/// low enough that a crafted file cannot make one identification hold more
/// than about this much memory.
const DEFAULT_BUDGET_BYTES: u64 = 64 << 20;

/// What each read costs on top of its bytes: one entry in the read cache
/// (its key, its slice and the allocation behind it).
const READ_OVERHEAD_BYTES: u64 = 64;

impl Default for RuntimeLibraryBudget {
    fn default() -> Self {
        RuntimeLibraryBudget {
            max_bytes: DEFAULT_BUDGET_BYTES,
        }
    }
}

/// The AI runtime a file is, and what in the file says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeLibraryIdentity {
    /// The runtime's name, from [`RUNTIME_MARKERS`]: `"onnxruntime"`,
    /// `"cuda"`, `"llama.cpp"`...
    pub runtime: &'static str,
    /// `dynamic symbol OrtGetApiBase` or `soname libcudart.so.12` (the
    /// file's own bytes, non-printable ones escaped).
    pub evidence: String,
}

/// Why a file could not be read as an ELF file.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeLibraryError {
    /// Not an ELF file (no `\x7fELF` magic): a script, data, or nothing.
    #[error("not an ELF file")]
    NotElf,
    /// A structure the file points to lies (partly) past its end.
    #[error("truncated ELF file: the {what} lies past the end of the file")]
    Truncated { what: &'static str },
    /// Reading on would pass the budget.
    #[error("reading the {what} would pass the budget of {max_bytes} bytes")]
    Budget { what: &'static str, max_bytes: u64 },
    /// Values that contradict each other or the format.
    #[error("malformed ELF file: {what}")]
    Malformed { what: &'static str },
    /// The reader failed (including a file that shrank while it was read).
    #[error("reading the {what} failed: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// What identifies one runtime.
#[derive(Debug)]
pub struct RuntimeMarkers {
    /// The name reported in [`RuntimeLibraryIdentity::runtime`].
    pub runtime: &'static str,
    /// Whole names of dynamic symbols that only this runtime defines.
    pub symbols: &'static [&'static str],
    /// Prefixes of its `DT_SONAME` (which a copy keeps whatever its file
    /// name).
    pub soname_prefixes: &'static [&'static str],
}

/// The markers, tried in this order: every symbol of every runtime first,
/// then the sonames, so that where a file has both the symbol is the
/// evidence. Symbols are matched by whole name, exactly; sonames by prefix.
///
/// Symbols are C entry points (unmangled, stable across releases) unless a
/// comment says otherwise. What is an assumption rather than checked
/// against the runtime's headers or a built library says so.
pub const RUNTIME_MARKERS: &[RuntimeMarkers] = &[
    // ONNX Runtime: `OrtGetApiBase` is its C API's only entry point
    // (onnxruntime_c_api.h); every binding (C, C#, Java, Rust's `ort`)
    // starts there. Checked on the 1.32.0 wheel's libonnxruntime.so.1.32.0.
    // The Python wheel's extension module links the runtime in statically
    // and exports only `PyInit_onnxruntime_pybind11_state` (checked on the
    // same wheel); the name is fixed by the module name Python imports, and
    // `importlib` can load it from a file of any name.
    RuntimeMarkers {
        runtime: "onnxruntime",
        symbols: &["OrtGetApiBase", "PyInit_onnxruntime_pybind11_state"],
        soname_prefixes: &["libonnxruntime"],
    },
    // ggml, the tensor library under llama.cpp, whisper.cpp and ollama:
    // `ggml_init` (ggml.h), in libggml-base.so since the 2025 backend split,
    // libggml.so before; the soname prefix covers both and the backends
    // (libggml-cpu, libggml-cuda...).
    RuntimeMarkers {
        runtime: "ggml",
        symbols: &["ggml_init"],
        soname_prefixes: &["libggml"],
    },
    // llama.cpp's libllama (llama.h): loading a model under its current and
    // its deprecated name, and backend set-up. llama-server and the other
    // tools import these from libllama (not a match: the library is found
    // when it is loaded), or link it statically, when they define them but
    // export them only if built with -rdynamic (see the module's limits).
    RuntimeMarkers {
        runtime: "llama.cpp",
        symbols: &[
            "llama_model_load_from_file",
            "llama_load_model_from_file",
            "llama_backend_init",
        ],
        soname_prefixes: &["libllama"],
    },
    // PyTorch / libtorch. Its exports are C++, mangled, and change with
    // signatures (`THPVariable_Wrap` is `_Z16THPVariable_WrapRKN2at10TensorBaseE`
    // in one release and took `at::Tensor` by value in another), so the one
    // symbol is a static data member, whose mangled name has no signature:
    // `c10::UndefinedTensorImpl::_singleton`, defined in libc10 (declared
    // C10_API in c10/core/UndefinedTensorImpl.h since 2018, still so in
    // 2025) and imported by every extension built against it (their
    // "undefined symbol: _ZN3c1019UndefinedTensorImpl10_singletonE" errors
    // on a version mismatch are how it is known to be exported). Not
    // checked on a built libc10 here. libtorch_cpu, libtorch_cuda and
    // libtorch_python are found by soname (libtorch*), which their builds
    // set.
    RuntimeMarkers {
        runtime: "torch",
        symbols: &["_ZN3c1019UndefinedTensorImpl10_singletonE"],
        soname_prefixes: &["libtorch", "libc10"],
    },
    // CUDA runtime (cuda_runtime_api.h): allocation and kernel launch.
    // Libraries that use CUDA import these; only libcudart (or a program
    // exporting a statically linked copy) defines them.
    RuntimeMarkers {
        runtime: "cuda",
        symbols: &["cudaMalloc", "cudaLaunchKernel"],
        soname_prefixes: &["libcudart"],
    },
    // cuBLAS (cublas_api.h: `cublasCreate` is a macro for `_v2`); the soname
    // prefix covers libcublasLt too.
    RuntimeMarkers {
        runtime: "cublas",
        symbols: &["cublasCreate_v2"],
        soname_prefixes: &["libcublas"],
    },
    // cuDNN (cudnn.h); since cuDNN 9 libcudnn.so is a shim over
    // libcudnn_graph, libcudnn_ops...: the prefix covers them all.
    RuntimeMarkers {
        runtime: "cudnn",
        symbols: &["cudnnCreate"],
        soname_prefixes: &["libcudnn"],
    },
    // ROCm's HIP runtime (hip_runtime_api.h, extern "C").
    RuntimeMarkers {
        runtime: "hip",
        symbols: &["hipMalloc"],
        soname_prefixes: &["libamdhip64"],
    },
    // ROCm's BLAS (rocblas-functions.h).
    RuntimeMarkers {
        runtime: "rocblas",
        symbols: &["rocblas_create_handle"],
        soname_prefixes: &["librocblas"],
    },
    // TensorFlow Lite's C API (c_api.h): libtensorflowlite_c. Before
    // TensorFlow so that a libtensorflowlite soname is reported as Lite.
    RuntimeMarkers {
        runtime: "tensorflow-lite",
        symbols: &["TfLiteInterpreterCreate"],
        soname_prefixes: &["libtensorflowlite"],
    },
    // TensorFlow's C API (c_api.h), in libtensorflow and in the Python
    // package's _pywrap_tensorflow_internal; libtensorflow_framework by
    // soname.
    RuntimeMarkers {
        runtime: "tensorflow",
        symbols: &["TF_NewSession", "TF_Version"],
        soname_prefixes: &["libtensorflow"],
    },
    // OpenVINO: the C API (openvino/c/ov_core.h) in libopenvino_c; the C++
    // core libopenvino by soname.
    RuntimeMarkers {
        runtime: "openvino",
        symbols: &["ov_core_create"],
        soname_prefixes: &["libopenvino"],
    },
    // XLA's PJRT plugins (libtpu, the CUDA and ROCm plugins of jax and
    // torch_xla): the plugin entry point of pjrt_c_api.h. Their sonames
    // vary (often none), so there is no prefix.
    RuntimeMarkers {
        runtime: "xla-pjrt",
        symbols: &["GetPjrtApi"],
        soname_prefixes: &[],
    },
    // Apache TVM's runtime, under MLC LLM: `TVMFuncCall`
    // (c_runtime_api.h), and `TVMFFIFunctionCall` of tvm-ffi (tvm/ffi/c_api.h),
    // the ABI that replaces it from TVM 0.21 (2025) and that FlashInfer
    // also uses. The `libtvm.` prefix is the full compiler library.
    RuntimeMarkers {
        runtime: "tvm",
        symbols: &["TVMFuncCall", "TVMFFIFunctionCall"],
        soname_prefixes: &["libtvm_runtime", "libtvm_ffi", "libtvm."],
    },
];

/// Longest soname read (longer ones are cut; the prefix decides).
const SONAME_MAX: u64 = 256;

/// Most `PT_DYNAMIC` (or `.dynamic`) entries read before `DT_NULL` must
/// have come: real tables have a few dozen.
const DYNAMIC_ENTRIES_MAX: u64 = 4096;

/// The AI runtime `reader`'s ELF file is, if any: the first defined
/// exported symbol of [`RUNTIME_MARKERS`] it has, else the first soname
/// prefix its `DT_SONAME` starts with.
///
/// Reads only through `reader` (seeking to the few places it needs, from
/// its start), at most `budget` of it; a plain `File` serves best (a
/// `BufReader` would refill its buffer at every seek). `Ok(None)` for an
/// ELF file of no listed runtime, including one with no dynamic section (a
/// static program, an object file, a core dump).
///
/// Where the symbol lookup fails (a corrupt hash table) but the soname
/// names a runtime, that runtime is the answer: the evidence for it stands.
pub fn identify_runtime_library<R: Read + Seek>(
    reader: R,
    budget: &RuntimeLibraryBudget,
) -> Result<Option<RuntimeLibraryIdentity>, RuntimeLibraryError> {
    let meter = Meter {
        max_bytes: budget.max_bytes,
        used: Cell::new(0),
        exhausted: Cell::new(false),
        io_error: RefCell::new(None),
    };
    let cache = ReadCache::new(Trap {
        inner: reader,
        meter: &meter,
    });
    let len = ReadRef::len(&cache).map_err(|()| {
        let source = meter.io_error.borrow_mut().take();
        RuntimeLibraryError::Io {
            what: "file length",
            source: source.unwrap_or_else(|| io::Error::other("seek to the end failed")),
        }
    })?;
    let data = Data {
        cache: &cache,
        meter: &meter,
        len,
    };
    if len < 4 {
        return Err(RuntimeLibraryError::NotElf);
    }
    if data.bytes(0, 4, "ELF magic")? != elf::ELFMAG {
        return Err(RuntimeLibraryError::NotElf);
    }
    let ident = data.bytes(0, 16, "ELF identification")?;
    // e_ident[EI_CLASS].
    match ident[4] {
        elf::ELFCLASS32 => identify::<elf::FileHeader32<Endianness>, R>(data),
        elf::ELFCLASS64 => identify::<elf::FileHeader64<Endianness>, R>(data),
        _ => Err(RuntimeLibraryError::Malformed {
            what: "ELF class is neither 32- nor 64-bit",
        }),
    }
}

/// [`identify_runtime_library`] for one ELF class.
fn identify<Elf: FileHeader<Endian = Endianness>, R: Read + Seek>(
    data: Data<'_, R>,
) -> Result<Option<RuntimeLibraryIdentity>, RuntimeLibraryError> {
    let Some(tables) = locate::<Elf, R>(data)? else {
        return Ok(None);
    };
    let by_symbol = match &tables.symbols {
        Some(symbols) => find_marker_symbol::<Elf, R>(data, tables.endian, symbols),
        None => Ok(None),
    };
    match by_symbol {
        Ok(Some(found)) => Ok(Some(found)),
        Ok(None) => by_soname(data, &tables),
        Err(e) => match by_soname(data, &tables) {
            Ok(Some(found)) => Ok(Some(found)),
            _ => Err(e),
        },
    }
}

/// A range of the file: `offset` and the `len` bytes from it that a table
/// may use (to the end of its section, or of the segment it is in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    offset: u64,
    len: u64,
}

impl Region {
    /// The file offset of `size` bytes at `at` in the region.
    fn at(self, at: u64, size: u64, what: &'static str) -> Result<u64, RuntimeLibraryError> {
        match at.checked_add(size) {
            Some(end) if end <= self.len => self
                .offset
                .checked_add(at)
                .ok_or(RuntimeLibraryError::Truncated { what }),
            _ => Err(RuntimeLibraryError::Malformed { what }),
        }
    }
}

/// Where the dynamic symbol lookup reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SymbolTables {
    symtab: Region,
    strtab: Region,
    gnu_hash: Option<Region>,
    sysv_hash: Option<Region>,
}

/// Where a file's tables were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The `PT_DYNAMIC` program header, as the loader finds them.
    DynamicSegment,
    /// Section headers (`.dynsym`, `.dynamic`), there being no `PT_DYNAMIC`.
    Sections,
}

/// The dynamic tables of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tables {
    endian: Endianness,
    // Read by the tests, which check which way a file was read.
    #[cfg_attr(not(test), allow(dead_code))]
    source: Source,
    symbols: Option<SymbolTables>,
    /// The string table `DT_SONAME` indexes, and its index.
    soname: Option<(Region, u64)>,
}

/// The dynamic tables of `data`'s file: from its `PT_DYNAMIC` segment, else
/// from its section headers; `None` where it has neither.
fn locate<Elf: FileHeader<Endian = Endianness>, R: Read + Seek>(
    data: Data<'_, R>,
) -> Result<Option<Tables>, RuntimeLibraryError> {
    let header: &Elf = data.pod(0, "ELF header")?;
    if !header.is_supported() {
        // Magic and class are checked: the data encoding or the version.
        return Err(RuntimeLibraryError::Malformed {
            what: "ELF data encoding or version",
        });
    }
    let endian = header
        .endian()
        .map_err(|_| RuntimeLibraryError::Malformed {
            what: "ELF data encoding",
        })?;
    let phdrs = program_headers(header, endian, data)?;
    if let Some(dynamic) = phdrs.iter().find(|ph| ph.p_type(endian) == elf::PT_DYNAMIC) {
        return from_dynamic_segment::<Elf, R>(data, endian, phdrs, dynamic).map(Some);
    }
    from_sections(header, endian, data)
}

/// The program header table; empty where there is none.
fn program_headers<'a, Elf: FileHeader<Endian = Endianness>, R: Read + Seek>(
    header: &Elf,
    endian: Endianness,
    data: Data<'a, R>,
) -> Result<&'a [Elf::ProgramHeader], RuntimeLibraryError> {
    let phoff: u64 = header.e_phoff(endian).into();
    if phoff == 0 {
        return Ok(&[]);
    }
    // `phnum` reads section 0 where e_phnum is PN_XNUM.
    let phnum = header.phnum(endian, data).map_err(|_| {
        data.failure(RuntimeLibraryError::Malformed {
            what: "extended program header count (section 0)",
        })
    })?;
    if phnum == 0 {
        return Ok(&[]);
    }
    if usize::from(header.e_phentsize(endian)) != size_of::<Elf::ProgramHeader>() {
        return Err(RuntimeLibraryError::Malformed {
            what: "program header entry size",
        });
    }
    data.slice(phoff, phnum as u64, "program header table")
}

/// The tables as the loader finds them, from the `PT_DYNAMIC` entries.
fn from_dynamic_segment<Elf: FileHeader<Endian = Endianness>, R: Read + Seek>(
    data: Data<'_, R>,
    endian: Endianness,
    phdrs: &[Elf::ProgramHeader],
    dynamic: &Elf::ProgramHeader,
) -> Result<Tables, RuntimeLibraryError> {
    let region = Region {
        offset: dynamic.p_offset(endian).into(),
        len: dynamic.p_filesz(endian).into(),
    };
    let entries = dynamic_entries::<Elf, R>(data, endian, region, "dynamic segment")?;
    let first = |tag: i64| entries.iter().find(|(t, _)| *t == tag).map(|(_, v)| *v);
    // Addresses (d_ptr) are where the loader maps them: find the file bytes.
    let map = |addr: Option<u64>, what| {
        addr.map(|a| map_address::<Elf>(phdrs, endian, a, what))
            .transpose()
    };
    let Some(mut strtab) = map(
        first(elf::DT_STRTAB),
        "DT_STRTAB is outside every loaded segment",
    )?
    else {
        // No strings: neither a name nor a soname to read.
        return Ok(Tables {
            endian,
            source: Source::DynamicSegment,
            symbols: None,
            soname: None,
        });
    };
    if let Some(strsz) = first(elf::DT_STRSZ) {
        if strsz > strtab.len {
            return Err(RuntimeLibraryError::Malformed {
                what: "DT_STRSZ runs past the end of its segment",
            });
        }
        strtab.len = strsz;
    }
    if let Some(syment) = first(elf::DT_SYMENT) {
        if syment != size_of::<Elf::Sym>() as u64 {
            return Err(RuntimeLibraryError::Malformed {
                what: "DT_SYMENT is not the size of a symbol",
            });
        }
    }
    let symtab = map(
        first(elf::DT_SYMTAB),
        "DT_SYMTAB is outside every loaded segment",
    )?;
    let gnu_hash = map(
        first(elf::DT_GNU_HASH),
        "DT_GNU_HASH is outside every loaded segment",
    )?;
    let sysv_hash = map(
        first(elf::DT_HASH),
        "DT_HASH is outside every loaded segment",
    )?;
    Ok(Tables {
        endian,
        source: Source::DynamicSegment,
        symbols: symtab.map(|symtab| SymbolTables {
            symtab,
            strtab,
            gnu_hash,
            sysv_hash,
        }),
        soname: first(elf::DT_SONAME).map(|at| (strtab, at)),
    })
}

/// (tag, value) of the dynamic entries in `region`, up to `DT_NULL`.
fn dynamic_entries<Elf: FileHeader<Endian = Endianness>, R: Read + Seek>(
    data: Data<'_, R>,
    endian: Endianness,
    region: Region,
    what: &'static str,
) -> Result<Vec<(i64, u64)>, RuntimeLibraryError> {
    let count = region.len / size_of::<Elf::Dyn>() as u64;
    let entries: &[Elf::Dyn] = data.slice(region.offset, count.min(DYNAMIC_ENTRIES_MAX), what)?;
    let mut out = Vec::new();
    for entry in entries {
        let tag = entry.tag(endian);
        if tag == elf::DT_NULL {
            return Ok(out);
        }
        out.push((tag, entry.val(endian)));
    }
    if count > DYNAMIC_ENTRIES_MAX {
        return Err(RuntimeLibraryError::Malformed {
            what: "no DT_NULL in the first 4096 dynamic entries",
        });
    }
    // A table that fills its segment without DT_NULL: the loader would read
    // on; what is here is all there is to read.
    Ok(out)
}

/// The file bytes the loader maps at `addr`: in the file-backed part of a
/// `PT_LOAD` segment, to its end.
fn map_address<Elf: FileHeader<Endian = Endianness>>(
    phdrs: &[Elf::ProgramHeader],
    endian: Endianness,
    addr: u64,
    what: &'static str,
) -> Result<Region, RuntimeLibraryError> {
    phdrs
        .iter()
        .filter(|ph| ph.p_type(endian) == elf::PT_LOAD)
        .find_map(|ph| {
            let vaddr: u64 = ph.p_vaddr(endian).into();
            let filesz: u64 = ph.p_filesz(endian).into();
            let into = addr.checked_sub(vaddr).filter(|d| *d < filesz)?;
            let offset: u64 = ph.p_offset(endian).into();
            Some(Region {
                offset: offset.checked_add(into)?,
                len: filesz - into,
            })
        })
        .ok_or(RuntimeLibraryError::Malformed { what })
}

/// The tables from the section headers (`.dynsym`, its string table and
/// hash tables, `.dynamic` for the soname): a file with no `PT_DYNAMIC`,
/// which no loader would load, but whose exports can still be read.
fn from_sections<Elf: FileHeader<Endian = Endianness>, R: Read + Seek>(
    header: &Elf,
    endian: Endianness,
    data: Data<'_, R>,
) -> Result<Option<Tables>, RuntimeLibraryError> {
    let shoff: u64 = header.e_shoff(endian).into();
    if shoff == 0 {
        return Ok(None);
    }
    if usize::from(header.e_shentsize(endian)) != size_of::<Elf::SectionHeader>() {
        return Err(RuntimeLibraryError::Malformed {
            what: "section header entry size",
        });
    }
    // `shnum` reads section 0 where e_shnum is 0 (an extended count).
    let shnum = header.shnum(endian, data).map_err(|_| {
        data.failure(RuntimeLibraryError::Truncated {
            what: "section header table",
        })
    })?;
    let sections: &[Elf::SectionHeader] =
        data.slice(shoff, shnum as u64, "section header table")?;
    let region = |s: &Elf::SectionHeader| Region {
        offset: s.sh_offset(endian).into(),
        len: s.sh_size(endian).into(),
    };
    let linked = |s: &Elf::SectionHeader, what| {
        sections
            .get(s.sh_link(endian) as usize)
            .filter(|t| t.sh_type(endian) == elf::SHT_STRTAB)
            .map(region)
            .ok_or(RuntimeLibraryError::Malformed { what })
    };
    let soname = match sections
        .iter()
        .find(|s| s.sh_type(endian) == elf::SHT_DYNAMIC)
    {
        None => None,
        Some(dynamic) => {
            let entries =
                dynamic_entries::<Elf, R>(data, endian, region(dynamic), "dynamic section")?;
            match entries.iter().find(|(tag, _)| *tag == elf::DT_SONAME) {
                None => None,
                Some((_, at)) => Some((
                    linked(dynamic, "the dynamic section's string table link")?,
                    *at,
                )),
            }
        }
    };
    let dynsym = sections
        .iter()
        .enumerate()
        .find(|(_, s)| s.sh_type(endian) == elf::SHT_DYNSYM);
    let symbols = match dynsym {
        None => None,
        Some((index, dynsym)) => {
            let entsize: u64 = dynsym.sh_entsize(endian).into();
            if entsize != 0 && entsize != size_of::<Elf::Sym>() as u64 {
                return Err(RuntimeLibraryError::Malformed {
                    what: "dynamic symbol entry size",
                });
            }
            let hash = |kind| {
                sections
                    .iter()
                    .find(|s| s.sh_type(endian) == kind && s.sh_link(endian) as usize == index)
                    .map(region)
            };
            Some(SymbolTables {
                symtab: region(dynsym),
                strtab: linked(dynsym, "the dynamic symbols' string table link")?,
                gnu_hash: hash(elf::SHT_GNU_HASH),
                sysv_hash: hash(elf::SHT_HASH),
            })
        }
    };
    if symbols.is_none() && soname.is_none() {
        return Ok(None);
    }
    Ok(Some(Tables {
        endian,
        source: Source::Sections,
        symbols,
        soname,
    }))
}

/// The first marker symbol, in table order, that the file exports.
fn find_marker_symbol<Elf: FileHeader<Endian = Endianness>, R: Read + Seek>(
    data: Data<'_, R>,
    endian: Endianness,
    tables: &SymbolTables,
) -> Result<Option<RuntimeLibraryIdentity>, RuntimeLibraryError> {
    let Some(hash) = HashTable::read::<Elf, R>(data, endian, tables)? else {
        return Ok(None);
    };
    for markers in RUNTIME_MARKERS {
        for name in markers.symbols {
            if hash.exports::<Elf, R>(data, endian, tables, name)? {
                return Ok(Some(RuntimeLibraryIdentity {
                    runtime: markers.runtime,
                    evidence: format!("dynamic symbol {name}"),
                }));
            }
        }
    }
    Ok(None)
}

/// The hash table the dynamic linker looks names up in (`DT_GNU_HASH`
/// first, as glibc does), its header read once for all the lookups.
#[derive(Debug, Clone, Copy)]
enum HashTable {
    /// GNU: `nbuckets` buckets, each the first index of a run of symbols
    /// from `symoffset` on, whose hash words (the chains) end a run with
    /// bit 0 set. The Bloom filter, a shortcut for misses, is skipped: it
    /// cannot turn a hit into a miss in a well-formed table.
    Gnu {
        table: Region,
        nbuckets: u64,
        symoffset: u64,
        /// Where the buckets and the chains start in `table`.
        buckets: u64,
        chains: u64,
    },
    /// System V: `nbucket` buckets and `nchain` chain links, one per
    /// symbol, each the index of the next symbol in the bucket.
    Sysv {
        table: Region,
        nbucket: u64,
        nchain: u64,
    },
}

impl HashTable {
    /// The file's hash table; `None` where it has none (or an empty one):
    /// then the loader finds no symbol in it either.
    fn read<Elf: FileHeader<Endian = Endianness>, R: Read + Seek>(
        data: Data<'_, R>,
        endian: Endianness,
        tables: &SymbolTables,
    ) -> Result<Option<HashTable>, RuntimeLibraryError> {
        if let Some(table) = tables.gnu_hash {
            let header: &[U32<Endianness>] = data.slice(table.at(0, 16, GNU_HASH)?, 4, GNU_HASH)?;
            let [nbuckets, symoffset, bloom_words, _shift] =
                [0, 1, 2, 3].map(|i| u64::from(header[i].get(endian)));
            let buckets = 16 + bloom_words * size_of::<Elf::Word>() as u64;
            return Ok((nbuckets > 0).then_some(HashTable::Gnu {
                table,
                nbuckets,
                symoffset,
                buckets,
                chains: buckets + nbuckets * 4,
            }));
        }
        if let Some(table) = tables.sysv_hash {
            let header: &[U32<Endianness>] =
                data.slice(table.at(0, 8, SYSV_HASH)?, 2, SYSV_HASH)?;
            let [nbucket, nchain] = [0, 1].map(|i| u64::from(header[i].get(endian)));
            return Ok((nbucket > 0).then_some(HashTable::Sysv {
                table,
                nbucket,
                nchain,
            }));
        }
        Ok(None)
    }

    /// Whether the file exports a definition of `name`, looked up as the
    /// dynamic linker looks it up.
    fn exports<Elf: FileHeader<Endian = Endianness>, R: Read + Seek>(
        self,
        data: Data<'_, R>,
        endian: Endianness,
        tables: &SymbolTables,
        name: &str,
    ) -> Result<bool, RuntimeLibraryError> {
        match self {
            HashTable::Gnu {
                table,
                nbuckets,
                symoffset,
                buckets,
                chains,
            } => {
                let word = |at: u64| data.u32(table.at(at, 4, GNU_HASH)?, endian, GNU_HASH);
                let hash = elf::gnu_hash(name.as_bytes());
                let first = u64::from(word(buckets + u64::from(hash) % nbuckets * 4)?);
                if first == 0 || first < symoffset {
                    return Ok(false);
                }
                // Each step is a new symbol index, so the walk ends at the
                // end bit, the end of the table's segment, or the budget.
                let mut index = first;
                loop {
                    let value = word(chains + (index - symoffset) * 4)?;
                    if value | 1 == hash | 1
                        && defines::<Elf, R>(data, endian, tables, index, name)?
                    {
                        return Ok(true);
                    }
                    if value & 1 == 1 {
                        return Ok(false);
                    }
                    index += 1;
                }
            }
            HashTable::Sysv {
                table,
                nbucket,
                nchain,
            } => {
                let word = |at: u64| data.u32(table.at(at, 4, SYSV_HASH)?, endian, SYSV_HASH);
                let hash = u64::from(elf::hash(name.as_bytes()));
                let chains = 8 + nbucket * 4;
                let mut index = u64::from(word(8 + hash % nbucket * 4)?);
                // A chain that loops is malformed, found by Brent's method
                // (no memory, at most about twice the steps): `saved` is the
                // index at the last power of two steps.
                let (mut saved, mut power, mut steps) = (index, 1u64, 0u64);
                // Index 0 (STN_UNDEF) ends a chain.
                while index != 0 {
                    if index >= nchain {
                        return Err(RuntimeLibraryError::Malformed {
                            what: "System V hash chain names a symbol past its count",
                        });
                    }
                    if defines::<Elf, R>(data, endian, tables, index, name)? {
                        return Ok(true);
                    }
                    index = u64::from(word(chains + index * 4)?);
                    if index == saved {
                        return Err(RuntimeLibraryError::Malformed {
                            what: "System V hash chain loops",
                        });
                    }
                    steps += 1;
                    if steps == power {
                        (saved, power, steps) = (index, power * 2, 0);
                    }
                }
                Ok(false)
            }
        }
    }
}

const GNU_HASH: &str = "GNU hash table";
const SYSV_HASH: &str = "System V hash table";

/// Whether dynamic symbol `index` is an exported definition named `name`.
fn defines<Elf: FileHeader<Endian = Endianness>, R: Read + Seek>(
    data: Data<'_, R>,
    endian: Endianness,
    tables: &SymbolTables,
    index: u64,
    name: &str,
) -> Result<bool, RuntimeLibraryError> {
    const WHAT: &str = "dynamic symbol a hash chain names";
    let size = size_of::<Elf::Sym>() as u64;
    let at = index
        .checked_mul(size)
        .ok_or(RuntimeLibraryError::Malformed { what: WHAT })?;
    let sym: &Elf::Sym = data.pod(tables.symtab.at(at, size, WHAT)?, WHAT)?;
    let exported = matches!(
        sym.st_bind(),
        elf::STB_GLOBAL | elf::STB_WEAK | elf::STB_GNU_UNIQUE
    );
    if sym.st_shndx(endian) == elf::SHN_UNDEF || !exported {
        return Ok(false);
    }
    // The name and its terminating NUL; a name that would run past the
    // string table is not this one.
    let want = name.len() as u64 + 1;
    let Ok(at) = tables
        .strtab
        .at(u64::from(sym.st_name(endian)), want, "symbol name")
    else {
        return Ok(false);
    };
    let bytes = data.bytes(at, want, "dynamic symbol name")?;
    Ok(bytes.strip_suffix(&[0]) == Some(name.as_bytes()))
}

/// The runtime the file's `DT_SONAME` names, if any.
fn by_soname<R: Read + Seek>(
    data: Data<'_, R>,
    tables: &Tables,
) -> Result<Option<RuntimeLibraryIdentity>, RuntimeLibraryError> {
    let Some((strtab, at)) = tables.soname else {
        return Ok(None);
    };
    let left =
        strtab
            .len
            .checked_sub(at)
            .filter(|l| *l > 0)
            .ok_or(RuntimeLibraryError::Malformed {
                what: "DT_SONAME is past the end of its string table",
            })?;
    let bytes = data.bytes(strtab.at(at, 0, "soname")?, left.min(SONAME_MAX), "soname")?;
    let soname = bytes.split(|b| *b == 0).next().unwrap_or(bytes);
    Ok(RUNTIME_MARKERS.iter().find_map(|markers| {
        markers
            .soname_prefixes
            .iter()
            .any(|prefix| soname.starts_with(prefix.as_bytes()))
            .then(|| RuntimeLibraryIdentity {
                runtime: markers.runtime,
                evidence: format!("soname {}", soname.escape_ascii()),
            })
    }))
}

/// What has been read against the budget, and an I/O error the cache could
/// only report as `()`.
struct Meter {
    max_bytes: u64,
    used: Cell<u64>,
    exhausted: Cell<bool>,
    io_error: RefCell<Option<io::Error>>,
}

impl Meter {
    fn charge(&self, bytes: u64) -> Result<(), ()> {
        let used = self
            .used
            .get()
            .saturating_add(bytes)
            .saturating_add(READ_OVERHEAD_BYTES);
        if used > self.max_bytes {
            self.exhausted.set(true);
            return Err(());
        }
        self.used.set(used);
        Ok(())
    }
}

/// The caller's reader, keeping the I/O errors that `ReadCache` drops.
struct Trap<'m, R> {
    inner: R,
    meter: &'m Meter,
}

impl<R> Trap<'_, R> {
    fn keep(&self, e: io::Error) -> io::Error {
        let kind = e.kind();
        *self.meter.io_error.borrow_mut() = Some(e);
        io::Error::from(kind)
    }
}

impl<R: Read> Read for Trap<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| self.keep(e))
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact(buf).map_err(|e| self.keep(e))
    }
}

impl<R: Seek> Seek for Trap<'_, R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos).map_err(|e| self.keep(e))
    }
}

/// The file as `object` reads it: the cache over the caller's reader, every
/// read checked against the file's length, then charged to the budget.
struct Data<'a, R: Read + Seek> {
    cache: &'a ReadCache<Trap<'a, R>>,
    meter: &'a Meter,
    len: u64,
}

impl<R: Read + Seek> Clone for Data<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: Read + Seek> Copy for Data<'_, R> {}

impl<'a, R: Read + Seek> ReadRef<'a> for Data<'a, R> {
    fn len(self) -> Result<u64, ()> {
        Ok(self.len)
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        if size == 0 {
            return Ok(&[]);
        }
        match offset.checked_add(size) {
            Some(end) if end <= self.len => {}
            _ => return Err(()),
        }
        // Checked before the cache allocates `size` bytes for the read.
        self.meter.charge(size)?;
        self.cache.read_bytes_at(offset, size)
    }

    fn read_bytes_at_until(self, range: Range<u64>, delimiter: u8) -> Result<&'a [u8], ()> {
        // Not called by this module; `object`'s string tables do. The cache
        // reads at most 4096 bytes for one: charge that much.
        self.meter
            .charge(range.end.saturating_sub(range.start).min(4096))?;
        self.cache.read_bytes_at_until(range, delimiter)
    }
}

impl<'a, R: Read + Seek> Data<'a, R> {
    /// The error for a failed read: the reader's or the budget's if either
    /// was the cause (each reported once), else `otherwise`.
    fn failure(self, otherwise: RuntimeLibraryError) -> RuntimeLibraryError {
        let what: &'static str = match &otherwise {
            RuntimeLibraryError::Truncated { what }
            | RuntimeLibraryError::Malformed { what }
            | RuntimeLibraryError::Budget { what, .. }
            | RuntimeLibraryError::Io { what, .. } => what,
            RuntimeLibraryError::NotElf => "ELF header",
        };
        if let Some(source) = self.meter.io_error.borrow_mut().take() {
            return RuntimeLibraryError::Io { what, source };
        }
        if self.meter.exhausted.replace(false) {
            return RuntimeLibraryError::Budget {
                what,
                max_bytes: self.meter.max_bytes,
            };
        }
        otherwise
    }

    /// `size` bytes at `offset`.
    fn bytes(
        self,
        offset: u64,
        size: u64,
        what: &'static str,
    ) -> Result<&'a [u8], RuntimeLibraryError> {
        match offset.checked_add(size) {
            Some(end) if end <= self.len => {}
            _ => return Err(RuntimeLibraryError::Truncated { what }),
        }
        self.read_bytes_at(offset, size)
            .map_err(|()| self.failure(RuntimeLibraryError::Truncated { what }))
    }

    /// A `T` at `offset`.
    fn pod<T: Pod>(self, offset: u64, what: &'static str) -> Result<&'a T, RuntimeLibraryError> {
        let bytes = self.bytes(offset, size_of::<T>() as u64, what)?;
        object::pod::from_bytes(bytes)
            .map(|(value, _)| value)
            .map_err(|()| RuntimeLibraryError::Malformed { what })
    }

    /// `count` `T`s at `offset`.
    fn slice<T: Pod>(
        self,
        offset: u64,
        count: u64,
        what: &'static str,
    ) -> Result<&'a [T], RuntimeLibraryError> {
        let size = count
            .checked_mul(size_of::<T>() as u64)
            .ok_or(RuntimeLibraryError::Truncated { what })?;
        let bytes = self.bytes(offset, size, what)?;
        let count = usize::try_from(count).map_err(|_| RuntimeLibraryError::Truncated { what })?;
        object::pod::slice_from_bytes(bytes, count)
            .map(|(values, _)| values)
            .map_err(|()| RuntimeLibraryError::Malformed { what })
    }

    /// A 32-bit word at `offset`.
    fn u32(
        self,
        offset: u64,
        endian: Endianness,
        what: &'static str,
    ) -> Result<u32, RuntimeLibraryError> {
        Ok(self.pod::<U32<Endianness>>(offset, what)?.get(endian))
    }
}

#[cfg(test)]
#[path = "runtime_library_tests.rs"]
mod tests;
