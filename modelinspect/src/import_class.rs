//! What a global a pickle imports is: a known PyTorch, NumPy or
//! collections reconstruction function (safe), something known to run
//! commands or code or to reach the network or the disk (dangerous), or
//! neither (unknown).
//!
//! The dangerous lists hold everything picklescan (1.0.5) and modelscan
//! (0.8) call unsafe, and more. Matching is conservative:
//! - a dangerous module covers its submodules (`os` covers `os.path`);
//! - Python 2 names are mapped as `pickle` maps them on load (`__builtin__`
//!   is `builtins`, `commands` is `subprocess`), and either spelling being
//!   dangerous is enough;
//! - a dotted name (protocol 4 walks it attribute by attribute, so
//!   `torch._utils` + `os.system` reaches `os.system` through the module's
//!   own `import os`) is dangerous when any of its parts names a dangerous
//!   module, a code-running function, or an attribute that reaches
//!   interpreter internals (`__globals__`, `__subclasses__`...);
//! - a few names run commands or code whatever module they are taken
//!   from (`system`, `popen`, `exec*`, `spawn*`, `Popen`, `eval`...), since
//!   `from os import system` in any module makes `module.system` os.system.
//!
//! Safe is an exact list: what `torch.save` and NumPy's pickling write,
//! as PyTorch's own `weights_only` unpickler allows.

use crate::report::ImportClass;

/// Modules whose every global, and every submodule's, is dangerous.
const DANGEROUS_MODULES: &[&str] = &[
    // Processes, commands.
    "os",
    "posix",
    "nt",
    "posixpath",
    "ntpath",
    "subprocess",
    "_posixsubprocess",
    "commands",
    "popen2",
    "pty",
    "pipes",
    "platform",
    "_winapi",
    "winreg",
    "_winreg",
    "msvcrt",
    "multiprocessing",
    "_multiprocessing",
    "asyncio",
    "_osx_support",
    "_aix_support",
    "_pyrepl",
    "uuid",
    // Code: compiling, running, importing, debugging, profiling.
    "runpy",
    "code",
    "codeop",
    "importlib",
    "imp",
    "_imp",
    "zipimport",
    "pkgutil",
    "pydoc",
    "timeit",
    "pdb",
    "bdb",
    "cProfile",
    "profile",
    "trace",
    "doctest",
    "idlelib",
    "lib2to3",
    "test",
    "IPython",
    "sys",
    "ctypes",
    "_ctypes",
    "cffi",
    "marshal",
    "cloudpickle",
    "dill",
    // Nested pickles.
    "pickle",
    "_pickle",
    "cPickle",
    "shelve",
    // Files.
    "shutil",
    "sqlite3",
    "dbm",
    "logging.handlers",
    "logging.config",
    // Installers and environments.
    "venv",
    "ensurepip",
    "distutils",
    "setuptools",
    "pip",
    // Network.
    "socket",
    "_socket",
    "ssl",
    "_ssl",
    "socketserver",
    "SocketServer",
    "asyncore",
    "asynchat",
    "smtpd",
    "http.client",
    "http.server",
    "http.cookiejar",
    "httplib",
    "urllib",
    "urllib2",
    "urllib3",
    "requests",
    "httpx",
    "aiohttp",
    "ftplib",
    "telnetlib",
    "smtplib",
    "poplib",
    "imaplib",
    "nntplib",
    "xmlrpc",
    "xmlrpclib",
    "webbrowser",
    "antigravity",
    // Libraries' loaders, code generators and shell-outs.
    "numpy.f2py",
    "numpy.testing",
    "numpy.distutils",
    "numpy.ctypeslib",
    "numpy.lib.npyio",
    "numpy.lib._npyio_impl",
    "numpy.lib.format",
    "pandas.io.pickle",
    "pandas.core.computation",
    "torch.hub",
    "torch.package",
    "torch.utils.cpp_extension",
    "torch.utils.collect_env",
    "torch.utils.bottleneck",
    "torch.utils._config_module",
    "torch.utils.data.datapipes.utils.decoder",
    "torch._inductor.codecache",
    "torch.jit.unsupported_tensor_ops",
    "torch.distributed.rpc",
    // A pickled fx GraphModule execs the source it carries
    // (`reduce_graph_module`, `_forward_from_src`, `_exec_with_source`).
    "torch.fx.graph_module",
    // Compilers, test and benchmark helpers: shell-outs, code generation.
    "torch._inductor",
    "torch._dynamo",
    "torch.testing",
    "torch.utils.benchmark",
    // Run code of their own: sub-interpreters, .pth files, YAML tags,
    // JSON-encoded pickles, expression evaluators.
    "_xxsubinterpreters",
    "_interpreters",
    "concurrent.interpreters",
    "_testcapi",
    "_testinternalcapi",
    "site",
    "yaml",
    "jsonpickle",
    "numexpr",
];

/// Globals of a dangerous module that are plain values (`uuid.UUID`):
/// unknown, not dangerous.
const BENIGN_IN_DANGEROUS: &[(&str, &[&str])] = &[("uuid", &["UUID", "SafeUUID"])];

/// Dangerous globals of modules that are otherwise not: the name itself,
/// or as the first part of a dotted name (`Popen.__init__`).
const DANGEROUS_NAMES: &[(&str, &[&str])] = &[
    (
        "builtins",
        &[
            "eval",
            "exec",
            "execfile",
            "compile",
            "__import__",
            "getattr",
            "setattr",
            "delattr",
            "open",
            "file",
            "input",
            "raw_input",
            "breakpoint",
            "globals",
            "locals",
            "vars",
            "apply",
            "reload",
            "help",
            "__loader__",
            "__build_class__",
        ],
    ),
    (
        "types",
        &["CodeType", "FunctionType", "LambdaType", "CellType"],
    ),
    ("functools", &["partial", "partialmethod", "reduce"]),
    ("_functools", &["partial", "reduce"]),
    (
        "operator",
        &["attrgetter", "itemgetter", "methodcaller", "call"],
    ),
    (
        "_operator",
        &["attrgetter", "itemgetter", "methodcaller", "call"],
    ),
    ("logging", &["FileHandler"]),
    ("io", &["FileIO", "open", "open_code"]),
    ("_io", &["FileIO", "open", "open_code"]),
    ("torch", &["load", "save", "from_file", "hub"]),
    (
        "torch.serialization",
        &[
            "load",
            "_load",
            "_legacy_load",
            "save",
            "_save",
            "_legacy_save",
        ],
    ),
    ("torch.jit", &["load", "_load_for_lite_interpreter"]),
    ("torch.jit._serialization", &["load"]),
    ("torch._dynamo.guards", &["GuardBuilder.get"]),
    (
        "torch.fx.experimental.symbolic_shapes",
        &["ShapeEnv.evaluate_guards_expression"],
    ),
    (
        "numpy",
        &[
            "load",
            "loadtxt",
            "genfromtxt",
            "fromfile",
            "memmap",
            "save",
            "savez",
            "savez_compressed",
            "savetxt",
        ],
    ),
    ("joblib", &["load"]),
    // Files written or truncated.
    ("codecs", &["open"]),
    ("gzip", &["open", "GzipFile"]),
    ("bz2", &["open", "BZ2File"]),
    ("lzma", &["open", "LZMAFile"]),
    ("tarfile", &["open", "TarFile"]),
    ("zipfile", &["ZipFile", "PyZipFile"]),
    ("joblib.numpy_pickle", &["load"]),
    ("pandas", &["read_pickle", "eval"]),
];

/// Names that run commands or code whatever module they come from, as a
/// name or as any part of a dotted one.
const DANGEROUS_ANYWHERE: &[&str] = &[
    "system",
    "popen",
    "popen2",
    "popen3",
    "popen4",
    "Popen",
    "execl",
    "execle",
    "execlp",
    "execlpe",
    "execv",
    "execve",
    "execvp",
    "execvpe",
    "spawnl",
    "spawnle",
    "spawnlp",
    "spawnlpe",
    "spawnv",
    "spawnve",
    "spawnvp",
    "spawnvpe",
    "posix_spawn",
    "posix_spawnp",
    "check_output",
    "check_call",
    "getoutput",
    "getstatusoutput",
    "eval",
    "exec",
    "execfile",
    "__import__",
    "import_module",
    "_run_code",
    "_run_module_code",
    "run_path",
    "runcode",
    "runsource",
    "runstring",
    "run_string",
    "run_in_subinterp",
    "sympify",
    "parse_expr",
    "lambdify",
];

/// `pathlib` paths are plain values (checkpoints hold them), but a method
/// of one, reached by a dotted name (`pathlib.Path.write_text`), writes,
/// deletes or renames files.
const PATH_MODULES: &[&str] = &["pathlib", "pathlib._local", "pathlib._abc"];

/// Modules whose object, reached as another module's attribute
/// (`torch._utils.sys`, through its `import sys`), only serves to reach
/// what they hold.
const MODULE_OBJECTS: &[&str] = &[
    "os",
    "posix",
    "nt",
    "sys",
    "subprocess",
    "builtins",
    "__builtin__",
    "importlib",
    "ctypes",
    "pickle",
    "marshal",
    "socket",
    "shutil",
    "runpy",
    "pty",
];

/// Attributes that reach interpreter internals: dangerous as any part of a
/// dotted name.
const DANGEROUS_ATTRIBUTES: &[&str] = &[
    "__globals__",
    "__builtins__",
    "__subclasses__",
    "__code__",
    "__closure__",
    "__getattribute__",
    "__getattr__",
    "__setattr__",
    "__delattr__",
    "__dict__",
    "__class__",
    "__base__",
    "__bases__",
    "__mro__",
    "__func__",
    "__self__",
    "__module__",
    "__spec__",
    "__loader__",
    "__reduce__",
    "__reduce_ex__",
    "__init_subclass__",
    "__import__",
    "builtins",
    "__builtin__",
    "getattr",
    "setattr",
    "delattr",
    "globals",
    "locals",
    "vars",
    "compile",
    "open",
    "breakpoint",
];

/// PyTorch dtypes, layouts, memory formats and quantization schemes: the
/// values `torch.<name>` a checkpoint names.
const TORCH_VALUES: &[&str] = &[
    "float32",
    "float",
    "float64",
    "double",
    "float16",
    "half",
    "bfloat16",
    "complex32",
    "chalf",
    "complex64",
    "cfloat",
    "complex128",
    "cdouble",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "short",
    "int32",
    "int",
    "int64",
    "long",
    "bool",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    "bits8",
    "bits16",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "int1",
    "int2",
    "int3",
    "int4",
    "int5",
    "int6",
    "int7",
    "uint1",
    "uint2",
    "uint3",
    "uint4",
    "uint5",
    "uint6",
    "uint7",
    "strided",
    "sparse_coo",
    "sparse_csr",
    "sparse_csc",
    "sparse_bsr",
    "sparse_bsc",
    "_mkldnn",
    "jagged",
    "contiguous_format",
    "channels_last",
    "channels_last_3d",
    "preserve_format",
    "per_tensor_affine",
    "per_channel_affine",
    "per_tensor_symmetric",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
    "Size",
    "Tensor",
    "device",
    "dtype",
    "layout",
    "memory_format",
    "qscheme",
    "UntypedStorage",
    "TypedStorage",
];

/// Exact safe globals besides `TORCH_VALUES` and the storage and tensor
/// classes.
const SAFE: &[(&str, &[&str])] = &[
    (
        "torch._utils",
        &[
            "_rebuild_tensor",
            "_rebuild_tensor_v2",
            "_rebuild_tensor_v3",
            "_rebuild_parameter",
            "_rebuild_parameter_with_state",
            "_rebuild_qtensor",
            "_rebuild_sparse_tensor",
            "_rebuild_sparse_csr_tensor",
            "_rebuild_meta_tensor_no_storage",
            "_rebuild_nested_tensor",
            "_rebuild_wrapper_subclass",
            "_rebuild_device_tensor_from_cpu_tensor",
            "_rebuild_device_tensor_from_numpy",
            "_rebuild_xla_tensor",
        ],
    ),
    ("torch._tensor", &["_rebuild_from_type_v2", "Tensor"]),
    ("torch.storage", &["UntypedStorage", "TypedStorage"]),
    (
        "torch.nn.parameter",
        &[
            "Parameter",
            "Buffer",
            "UninitializedParameter",
            "UninitializedBuffer",
        ],
    ),
    ("torch.nn", &["Parameter"]),
    ("torch.serialization", &["_get_layout"]),
    (
        "torch.jit._pickle",
        &[
            "build_intlist",
            "build_doublelist",
            "build_boollist",
            "build_tensorlist",
            "build_tensor_from_id",
            "restore_type_tag",
        ],
    ),
    ("collections", &["OrderedDict", "Counter"]),
    (
        "builtins",
        &[
            "set",
            "frozenset",
            "slice",
            "complex",
            "bytearray",
            "bytes",
            "range",
            "int",
            "float",
            "bool",
            "str",
            "tuple",
            "list",
            "dict",
        ],
    ),
    ("_codecs", &["encode"]),
    ("numpy", &["ndarray", "dtype"]),
    ("numpy.core.multiarray", &["_reconstruct", "scalar"]),
    ("numpy._core.multiarray", &["_reconstruct", "scalar"]),
    ("numpy.core.numeric", &["_frombuffer"]),
    ("numpy._core.numeric", &["_frombuffer"]),
];

/// How a global `module.name` that a pickle imports is classed.
pub fn classify_import(module: &str, name: &str) -> ImportClass {
    // A name the walker could not resolve (built at run time, hidden).
    if module == "?" || name == "?" {
        return ImportClass::Dangerous;
    }
    let plain = classify_exact(module, name);
    let (m3, n3) = python3_name(module, name);
    let mapped = classify_exact(m3, n3);
    if plain == ImportClass::Dangerous || mapped == ImportClass::Dangerous {
        ImportClass::Dangerous
    } else if plain == ImportClass::Safe || mapped == ImportClass::Safe {
        ImportClass::Safe
    } else {
        ImportClass::Unknown
    }
}

/// `module` is `prefix` or one of its submodules.
fn under(module: &str, prefix: &str) -> bool {
    module
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// `name` is `entry`, or an attribute path below it.
fn names(name: &str, entry: &str) -> bool {
    under(name, entry)
}

fn classify_exact(module: &str, name: &str) -> ImportClass {
    let parts = || name.split('.');
    if parts().any(|p| DANGEROUS_ANYWHERE.contains(&p)) {
        return ImportClass::Dangerous;
    }
    if name.contains('.')
        && parts().any(|p| {
            DANGEROUS_ATTRIBUTES.contains(&p)
                || DANGEROUS_MODULES
                    .iter()
                    .any(|m| !m.contains('.') && *m == p)
        })
    {
        return ImportClass::Dangerous;
    }
    if name.contains('.') && PATH_MODULES.contains(&module) {
        return ImportClass::Dangerous;
    }
    // A single name that is an interpreter internal (`x.__dict__`,
    // `x.__builtins__`) or a dangerous module's object (`x.os`).
    if !name.contains('.')
        && ((name.starts_with("__") && DANGEROUS_ATTRIBUTES.contains(&name))
            || MODULE_OBJECTS.contains(&name))
    {
        return ImportClass::Dangerous;
    }
    if DANGEROUS_MODULES.iter().any(|m| under(module, m)) {
        let benign = BENIGN_IN_DANGEROUS
            .iter()
            .any(|(m, ns)| *m == module && ns.contains(&name));
        return if benign {
            ImportClass::Unknown
        } else {
            ImportClass::Dangerous
        };
    }
    let builtins = matches!(module, "__builtin__" | "__builtins__");
    if DANGEROUS_NAMES.iter().any(|(m, ns)| {
        (*m == module || (builtins && *m == "builtins")) && ns.iter().any(|e| names(name, e))
    }) {
        return ImportClass::Dangerous;
    }
    if is_safe(module, name) {
        ImportClass::Safe
    } else {
        ImportClass::Unknown
    }
}

fn is_safe(module: &str, name: &str) -> bool {
    if SAFE
        .iter()
        .any(|(m, ns)| *m == module && ns.contains(&name))
    {
        return true;
    }
    let ident = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric());
    match module {
        "torch" => {
            TORCH_VALUES.contains(&name)
                || (ident && (name.ends_with("Storage") || name.ends_with("Tensor")))
        }
        // Legacy CUDA storages and tensor types.
        "torch.cuda" => ident && (name.ends_with("Storage") || name.ends_with("Tensor")),
        "numpy.dtypes" => ident && name.ends_with("DType"),
        _ => false,
    }
}

/// The Python 3 name `pickle` loads a Python 2 global as
/// (`_compat_pickle`, with `fix_imports`, the default).
fn python3_name<'a>(module: &'a str, name: &'a str) -> (&'a str, &'a str) {
    match (module, name) {
        ("__builtin__", "reduce") => return ("functools", "reduce"),
        ("__builtin__", "intern") => return ("sys", "intern"),
        ("__builtin__", "raw_input") => return ("builtins", "input"),
        ("urllib", "urlopen" | "urlretrieve") => return ("urllib.request", name),
        _ => {}
    }
    let m = match module {
        "__builtin__" | "__builtins__" | "exceptions" => "builtins",
        "copy_reg" => "copyreg",
        "cPickle" => "pickle",
        "commands" => "subprocess",
        "urllib2" => "urllib.request",
        "httplib" => "http.client",
        "SocketServer" => "socketserver",
        "xmlrpclib" => "xmlrpc.client",
        "SimpleXMLRPCServer" | "DocXMLRPCServer" => "xmlrpc.server",
        "BaseHTTPServer" | "SimpleHTTPServer" | "CGIHTTPServer" => "http.server",
        "cookielib" => "http.cookiejar",
        "thread" => "_thread",
        "_winreg" => "winreg",
        "anydbm" | "whichdb" => "dbm",
        "dbhash" => "dbm.bsd",
        "dumbdbm" => "dbm.dumb",
        "gdbm" => "dbm.gnu",
        "UserDict" | "UserList" | "UserString" => "collections",
        "StringIO" | "cStringIO" => "io",
        other => other,
    };
    (m, name)
}

#[cfg(test)]
mod tests {
    use super::classify_import;
    use crate::report::ImportClass::{Dangerous, Safe, Unknown};

    #[test]
    fn torch_and_numpy_reconstruction_is_safe() {
        for (m, n) in [
            ("torch._utils", "_rebuild_tensor_v2"),
            ("torch._utils", "_rebuild_tensor"),
            ("torch._utils", "_rebuild_parameter"),
            ("torch._utils", "_rebuild_parameter_with_state"),
            ("torch._utils", "_rebuild_qtensor"),
            ("torch._tensor", "_rebuild_from_type_v2"),
            ("torch", "FloatStorage"),
            ("torch", "HalfStorage"),
            ("torch", "BFloat16Storage"),
            ("torch", "LongStorage"),
            ("torch", "UntypedStorage"),
            ("torch.cuda", "FloatStorage"),
            ("torch", "Size"),
            ("torch", "device"),
            ("torch", "float16"),
            ("torch", "bfloat16"),
            ("torch", "strided"),
            ("torch.nn.parameter", "Parameter"),
            ("collections", "OrderedDict"),
            ("builtins", "set"),
            ("__builtin__", "set"),
            ("builtins", "frozenset"),
            ("builtins", "slice"),
            ("builtins", "complex"),
            ("builtins", "bytearray"),
            ("__builtin__", "bytes"),
            ("_codecs", "encode"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.dtypes", "Float32DType"),
        ] {
            assert_eq!(classify_import(m, n), Safe, "{m}.{n}");
        }
    }

    #[test]
    fn code_commands_network_and_files_are_dangerous() {
        for (m, n) in [
            ("os", "system"),
            ("os", "getcwd"),
            ("os.path", "join"),
            ("posix", "system"),
            ("nt", "system"),
            ("posixpath", "expanduser"),
            ("subprocess", "Popen"),
            ("subprocess", "check_output"),
            ("commands", "getoutput"),
            ("builtins", "eval"),
            ("builtins", "exec"),
            ("builtins", "compile"),
            ("builtins", "__import__"),
            ("builtins", "getattr"),
            ("builtins", "setattr"),
            ("builtins", "open"),
            ("builtins", "breakpoint"),
            ("builtins", "globals"),
            ("__builtin__", "eval"),
            ("__builtin__", "apply"),
            ("__builtin__", "intern"),
            ("runpy", "_run_code"),
            ("socket", "create_connection"),
            ("shutil", "rmtree"),
            ("webbrowser", "open"),
            ("pty", "spawn"),
            ("importlib", "import_module"),
            ("importlib.util", "spec_from_file_location"),
            ("pickle", "loads"),
            ("_pickle", "Unpickler"),
            ("cPickle", "loads"),
            ("marshal", "loads"),
            ("types", "CodeType"),
            ("types", "FunctionType"),
            ("code", "InteractiveInterpreter"),
            ("ctypes", "CDLL"),
            ("sys", "modules"),
            ("asyncio.subprocess", "create_subprocess_shell"),
            ("multiprocessing.popen_fork", "Popen"),
            ("requests", "get"),
            ("requests.api", "post"),
            ("urllib.request", "urlopen"),
            ("urllib", "urlopen"),
            ("urllib2", "urlopen"),
            ("http.client", "HTTPSConnection"),
            ("httplib", "HTTPSConnection"),
            ("ftplib", "FTP"),
            ("telnetlib", "Telnet"),
            ("smtplib", "SMTP"),
            ("aiohttp.client", "ClientSession"),
            ("httpx", "get"),
            ("torch.hub", "load"),
            ("torch", "load"),
            ("torch.serialization", "load"),
            ("operator", "attrgetter"),
            ("_operator", "methodcaller"),
            ("functools", "partial"),
            ("numpy", "load"),
            ("numpy.testing._private.utils", "runstring"),
            ("numpy.f2py", "compile"),
            ("timeit", "timeit"),
            ("pdb", "run"),
            ("bdb", "Bdb"),
            ("cProfile", "run"),
            ("profile", "runctx"),
            ("trace", "Trace"),
            ("idlelib.pyshell", "ModifiedInterpreter"),
            ("venv", "create"),
            ("distutils.file_util", "write_file"),
            ("setuptools", "setup"),
            ("pip", "main"),
            ("pydoc", "pipepager"),
            ("uuid", "_get_command_stdout"),
            ("logging", "FileHandler"),
            ("_io", "FileIO"),
            ("cloudpickle.cloudpickle", "_make_function"),
            ("dill._dill", "_create_code"),
            ("ssl", "get_server_certificate"),
            ("pkgutil", "resolve_name"),
            ("joblib", "load"),
            ("pandas", "read_pickle"),
            ("?", "?"),
        ] {
            assert_eq!(classify_import(m, n), Dangerous, "{m}.{n}");
        }
    }

    #[test]
    fn dotted_names_cannot_walk_out_of_a_safe_module() {
        for (m, n) in [
            ("torch._utils", "os.system"),
            ("torch.serialization", "sys.modules"),
            ("torch._utils", "_rebuild_tensor_v2.__globals__"),
            ("collections", "OrderedDict.__class__.__subclasses__"),
            ("builtins", "getattr.__self__"),
            ("subprocess", "Popen.__init__"),
            ("mymodule", "system"),
            ("some.module", "Popen"),
        ] {
            assert_eq!(classify_import(m, n), Dangerous, "{m}.{n}");
        }
    }

    #[test]
    fn code_runners_outside_the_usual_lists_are_dangerous() {
        for (m, n) in [
            // exec of the source a pickled GraphModule carries
            ("torch.fx.graph_module", "reduce_graph_module"),
            ("torch.fx.graph_module", "_forward_from_src"),
            ("torch.testing._internal.common_utils", "shell"),
            ("torch._inductor.cpp_builder", "run_compile_cmd"),
            (
                "torch.utils.benchmark.utils.valgrind_wrapper.timer_interface",
                "wrapper_singleton",
            ),
            ("_xxsubinterpreters", "run_string"),
            ("_interpreters", "exec"),
            ("_testcapi", "run_in_subinterp"),
            ("site", "addsitedir"),
            ("yaml", "unsafe_load"),
            ("jsonpickle", "decode"),
            ("numexpr", "evaluate"),
            ("sympy", "sympify"),
            ("sympy.parsing.sympy_parser", "parse_expr"),
            // files written
            ("pathlib", "Path.write_text"),
            ("pathlib", "PosixPath.unlink"),
            ("codecs", "open"),
            ("tarfile", "open"),
            ("zipfile", "ZipFile"),
            // a dangerous module or an interpreter internal as another
            // module's attribute
            ("torch._utils", "sys"),
            ("collections", "os"),
            ("torch", "__builtins__"),
            ("builtins", "__dict__"),
        ] {
            assert_eq!(classify_import(m, n), Dangerous, "{m}.{n}");
        }
        for (m, n) in [("pathlib", "PosixPath"), ("pathlib", "WindowsPath")] {
            assert_eq!(classify_import(m, n), Unknown, "{m}.{n}");
        }
    }

    #[test]
    fn everything_else_is_unknown() {
        for (m, n) in [
            ("collections", "defaultdict"),
            ("torch.storage", "_load_from_bytes"),
            ("tempfile", "mkdtemp"),
            ("__main__", "Net"),
            ("copyreg", "_reconstructor"),
            ("argparse", "Namespace"),
            ("uuid", "UUID"),
            ("torch", "nonexistent_thing"),
            ("torch", "Float.Storage"),
            ("osmosis", "system_status"),
            ("builtins", "object"),
            ("", ""),
        ] {
            assert_eq!(classify_import(m, n), Unknown, "{m}.{n}");
        }
    }
}
