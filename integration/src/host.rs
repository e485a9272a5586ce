//! The host as tests see and poke it: files, processes, cgroups.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs python3 to open `path` for reading and returns its pid once it has exited.
pub fn python_opens(path: &Path) -> u32 {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg("import sys; open(sys.argv[1], 'rb').close()")
        .arg(path)
        .spawn()
        .expect("python3 is installed");
    let pid = child.id();
    let status = child.wait().expect("python3 ran");
    assert!(
        status.success(),
        "python3 failed to open {}",
        path.display()
    );
    pid
}

/// Hex sha256 of a file, as the agent reports executables.
pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    hex::encode(Sha256::digest(&bytes))
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on a unified
/// host, `/sys/fs/cgroup/unified` on a hybrid one).
pub fn cgroup2_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("reading /proc/mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup v2 mount")
}

/// The fake libnvidia-ml of `agent/fake-nvml`, compiled once per test
/// binary into the binaries' directory. The agent loads it with
/// `--nvml-library`; its answers come from the file named by
/// `VIGIL_FAKE_NVML_CONFIG`.
pub fn fake_nvml_library() -> PathBuf {
    static LIB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LIB.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/fake-nvml/fake_nvml.c");
        let dir = crate::bin_dir().join("fake-nvml");
        std::fs::create_dir_all(&dir).unwrap();
        let lib = dir.join("libnvidia-ml.so.1");
        // Built under a private name, then renamed: test binaries running at
        // once never load a half-written library.
        let building = dir.join(format!(".building-{}", std::process::id()));
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&building)
            .arg(&src)
            .status()
            .expect("a C compiler (cc) builds the fake NVML library");
        assert!(status.success(), "compiling {}", src.display());
        std::fs::rename(&building, &lib).unwrap();
        lib
    })
    .clone()
}

/// Compiles the C `source` to the executable `dir/name` with `cc` and the
/// extra `args`.
pub fn compile_c(dir: &Path, name: &str, source: &str, args: &[&str]) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(name);
    let status = Command::new("cc")
        .args(args)
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "compiling {name}");
    out
}
