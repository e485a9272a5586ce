//! Compiles the C eBPF sensors in `../ebpf` with clang (CO-RE, `-target bpf`)
//! into `$OUT_DIR/sensors.bpf.o`, which the agent embeds; and the fake NVML
//! library of `fake-nvml/` that the agent's GPU tests load (never shipped).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let ebpf = manifest.join("../ebpf");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let clang = std::env::var("VIGIL_CLANG").unwrap_or_else(|_| "clang".to_string());
    for f in [
        "sensors.bpf.c",
        "enforce.bpf.c",
        "vigil_event.h",
        "kernel_types.h",
    ] {
        println!("cargo:rerun-if-changed={}", ebpf.join(f).display());
    }
    println!("cargo:rerun-if-env-changed=VIGIL_CLANG");
    let multiarch = format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    let target_arch = match std::env::consts::ARCH {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        other => other,
    };
    for program in ["sensors", "enforce"] {
        let src = ebpf.join(format!("{program}.bpf.c"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-D__TARGET_ARCH_{target_arch}"))
            .arg(format!("-I{multiarch}"))
            .arg(format!("-I{}", ebpf.display()))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(out_dir.join(format!("{program}.bpf.o")))
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("{clang} failed to compile {} ({s})", src.display()),
            Err(e) => panic!(
                "cannot run {clang} to build the eBPF programs ({e}); install clang, llvm and \
                 libbpf-dev (`make deps` does) or set VIGIL_CLANG"
            ),
        }
    }
    fake_nvml(&manifest);
}

/// `$OUT_DIR/fake-nvml/libnvidia-ml.so.1`, for the GPU tests (`VIGIL_FAKE_NVML_LIBRARY`).
fn fake_nvml(manifest: &std::path::Path) {
    let src = manifest.join("fake-nvml/fake_nvml.c");
    println!("cargo:rerun-if-changed={}", src.display());
    let dir = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("fake-nvml");
    std::fs::create_dir_all(&dir).unwrap();
    let lib = dir.join("libnvidia-ml.so.1");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&lib)
        .arg(&src)
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!(
            "cc failed to build the fake NVML library from {}: {other:?}",
            src.display()
        ),
    }
    println!("cargo:rustc-env=VIGIL_FAKE_NVML_LIBRARY={}", lib.display());
}
