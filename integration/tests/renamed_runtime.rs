//! AI runtime libraries copied under names that say nothing and loaded
//! with dlopen (Python's ctypes) are known by their ELF content on the real
//! kernel (issue #27): every process that loads one is found, a library
//! rewritten in place is judged again, and ordinary libraries, even ones
//! that only call a runtime's functions, stay silent. Runs as root.

use std::path::Path;
use std::process::Command;

use vigil_integration::alert_filter::{file_path_of, pid_of, summaries_under};
use vigil_integration::{compile_c, privileged, AgentHost};
use vigil_proto::types::v1::SignalKind;

/// Loads `lib` with ctypes (dlopen) and exits; the pid.
fn dlopen(lib: &Path) -> u32 {
    let mut child = Command::new("python3")
        .args(["-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])"])
        .arg(lib)
        .spawn()
        .expect("python3");
    let pid = child.id();
    assert!(child.wait().unwrap().success(), "loading {}", lib.display());
    pid
}

/// A shared library built from `source` as `name`, with extra linker
/// arguments (a soname).
fn library(dir: &Path, name: &str, source: &str, args: &[&str]) -> std::path::PathBuf {
    let mut all = vec!["-shared", "-fPIC"];
    all.extend_from_slice(args);
    compile_c(dir, name, source, &all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_ai_runtime_libraries_are_known_by_content_and_ordinary_ones_are_not() {
    if !privileged("renamed_ai_runtime_libraries_are_known_by_content_and_ordinary_ones_are_not") {
        return;
    }
    let h = AgentHost::start("renamed-runtime").await;
    let dir = h.dir.join("libs");
    let benign = h.dir.join("benign");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&benign).unwrap();

    // Ordinary libraries first: one that only calls cudaMalloc (imported
    // from a stub it links, which defines it and so is itself a "CUDA
    // runtime", kept apart), one with look-alike symbols, a plain one.
    let stubs = h.dir.join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let stub = library(
        &stubs,
        "libstub.so",
        "void *cudaMalloc(void **p, unsigned long n) { return 0; }\n",
        &["-Wl,-soname,libstub.so"],
    );
    let caller = library(
        &benign,
        "helper.so",
        "void *cudaMalloc(void **p, unsigned long n);\nvoid go(void) { void *p; cudaMalloc(&p, 1); }\n",
        &[
            "-Wl,--no-as-needed",
            "-L",
            stubs.to_str().unwrap(),
            "-lstub",
            &format!("-Wl,-rpath,{}", stubs.display()),
        ],
    );
    let lookalike = library(
        &benign,
        "plugin.bin",
        "int OrtGetApiBase_v2(void) { return 1; }\nint ggml_init_done = 1;\n",
        &[],
    );
    let plain = library(
        &benign,
        "libplain.so",
        "int add(int a, int b) { return a + b; }\n",
        &[],
    );
    for lib in [&caller, &lookalike, &plain] {
        dlopen(lib);
    }
    assert!(stub.exists());

    // ONNX Runtime's entry point under a name that says nothing.
    let ort = library(
        &dir,
        "libfoo.so",
        "struct OrtApiBase { void *a, *b; };\nstatic struct OrtApiBase base;\nconst struct OrtApiBase *OrtGetApiBase(void) { return &base; }\n",
        &[],
    );
    let first = dlopen(&ort);
    let a = h
        .alert("ai_runtime for the renamed onnxruntime", |a| {
            pid_of(a) == first && a.finding.as_ref().unwrap().signal() == SignalKind::AiRuntime
        })
        .await;
    assert_eq!(file_path_of(&a), ort.to_str().unwrap());
    let summary = &a.finding.as_ref().unwrap().summary;
    assert!(
        summary.contains("AI runtime library onnxruntime (dynamic symbol OrtGetApiBase)"),
        "{summary}"
    );
    // Every other process loading it is found too (the kernel sends every
    // mapping of a file version known to be a runtime), one after another
    // at once as a worker pool would.
    let others: Vec<u32> = (0..3).map(|_| dlopen(&ort)).collect();
    for pid in others {
        h.alert("ai_runtime for another load", move |a| {
            pid_of(a) == pid && a.finding.as_ref().unwrap().signal() == SignalKind::AiRuntime
        })
        .await;
    }

    // From a memfd, by /proc/self/fd (no file on any disk): the mapping
    // itself is read, through /proc/PID/map_files.
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import ctypes, os, sys, time\nfd = os.memfd_create('kernels')\nos.write(fd, open(sys.argv[1], 'rb').read())\nctypes.CDLL(f'/proc/self/fd/{fd}')\ntime.sleep(1)",
        ])
        .arg(&ort)
        .spawn()
        .unwrap();
    let in_memory = child.id();
    let a = h
        .alert("ai_runtime for the library in a memfd", |a| {
            pid_of(a) == in_memory && a.finding.as_ref().unwrap().signal() == SignalKind::AiRuntime
        })
        .await;
    assert!(child.wait().unwrap().success());
    assert!(
        file_path_of(&a).contains("memfd:kernels"),
        "{}",
        file_path_of(&a)
    );

    // Judged by version: a plain library, loaded once (judged plain), then
    // rewritten in place (same inode) with llama.cpp's symbols, is judged
    // again at its next load.
    let swapped = library(
        &dir,
        "libcache.so",
        "int add(int a, int b) { return a + b; }\n",
        &[],
    );
    dlopen(&swapped);
    let llama = library(
        &h.dir,
        "llama-src.so",
        "void llama_backend_init(void) {}\nint ggml_init(int x) { return x; }\n",
        &["-Wl,-soname,libcache.so"],
    );
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&swapped).unwrap());
    std::fs::write(&swapped, std::fs::read(&llama).unwrap()).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&swapped).unwrap()),
        inode,
        "rewritten in place"
    );
    let third = dlopen(&swapped);
    let a = h
        .alert("ai_runtime for the library rewritten in place", |a| {
            pid_of(a) == third && a.finding.as_ref().unwrap().signal() == SignalKind::AiRuntime
        })
        .await;
    let summary = &a.finding.as_ref().unwrap().summary;
    assert!(
        summary.contains("llama") || summary.contains("ggml"),
        "{summary}"
    );

    let noise = summaries_under(&h.cp.alerts().await, &benign);
    assert!(
        noise.is_empty(),
        "ordinary libraries made findings: {noise:?}"
    );
}
