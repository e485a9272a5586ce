//! What the sensors look for. The agent loads these same lists into the
//! kernel's filter tables, so kernel and user space agree. (They move into
//! the signed policy bundles with the policy language.)

/// Path prefixes of accelerator device nodes.
pub const GPU_DEVICE_PREFIXES: &[&str] = &["/dev/nvidia", "/dev/dri/", "/dev/kfd", "/dev/accel/"];

/// File-name prefixes of AI runtime libraries, matched against executable
/// mappings (a library loaded by the dynamic linker or dlopen).
pub const AI_RUNTIME_LIBRARY_PREFIXES: &[&str] = &[
    "libonnxruntime",
    "onnxruntime_pybind11_state",
    "libtorch",
    "libc10",
    "libcuda",
    "libcublas",
    "libggml",
    "libllama",
    "libtensorflow",
    "libopenvino",
];

/// TCP ports used only by model servers: a listener is serving AI, a
/// connect is AI egress.
pub const AI_SERVING_PORTS: &[(u16, &str)] = &[(11434, "ollama")];

/// Hosts of hosted AI APIs and model hubs (`policies/lists/ai-api-hosts.txt`).
const AI_API_HOSTS: &str = include_str!("../../policies/lists/ai-api-hosts.txt");

/// The pattern of the AI API host list that `name` (lowercase, no trailing
/// dot) matches, if any.
pub fn ai_api_host(name: &str) -> Option<&'static str> {
    AI_API_HOSTS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .find(|pattern| match pattern.strip_prefix('*') {
            // `*.domain` and `*-suffix`: anything ending so, with a label before.
            Some(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
            None => name == *pattern,
        })
}

/// AI runtimes and model servers by executable name
/// (`policies/lists/ai-runtime-binaries.txt`).
const AI_RUNTIME_BINARIES: &str = include_str!("../../policies/lists/ai-runtime-binaries.txt");

/// (normalised name, entry) of every listed runtime, read once.
static RUNTIME_BINARIES: std::sync::LazyLock<Vec<(String, &'static str)>> =
    std::sync::LazyLock::new(|| {
        AI_RUNTIME_BINARIES
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|entry| (normalised(entry), entry))
            .collect()
    });

/// Lower case, `_` as `-`: `Text_Generation_Server` is `text-generation-server`.
fn normalised(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('_', "-")
}

/// The listed runtime `name` is (checked on every exec: no allocation).
fn runtime_binary(name: &str) -> Option<&'static str> {
    let fold = |b: u8| {
        if b == b'_' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        }
    };
    let name = name.trim().as_bytes();
    RUNTIME_BINARIES
        .iter()
        .find(|(norm, _)| {
            norm.len() == name.len() && norm.bytes().zip(name).all(|(a, &b)| a == fold(b))
        })
        .map(|(_, entry)| *entry)
}

/// The AI runtime or model server a process is, by name: its executable's
/// file name, its argv[0]'s, or, for a Python interpreter, the script it
/// runs (`koboldcpp.py`) or the module of `-m` (`python3 -m
/// vllm.entrypoints.openai.api_server`), its command line read as CPython
/// reads it (`-W ignore` and `-X dev` take an argument, `-um vllm` and
/// `-mvllm` are `-m vllm`, `--` ends the options).
pub fn ai_runtime_binary(exe: &str, argv: &[String]) -> Option<&'static str> {
    fn base(p: &str) -> &str {
        p.rsplit('/').next().unwrap_or(p)
    }
    let exe_name = base(exe);
    if let Some(found) = runtime_binary(exe_name) {
        return Some(found);
    }
    if let Some(found) = argv.first().and_then(|a0| runtime_binary(base(a0))) {
        return Some(found);
    }
    if !(exe_name.starts_with("python") || exe_name.starts_with("pypy")) {
        return None;
    }
    let module = |m: &str| runtime_binary(m.split('.').next().unwrap_or(m));
    let script = |s: &str| {
        let name = base(s);
        let stem = name
            .strip_suffix(".py")
            .or_else(|| name.strip_suffix(".pyz"))
            .unwrap_or(name);
        runtime_binary(stem)
    };
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.as_str();
        if arg == "--" {
            return script(args.next()?);
        }
        if arg == "--check-hash-based-pycs" {
            args.next();
            continue;
        }
        if arg.starts_with("--") {
            continue;
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            // The script (or `-`, standard input).
            return script(arg);
        };
        // Short options, combined: `-u`, `-OO`, `-um`, `-Werror`.
        for (i, c) in flags.char_indices() {
            let rest = &flags[i + c.len_utf8()..];
            match c {
                // A command string: no script to name.
                'c' => return None,
                'm' if rest.is_empty() => return module(args.next()?),
                'm' => return module(rest),
                'W' | 'X' => {
                    if rest.is_empty() {
                        args.next();
                    }
                    break;
                }
                _ => {}
            }
        }
    }
    None
}

/// Whether `name` (a file name, not a path) is an AI runtime library.
pub fn is_ai_runtime_library(name: &str) -> bool {
    AI_RUNTIME_LIBRARY_PREFIXES
        .iter()
        .any(|p| name.starts_with(p))
}

/// Whether `path` is an accelerator device node.
pub fn is_gpu_device(path: &str) -> bool {
    GPU_DEVICE_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// The model server known to use `port` exclusively, if any.
pub fn ai_serving_port(port: u16) -> Option<&'static str> {
    AI_SERVING_PORTS
        .iter()
        .find(|(p, _)| *p == port)
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_libraries_match_by_file_name_prefix() {
        assert!(is_ai_runtime_library("libonnxruntime.so.1.17.1"));
        assert!(is_ai_runtime_library("libtorch_cuda.so"));
        assert!(is_ai_runtime_library("libcudart.so.12"));
        assert!(is_ai_runtime_library(
            "onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so"
        ));
        assert!(!is_ai_runtime_library("libc.so.6"));
        assert!(!is_ai_runtime_library("libssl.so.3"));
    }

    #[test]
    fn ai_api_hosts_match_exactly_or_under_a_wildcard() {
        assert_eq!(ai_api_host("api.openai.com"), Some("api.openai.com"));
        assert_eq!(
            ai_api_host("myco.openai.azure.com"),
            Some("*.openai.azure.com")
        );
        assert_eq!(
            ai_api_host("us-central1-aiplatform.googleapis.com"),
            Some("*-aiplatform.googleapis.com")
        );
        assert_eq!(ai_api_host("openai.azure.com"), None);
        assert_eq!(ai_api_host("openai.com"), None);
        assert_eq!(ai_api_host("evilapi.openai.com.example"), None);
        assert_eq!(ai_api_host("deb.debian.org"), None);
        assert_eq!(ai_api_host("# OpenAI and Azure OpenAI"), None);
    }

    #[test]
    fn gpu_nodes_and_ports() {
        assert!(is_gpu_device("/dev/nvidia0"));
        assert!(is_gpu_device("/dev/nvidiactl"));
        assert!(is_gpu_device("/dev/dri/renderD128"));
        assert!(is_gpu_device("/dev/kfd"));
        assert!(!is_gpu_device("/dev/null"));
        assert_eq!(ai_serving_port(11434), Some("ollama"));
    }

    #[test]
    fn ai_servers_are_known_by_executable_argv0_script_or_module_and_only_by_whole_name() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ai_runtime_binary("/usr/local/bin/ollama", &argv(&["ollama", "serve"])),
            Some("ollama")
        );
        assert_eq!(
            ai_runtime_binary("/opt/x/Llama-Server", &[]),
            Some("llama-server")
        );
        // Renamed on disk but not in argv[0] (exec -a works the other way).
        assert_eq!(
            ai_runtime_binary("/tmp/x", &argv(&["llama-server", "-m", "m.gguf"])),
            Some("llama-server")
        );
        assert_eq!(
            ai_runtime_binary(
                "/usr/bin/python3.11",
                &argv(&["python3", "-u", "-m", "vllm.entrypoints.openai.api_server"])
            ),
            Some("vllm")
        );
        assert_eq!(
            ai_runtime_binary(
                "/usr/bin/python3",
                &argv(&["python3", "/usr/local/bin/text_generation_server"])
            ),
            Some("text-generation-server")
        );
        // Python's command line as CPython reads it: options with an
        // argument, combined and attached `-m`, a `.py` script, `--`, PyPy.
        for cmd in [
            &[
                "python3",
                "-W",
                "ignore",
                "-m",
                "vllm.entrypoints.openai.api_server",
            ][..],
            &["python3", "-X", "faulthandler", "-m", "vllm"],
            &["python3", "-mvllm.entrypoints.openai.api_server"],
            &["python3", "-um", "vllm"],
            &["python3", "-Werror", "-OO", "-m", "vllm"],
            &["python3", "--check-hash-based-pycs", "never", "-m", "vllm"],
            &["python3", "-u", "--", "/opt/vllm.py"],
            &[
                "python3",
                "/opt/koboldcpp/koboldcpp.py",
                "--model",
                "m.gguf",
            ],
        ] {
            let want = if cmd.iter().any(|a| a.contains("kobold")) {
                Some("koboldcpp")
            } else {
                Some("vllm")
            };
            assert_eq!(
                ai_runtime_binary("/usr/bin/python3.11", &argv(cmd)),
                want,
                "{cmd:?}"
            );
        }
        assert_eq!(
            ai_runtime_binary("/usr/bin/pypy3", &argv(&["pypy3", "-m", "vllm"])),
            Some("vllm")
        );
        // A command string names no script; `-W`'s argument is not one.
        assert_eq!(
            ai_runtime_binary("/usr/bin/python3", &argv(&["python3", "-c", "import vllm"])),
            None
        );
        assert_eq!(
            ai_runtime_binary(
                "/usr/bin/python3",
                &argv(&["python3", "-W", "vllm", "app.py"])
            ),
            None
        );
        // Benign look-alikes.
        assert_eq!(
            ai_runtime_binary("/usr/bin/ollama-docs", &argv(&["ollama-docs"])),
            None
        );
        assert_eq!(
            ai_runtime_binary("/usr/bin/python3", &argv(&["python3", "-m", "http.server"])),
            None
        );
        assert_eq!(
            ai_runtime_binary("/usr/bin/vim", &argv(&["vim", "vllm"])),
            None
        );
        assert_eq!(ai_serving_port(8080), None);
    }
}
