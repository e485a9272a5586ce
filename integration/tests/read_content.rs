//! Models read with read() or pread() under names that say nothing
//! (`shard.000`, `weights.cache`, no extension) are found by their content
//! on the real kernel (issue #27); files of other kinds under the same
//! names, read the same ways, stay silent. Runs as root.

use std::path::{Path, PathBuf};
use std::process::Command;

use vigil_integration::alert_filter::{file_path_of, pid_of, summaries_under};
use vigil_integration::{privileged, AgentHost};
use vigil_proto::types::v1::SignalKind;

/// Runs `cmd` to its end; its pid.
fn run(cmd: &mut Command) -> u32 {
    let mut child = cmd.spawn().expect("spawn");
    let pid = child.id();
    let status = child.wait().unwrap();
    assert!(status.success(), "{cmd:?} failed: {status}");
    pid
}

/// Reads a file the way some program does; its pid.
type Reader = fn(&Path) -> u32;

/// `dd` in 4 KiB reads, as a shell pipeline would copy it.
fn dd(file: &Path) -> u32 {
    run(Command::new("dd")
        .arg(format!("if={}", file.display()))
        .args(["of=/dev/null", "bs=4k", "status=none"]))
}

/// Python's buffered read of the whole file.
fn python_read(file: &Path) -> u32 {
    run(Command::new("python3")
        .args(["-c", "import sys; open(sys.argv[1], 'rb').read()"])
        .arg(file))
}

/// pread at offset 0, as a loader that never moves the file offset does.
fn python_pread(file: &Path) -> u32 {
    run(Command::new("python3")
        .args([
            "-c",
            "import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.pread(fd, 4096, 0)",
        ])
        .arg(file))
}

/// Python's zipfile: the end of the archive first, then the local header
/// at offset 0 (how torch.load reads a checkpoint).
fn python_unzip(file: &Path) -> u32 {
    run(Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1]) as z:\n    z.read(z.namelist()[0])",
        ])
        .arg(file))
}

/// Writes the test's files with Python's standard library: the models
/// under neutral names in `models/`, the benign look-alikes in `benign/`.
fn write_files(dir: &Path) -> (PathBuf, PathBuf) {
    let models = dir.join("models");
    let benign = dir.join("benign");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::create_dir_all(&benign).unwrap();
    let script = r#"
import json, os, pickle, struct, sys, zipfile
m, b = sys.argv[1], sys.argv[2]
def w(p, data): open(p, 'wb').write(data)
def s(x): x = x.encode(); return struct.pack('<Q', len(x)) + x
# GGUF v3: one string key, one f32 tensor of 8x8, then its data.
gguf = b'GGUF' + struct.pack('<IQQ', 3, 1, 1)
gguf += s('general.architecture') + struct.pack('<I', 8) + s('llama')
gguf += s('tok_embd.weight') + struct.pack('<IQQIQ', 2, 8, 8, 0, 0)
gguf += b'\0' * (32 - len(gguf) % 32) + b'\0' * 256
w(m + '/shard.000', gguf)
# safetensors: a JSON header naming one tensor, then its bytes.
head = json.dumps({'w': {'dtype': 'F32', 'shape': [4, 4], 'data_offsets': [0, 64]}}).encode()
w(m + '/weights.cache', struct.pack('<Q', len(head)) + head + b'\0' * 64)
# ONNX as torch.onnx.export starts one: ir_version 7, producer, graph.
w(m + '/exported', b'\x08\x07\x12\x07pytorch\x1a\x052.1.0:\x10\n\x05input\x12\x01x' + b'\0' * 64)
# torch.save's zip, read by zipfile as torch.load does.
with zipfile.ZipFile(m + '/ckpt.000', 'w') as z:
    z.writestr('archive/data.pkl', b'\x80\x02}q\x00.')
    z.writestr('archive/byteorder', 'little')
# Legacy torch.save: the magic number first, pickled.
w(m + '/state', pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2) + pickle.dumps({'w': 1}, protocol=2))
# TFLite: a flatbuffer with the TFL3 identifier.
w(m + '/lite.data', b'\x1c\x00\x00\x00TFL3' + b'\0' * 256)
# Benign twins under the same kinds of names.
w(b + '/notes.000', b'# notes\n' * 64)
w(b + '/db.cache', b'SQLite format 3\0' + b'\0' * 4096)
w(b + '/blob', os.urandom(4096))
w(b + '/proto.000', b'\x08\x07\x12\x04abcd' + b'\0' * 64)
w(b + '/image.000', b'\x89PNG\r\n\x1a\n' + b'\0' * 256)
with zipfile.ZipFile(b + '/archive.000', 'w') as z:
    z.writestr('docs/readme.txt', 'hello')
w(b + '/cache.000', pickle.dumps({'a': list(range(100))}, protocol=4))
w(b + '/elf.000', open('/bin/true', 'rb').read())
"#;
    run(Command::new("python3")
        .args(["-c", script])
        .arg(&models)
        .arg(&benign));
    (models, benign)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_read_under_neutral_names_are_found_by_content_and_look_alikes_are_not() {
    if !privileged("models_read_under_neutral_names_are_found_by_content_and_look_alikes_are_not") {
        return;
    }
    let h = AgentHost::start("read-content").await;
    let (models, benign) = write_files(&h.dir);

    // The look-alikes first, read every way the models are.
    for file in std::fs::read_dir(&benign).unwrap() {
        let file = file.unwrap().path();
        dd(&file);
        python_read(&file);
        python_pread(&file);
    }
    python_unzip(&benign.join("archive.000"));

    let cases: [(&str, Reader, &str); 6] = [
        ("shard.000", dd, "gguf"),
        ("weights.cache", python_read, "safetensors"),
        ("exported", python_pread, "onnx"),
        ("ckpt.000", python_unzip, "pytorch-zip"),
        ("state", python_read, "pickle"),
        ("lite.data", dd, "tflite"),
    ];
    for (name, read, format) in cases {
        let file = models.join(name);
        let pid = read(&file);
        let a = h
            .alert(&format!("the model_file alert for {name}"), |a| {
                pid_of(a) == pid && a.finding.as_ref().unwrap().signal() == SignalKind::ModelFile
            })
            .await;
        assert_eq!(file_path_of(&a), file.to_str().unwrap());
        let summary = &a.finding.as_ref().unwrap().summary;
        assert!(
            summary.contains(&format!("{format} model weights in"))
                && summary.contains("a name that does not say so")
                && summary.contains("read by"),
            "{summary}"
        );
    }

    let noise = summaries_under(&h.cp.alerts().await, &benign);
    assert!(
        noise.is_empty(),
        "benign files read under neutral names made findings: {noise:?}"
    );
}

/// A file opened for writing too, or read first at another offset more
/// than the kernel's tries allow, is not checked: said here so a change in
/// what the sensor watches is a test failure, not a surprise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_opened_read_write_is_not_checked_by_content_and_the_agent_says_so_in_the_readme() {
    if !privileged(
        "a_model_opened_read_write_is_not_checked_by_content_and_the_agent_says_so_in_the_readme",
    ) {
        return;
    }
    let h = AgentHost::start("read-content-rw").await;
    let (models, _) = write_files(&h.dir);
    let rw = run(Command::new("python3")
        .args([
            "-c",
            "import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); os.read(fd, 4096)",
        ])
        .arg(models.join("shard.000")));
    // The marker: the same file read read-only.
    let marker = dd(&models.join("shard.000"));
    h.alert("the marker", |a| pid_of(a) == marker).await;
    assert!(
        !h.cp.alerts().await.iter().any(|a| pid_of(a) == rw),
        "a read-write open is not watched (README lists it as a blind spot)"
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    assert!(
        readme.contains("opened for writing too"),
        "README's signal table names the read-write blind spot"
    );
}

/// First reads that a check of only the first read's bytes would miss
/// (helper-36's review): empty, failed, too short to tell, in a forked
/// child, beside an fd 64 numbers on, through a dup2 copy.
const READ_EVASIONS: &str = r#"
import ctypes, os, struct, sys
mode, path = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDONLY)
if mode == 'zero':
    os.read(fd, 0); os.read(fd, 4096)
elif mode == 'efault':
    ctypes.CDLL(None).read(fd, ctypes.c_void_p(8), 4096); os.read(fd, 4096)
elif mode == 'one':
    os.read(fd, 1); os.read(fd, 4095)
elif mode == 'eight':
    n = struct.unpack('<Q', os.read(fd, 8))[0]; os.read(fd, n)
elif mode == 'fork':
    if os.fork() == 0:
        os.read(fd, 4096); os._exit(0)
    os.wait()
elif mode == 'collide':
    os.dup2(os.open('/etc/hostname', os.O_RDONLY), fd + 64); os.read(fd, 4096)
elif mode == 'dup2':
    os.dup2(fd, fd + 64); os.read(fd + 64, 4096)
elif mode == 'pread0':
    os.pread(fd, 0, 0); os.pread(fd, 4096, 0)
elif mode == 'unfaulted_path':
    # The path of a .gguf in a file mapping never touched: a probe read on
    # entry fails; the kernel faults it in on the call.
    import mmap, tempfile
    gguf = path + '.gguf'
    os.link(path, gguf)
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(path)) as f:
        f.write(gguf.encode().ljust(4096, bytes(1))); f.flush()
        m = mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ)
        base = next(int(l.split('-')[0], 16) for l in open('/proc/self/maps') if f.name in l)
        g = ctypes.CDLL(None).open(ctypes.c_void_p(base), 0)
        assert g >= 0
        os.read(g, 4096)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_reads_that_try_to_slip_past_the_check_are_still_seen() {
    if !privileged("first_reads_that_try_to_slip_past_the_check_are_still_seen") {
        return;
    }
    let h = AgentHost::start("read-content-evasions").await;
    let (models, _) = write_files(&h.dir);
    let model = std::fs::read(models.join("weights.cache")).unwrap();
    for mode in [
        "zero", "efault", "one", "eight", "fork", "collide", "dup2", "pread0",
    ] {
        // A copy per mode: each is its own finding.
        let file = models.join(format!("{mode}.cache"));
        std::fs::write(&file, &model).unwrap();
        run(Command::new("python3")
            .args(["-c", READ_EVASIONS, mode])
            .arg(&file));
        let path = file.to_str().unwrap().to_string();
        h.alert(
            &format!("the model_file alert for the {mode} read"),
            move |a| {
                file_path_of(a) == path
                    && a.finding.as_ref().unwrap().signal() == SignalKind::ModelFile
            },
        )
        .await;
    }
}

/// Through an overlay whose layers lie on other file systems (a tmpfs
/// upper over the host's disk, as rootless containers make), stat names
/// another device than the kernel: the model read there is still found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_read_through_an_overlay_is_found() {
    if !privileged("a_model_read_through_an_overlay_is_found") {
        return;
    }
    let h = AgentHost::start("read-content-overlay").await;
    let (models, _) = write_files(&h.dir);
    let lower = h.dir.join("lower");
    std::fs::create_dir_all(&lower).unwrap();
    std::fs::copy(models.join("weights.cache"), lower.join("layer.000")).unwrap();
    let upper_fs = h.dir.join("upperfs");
    std::fs::create_dir_all(&upper_fs).unwrap();
    let _tmpfs = vigil_integration::Tmpfs::mount(&upper_fs, "4m");
    for d in ["upper", "work"] {
        std::fs::create_dir_all(upper_fs.join(d)).unwrap();
    }
    let merged = h.dir.join("merged");
    std::fs::create_dir_all(&merged).unwrap();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper_fs.join("upper").display(),
        upper_fs.join("work").display()
    );
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(&merged));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(merged.clone());
    let file = merged.join("layer.000");
    let pid = python_read(&file);
    let path = file.to_str().unwrap().to_string();
    let a = h
        .alert("the model_file alert through the overlay", move |a| {
            pid_of(a) == pid && a.finding.as_ref().unwrap().signal() == SignalKind::ModelFile
        })
        .await;
    assert_eq!(file_path_of(&a), path);
}
