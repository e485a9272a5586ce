//! Each shadow-AI signal fires for a real process on the real kernel, and
//! benign look-alikes make no finding. Runs as root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vigil_integration::alert_filter::{pid_of, summaries_under};
use vigil_integration::{compile_c, privileged, wait_for, Agent, AgentHost, ControlPlane, Killed};
use vigil_proto::types::v1::{Alert, SignalKind};

fn signal_of(a: &Alert) -> SignalKind {
    a.finding.as_ref().unwrap().signal()
}

fn object_of(a: &Alert) -> String {
    let f = a.finding.as_ref().unwrap();
    if let Some(file) = &f.file {
        return file.path.clone();
    }
    f.net
        .as_ref()
        .map(|n| format!("{}:{}", n.address, n.port))
        .unwrap_or_default()
}

fn run(cmd: &mut Command) -> u32 {
    let mut child = cmd.spawn().expect("spawn");
    let pid = child.id();
    let status = child.wait().unwrap();
    assert!(status.success(), "{cmd:?} failed: {status}");
    pid
}

fn python(code: &str) -> Command {
    let mut c = Command::new("python3");
    c.arg("-c").arg(code);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_libraries_gpu_nodes_and_short_lived_model_opens() {
    if !privileged("runtime_libraries_gpu_nodes_and_short_lived_model_opens") {
        return;
    }
    let h = AgentHost::start("signals-files").await;

    // A C program dlopens a library named like ONNX Runtime, with its
    // entry point.
    let lib = compile_c(
        &h.dir,
        "libonnxruntime.so",
        "int vigil_test_symbol(void) { return 42; }\nvoid *OrtGetApiBase(void) { return 0; }\n",
        &["-shared", "-fPIC"],
    );
    let loader = compile_c(
        &h.dir,
        "loader",
        "#include <dlfcn.h>\n#include <stdio.h>\nint main(int c, char **v) { void *h = dlopen(v[1], RTLD_NOW); if (!h) { fprintf(stderr, \"%s\\n\", dlerror()); return 1; } return 0; }\n",
        &["-ldl"],
    );
    let pid = run(Command::new(&loader).arg(&lib));
    let a = h
        .alert("ai_runtime for the dlopen", |a| {
            pid_of(a) == pid && signal_of(a) == SignalKind::AiRuntime
        })
        .await;
    // The loader exits at once, before /proc can give the full path: the
    // kernel walks it from the mapped file's dentry.
    assert_eq!(object_of(&a), lib.to_str().unwrap());
    // Its content said so, and the finding says how.
    let summary = a.finding.as_ref().unwrap().summary.clone();
    assert!(
        summary.contains("dynamic symbol OrtGetApiBase"),
        "{summary}"
    );
    // The name alone, on a library with no runtime's symbols: the content
    // wins, nothing is raised (the marker after it proves it was seen).
    let impostor_dir = h.dir.join("impostor");
    std::fs::create_dir_all(&impostor_dir).unwrap();
    let impostor = compile_c(
        &impostor_dir,
        "libonnxruntime.so",
        "int vigil_test_symbol(void) { return 42; }\n",
        &["-shared", "-fPIC"],
    );
    let impostor_pid = run(Command::new(&loader).arg(&impostor));
    let marker = run(Command::new(&loader).arg(&lib));
    h.alert("the marker load", |a| {
        pid_of(a) == marker && signal_of(a) == SignalKind::AiRuntime
    })
    .await;
    assert!(
        !h.cp
            .alerts()
            .await
            .iter()
            .any(|a| pid_of(a) == impostor_pid),
        "a library only named like ONNX Runtime raised an alert"
    );
    // Across a mount: the same library on a tmpfs mounted for the test.
    let shm = h.dir.join("tmpfs");
    std::fs::create_dir_all(&shm).unwrap();
    run(Command::new("mount")
        .args(["-t", "tmpfs", "vigil-test"])
        .arg(&shm));
    let shm_lib = shm.join("libonnxruntime.so");
    std::fs::copy(&lib, &shm_lib).unwrap();
    let pid = run(Command::new(&loader).arg(&shm_lib));
    let a = h
        .alert("ai_runtime for the dlopen on tmpfs", |a| {
            pid_of(a) == pid && signal_of(a) == SignalKind::AiRuntime
        })
        .await;
    let _ = Command::new("umount").arg("-l").arg(&shm).status();
    assert_eq!(object_of(&a), shm_lib.to_str().unwrap());

    // python loads the real ONNX Runtime (the PyPI wheel `make deps` installs).
    let ort = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.vigil/deps/python");
    assert!(
        ort.join("onnxruntime").is_dir(),
        "{} is missing: run `make deps`",
        ort.display()
    );
    let pid = run(python("import onnxruntime").env("PYTHONPATH", &ort));
    let a = h
        .alert("ai_runtime for import onnxruntime", |a| {
            pid_of(a) == pid && signal_of(a) == SignalKind::AiRuntime
        })
        .await;
    assert!(
        object_of(&a).contains("/onnxruntime/capi/"),
        "{}",
        object_of(&a)
    );

    // An open of /dev/nvidia0 that fails with ENOENT is still a signal.
    assert!(
        !Path::new("/dev/nvidia0").exists(),
        "this test expects a host without an NVIDIA GPU"
    );
    let pid = run(&mut python("import os\ntry:\n    os.open('/dev/nvidia0', os.O_RDWR)\nexcept FileNotFoundError:\n    pass\n"));
    let a = h
        .alert("gpu_device for the failed open", |a| {
            pid_of(a) == pid && signal_of(a) == SignalKind::GpuDevice
        })
        .await;
    assert!(a
        .finding
        .unwrap()
        .summary
        .contains("tried to open accelerator device /dev/nvidia0"));

    // A process alive for a few milliseconds opens a .safetensors file.
    let st = h.dir.join("w.safetensors");
    let mut header = 2u64.to_le_bytes().to_vec();
    header.extend_from_slice(b"{}");
    std::fs::write(&st, &header).unwrap();
    let started = std::time::Instant::now();
    let pid = run(Command::new("/bin/cat").arg(&st).stdout(Stdio::null()));
    let lived = started.elapsed();
    let a = h
        .alert("model_file for the short-lived cat", |a| {
            pid_of(a) == pid && signal_of(a) == SignalKind::ModelFile
        })
        .await;
    assert_eq!(object_of(&a), st.to_str().unwrap());
    eprintln!("cat lived {lived:?} (spawn to reap) and was seen");

    // The other open syscalls: open(2), creat(2) and openat2(2), called directly.
    let opener = compile_c(
        &h.dir,
        "opener",
        "#define _GNU_SOURCE\n#include <fcntl.h>\n#include <linux/openat2.h>\n#include <sys/syscall.h>\n#include <unistd.h>\nint main(int c, char **v) {\n  if (syscall(SYS_open, v[1], O_RDONLY) < 0) return 1;\n  if (syscall(SYS_creat, v[2], 0600) < 0) return 2;\n  struct open_how how = { .flags = O_RDONLY };\n  if (syscall(SYS_openat2, AT_FDCWD, v[3], &how, sizeof(how)) < 0) return 3;\n  return 0;\n}\n",
        &[],
    );
    let via: Vec<PathBuf> = ["via-open.gguf", "via-creat.gguf", "via-openat2.gguf"]
        .iter()
        .map(|n| h.dir.join(n))
        .collect();
    for p in [&via[0], &via[2]] {
        std::fs::write(p, b"GGUF\x03\x00\x00\x00").unwrap();
    }
    let pid = run(Command::new(&opener).args(&via));
    for p in &via {
        let want = p.to_str().unwrap().to_string();
        h.alert(&format!("model_file via {want}"), |a| {
            pid_of(a) == pid && object_of(a) == want
        })
        .await;
    }

    // Extensions in any case: loaders take `Model.GGUF` as they take `.gguf`.
    let upper = h.dir.join("Model.GgUf");
    std::fs::write(&upper, b"GGUF\x03\x00\x00\x00").unwrap();
    let pid = run(Command::new("/bin/cat").arg(&upper).stdout(Stdio::null()));
    let a = h
        .alert("model_file for Model.GgUf", |a| {
            pid_of(a) == pid && signal_of(a) == SignalKind::ModelFile
        })
        .await;
    assert_eq!(object_of(&a), upper.to_str().unwrap());

    // Benign look-alikes: a text model.txt, .bin files out of a tarball,
    // a compiler run, random bytes named `.PT` (the name is a hint, the
    // content decides). Then a marker: once it is seen, everything before
    // it was.
    let benign = h.dir.join("benign");
    std::fs::create_dir_all(benign.join("src")).unwrap();
    std::fs::write(
        benign.join("model.txt"),
        "This is a model of the solar system, in prose.\n",
    )
    .unwrap();
    run(Command::new("cat")
        .arg(benign.join("model.txt"))
        .stdout(Stdio::null()));
    // An open of a model file that does not exist fails: not a load.
    let missing = benign.join("missing.onnx");
    run(&mut python(&format!(
        "try:\n    open({missing:?}, 'rb')\nexcept FileNotFoundError:\n    pass\n"
    )));
    std::fs::write(benign.join("src/firmware.bin"), [0u8; 64]).unwrap();
    std::fs::write(benign.join("src/data.bin"), [1u8; 64]).unwrap();
    run(Command::new("tar")
        .arg("-cf")
        .arg(benign.join("blobs.tar"))
        .arg("-C")
        .arg(&benign)
        .arg("src"));
    std::fs::create_dir_all(benign.join("out")).unwrap();
    run(Command::new("tar")
        .arg("-C")
        .arg(benign.join("out"))
        .arg("-xf")
        .arg(benign.join("blobs.tar")));
    std::fs::write(benign.join("backup.PT"), [0x5au8; 256]).unwrap();
    run(Command::new("cat")
        .arg(benign.join("backup.PT"))
        .stdout(Stdio::null()));
    std::fs::write(benign.join("hello.c"), "int main(void) { return 0; }\n").unwrap();
    run(Command::new("cc")
        .arg("-c")
        .arg(benign.join("hello.c"))
        .arg("-o")
        .arg(benign.join("hello.o")));
    let marker = h.dir.join("marker.onnx");
    std::fs::write(&marker, b"\x08\x07").unwrap();
    let pid = run(Command::new("/bin/cat").arg(&marker).stdout(Stdio::null()));
    h.alert("the marker", |a| pid_of(a) == pid).await;
    let noise = summaries_under(&h.cp.alerts().await, &benign);
    assert!(
        noise.is_empty(),
        "benign look-alikes made findings: {noise:?}"
    );
}

/// Maps `file` the way GGUF and safetensors loaders do (mmap read-only from
/// offset 0), reads its first bytes, and exits.
const MAP_AND_READ: &str = "import mmap, sys, time\nf = open(sys.argv[1], 'rb')\nm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)\nm[:4]\ntime.sleep(0.2)\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_python_mapping_gguf_named_cache_dat_is_a_model_file() {
    if !privileged("a_renamed_python_mapping_gguf_named_cache_dat_is_a_model_file") {
        return;
    }
    let h = AgentHost::start("signals-content").await;
    // A copy of the python binary under a name that says nothing.
    let python3 = PathBuf::from(
        String::from_utf8(
            python("import os, sys; print(os.path.realpath(sys.executable))")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim(),
    );
    let helper = h.dir.join("logrotate-helper");
    std::fs::copy(&python3, &helper).unwrap();
    // A GGUF file (magic, version 3, counts) of 16 MiB, named cache.dat.
    let cache = h.dir.join("cache.dat");
    let mut gguf = b"GGUF\x03\x00\x00\x00".to_vec();
    gguf.extend_from_slice(&1u64.to_le_bytes());
    gguf.extend_from_slice(&2u64.to_le_bytes());
    std::fs::write(&cache, &gguf).unwrap();
    std::fs::File::options()
        .append(true)
        .open(&cache)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    // Benign: the same helper maps a large file that is not a model.
    let benign = h.dir.join("benign");
    std::fs::create_dir_all(&benign).unwrap();
    let archive = benign.join("backup.dat");
    std::fs::write(&archive, b"SQLite format 3\0").unwrap();
    std::fs::File::options()
        .append(true)
        .open(&archive)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    run(Command::new(&helper)
        .args(["-c", MAP_AND_READ])
        .arg(&archive));

    let pid = run(Command::new(&helper).args(["-c", MAP_AND_READ]).arg(&cache));
    let a = h
        .alert("model_file for cache.dat", |a| {
            pid_of(a) == pid && signal_of(a) == SignalKind::ModelFile
        })
        .await;
    assert_eq!(object_of(&a), cache.to_str().unwrap());
    let f = a.finding.unwrap();
    assert!(f.summary.contains("gguf model weights"), "{}", f.summary);
    let process = f.process.unwrap();
    assert!(
        process.exe.ends_with("/logrotate-helper"),
        "the finding names the renamed binary: {}",
        process.exe
    );
    let python_digest = vigil_integration::sha256_file(&python3);
    assert_eq!(
        process.exe_sha256, python_digest,
        "the digest shows it is python whatever its name"
    );
    let noise = summaries_under(&h.cp.alerts().await, &benign);
    assert!(
        noise.is_empty(),
        "a large non-model mapping made findings: {noise:?}"
    );

    // Mapped and gone at once: the kernel's path walk names the file, and
    // its content is read from there after the process exited.
    let quick = h.dir.join("quick").join("blob.bin");
    std::fs::create_dir_all(quick.parent().unwrap()).unwrap();
    std::fs::copy(&cache, &quick).unwrap();
    let pid = run(Command::new(&helper)
        .args([
            "-c",
            "import mmap, sys\nf = open(sys.argv[1], 'rb')\nmmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)\n",
        ])
        .arg(&quick));
    let a = h
        .alert("model_file for the quick mapping", |a| {
            pid_of(a) == pid && signal_of(a) == SignalKind::ModelFile
        })
        .await;
    assert_eq!(object_of(&a), quick.to_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_ports_and_openai_style_listeners() {
    if !privileged("ollama_ports_and_openai_style_listeners") {
        return;
    }
    let h = AgentHost::start("signals-net").await;

    // A connect to 127.0.0.1:11434 (refused is fine: the attempt is the signal).
    let pid = run(&mut python("import socket\ns = socket.socket()\ntry:\n    s.connect(('127.0.0.1', 11434))\nexcept OSError:\n    pass\n"));
    let a = h
        .alert("ai_egress for the connect", |a| {
            pid_of(a) == pid && signal_of(a) == SignalKind::AiEgress
        })
        .await;
    assert_eq!(object_of(&a), "127.0.0.1:11434");

    // A listener on 11434.
    let pid = run(&mut python("import socket, time\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1', 11434))\ns.listen()\ntime.sleep(0.3)\n"));
    let a = h
        .alert("ai_serving for the 11434 listener", |a| {
            pid_of(a) == pid && signal_of(a) == SignalKind::AiServing
        })
        .await;
    assert_eq!(object_of(&a), "127.0.0.1:11434");

    // A normal HTTP server on 8080 (no /v1/models) is not AI serving...
    let plain = Killed(
        Command::new("python3")
            .args(["-m", "http.server", "8080", "--bind", "127.0.0.1"])
            .current_dir(&h.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let plain_pid = plain.0.id();
    h.wait_log(
        "the plain server to be probed",
        &format!("pid={plain_pid} port=8080 api=none"),
    )
    .await;
    drop(plain);

    // ...one that answers OpenAI-style routes on the same port is.
    let server = http_server(
        8080,
        Some("/v1/models"),
        r#"{"object": "list", "data": [{"id": "tiny", "object": "model"}]}"#,
    );
    let ai = Killed(python(&server).spawn().unwrap());
    let ai_pid = ai.0.id();
    let a = h
        .alert("ai_serving for the OpenAI-style server", |a| {
            pid_of(a) == ai_pid && signal_of(a) == SignalKind::AiServing
        })
        .await;
    assert!(a.finding.unwrap().summary.contains("OpenAI-style"));
    assert_eq!(
        findings_of(&h, plain_pid).await,
        0,
        "the plain HTTP server made a finding"
    );

    // Any port: an Ollama-style API on a port no list names is found by
    // what it answers...
    let ollama = http_server(
        23456,
        Some("/api/tags"),
        r#"{"models": [{"name": "llama3:8b", "model": "llama3:8b"}]}"#,
    );
    let ai = Killed(python(&ollama).spawn().unwrap());
    let ai_pid = ai.0.id();
    let a = h
        .alert("ai_serving for the Ollama-style server on 23456", |a| {
            pid_of(a) == ai_pid && signal_of(a) == SignalKind::AiServing
        })
        .await;
    assert!(a.finding.unwrap().summary.contains("Ollama"));
    // ...and its benign twin, a server that answers every path with a
    // page, is not.
    let page = http_server(23457, None, "<html>OK</html>");
    let twin = Killed(python(&page).spawn().unwrap());
    let twin_pid = twin.0.id();
    h.wait_log(
        "the catch-all server to be probed",
        &format!("pid={twin_pid} port=23457 api=none"),
    )
    .await;
    assert_eq!(
        findings_of(&h, twin_pid).await,
        0,
        "the catch-all server made a finding"
    );
}

/// Python for an HTTP server on 127.0.0.1:`port` that answers `GET path`
/// (every path, with `None`) with 200 and `body`, else 404.
fn http_server(port: u16, path: Option<&str>, body: &str) -> String {
    let answers = match path {
        Some(p) => format!("self.path == {p:?}"),
        None => "True".into(),
    };
    format!(
        "import http.server\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        body = {body:?}.encode()\n        self.send_response(200 if {answers} else 404)\n        self.send_header('Content-Length', str(len(body)))\n        self.end_headers()\n        self.wfile.write(body)\n    def log_message(self, *a):\n        pass\nhttp.server.HTTPServer.allow_reuse_address = True\nhttp.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    )
}

/// How many alerts the process `pid` made.
async fn findings_of(h: &AgentHost, pid: u32) -> usize {
    h.cp.alerts()
        .await
        .iter()
        .filter(|a| pid_of(a) == pid)
        .count()
}

/// Python that builds a standard DNS query for `sys.argv[1]` as `q`.
const DNS_QUERY: &str = "import socket, struct, sys\nq = struct.pack('>HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0) + b''.join(bytes([len(l)]) + l.encode() for l in sys.argv[1].split('.')) + b'\\x00\\x00\\x01\\x00\\x01'\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_questions_for_ai_api_hosts_are_attributed_to_the_asking_process() {
    if !privileged("dns_questions_for_ai_api_hosts_are_attributed") {
        return;
    }
    let h = AgentHost::start("signals-dns").await;
    let dns = |name: &str, send: &str| {
        let mut c = python(&format!("{DNS_QUERY}{send}"));
        c.arg(name);
        c
    };
    let found = |pid: u32, host: &'static str| {
        move |a: &Alert| {
            pid_of(a) == pid
                && signal_of(a) == SignalKind::AiEgress
                && a.finding
                    .as_ref()
                    .unwrap()
                    .net
                    .as_ref()
                    .is_some_and(|n| n.host == host)
        }
    };

    // A resolver's way: connect the UDP socket to port 53, then send().
    let pid = run(&mut dns(
        "api.openai.com",
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.connect(('127.0.0.1', 53))\ns.send(q)\n",
    ));
    let a = h
        .alert(
            "ai_egress for a connected DNS socket",
            found(pid, "api.openai.com"),
        )
        .await;
    let f = a.finding.unwrap();
    let net = f.net.unwrap();
    assert_eq!(
        (net.host.as_str(), net.address.as_str(), net.port),
        ("api.openai.com", "127.0.0.1", 53)
    );
    assert!(
        f.summary.contains("looked up AI API host api.openai.com"),
        "{}",
        f.summary
    );

    // sendto() with the address, over IPv6, and sendmsg().
    let pid = run(&mut dns(
        "API.Anthropic.com",
        "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\ns.sendto(q, ('::1', 53))\n",
    ));
    h.alert(
        "ai_egress for sendto over IPv6",
        found(pid, "api.anthropic.com"),
    )
    .await;
    let pid = run(&mut dns(
        "myco.openai.azure.com",
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendmsg([q], [], 0, ('127.0.0.1', 53))\n",
    ));
    h.alert("ai_egress for sendmsg", found(pid, "myco.openai.azure.com"))
        .await;

    // The C library's resolver (getaddrinfo asks for A and AAAA with one
    // sendmmsg); the answer does not matter, the question is the signal.
    let pid = run(
        python("import socket\ntry:\n    socket.getaddrinfo('huggingface.co', 443)\nexcept OSError:\n    pass\n")
            .env("RES_OPTIONS", "timeout:1 attempts:1"),
    );
    h.alert("ai_egress for getaddrinfo", found(pid, "huggingface.co"))
        .await;

    // An ordinary host is not AI egress; a marker after it proves it was seen.
    let benign = run(&mut dns(
        "deb.debian.org",
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(q, ('127.0.0.1', 53))\n",
    ));
    let marker = run(&mut dns(
        "api.mistral.ai",
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(q, ('127.0.0.1', 53))\n",
    ));
    h.alert("the marker question", found(marker, "api.mistral.ai"))
        .await;
    let noise =
        h.cp.alerts()
            .await
            .iter()
            .filter(|a| pid_of(a) == benign)
            .count();
    assert_eq!(noise, 0, "a question for deb.debian.org made a finding");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_started_before_the_agent_holding_a_model_open_is_found() {
    if !privileged("a_process_started_before_the_agent_holding_a_model_open") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("resident.gguf");
    std::fs::write(&model, b"GGUF\x03\x00\x00\x00").unwrap();
    let holder = Killed(
        python(&format!(
            "import time\nf = open({:?}, 'rb')\nprint('open', flush=True)\ntime.sleep(60)\n",
            model
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let pid = holder.0.id();
    wait_for(
        "the holder to open its model",
        Duration::from_secs(10),
        || async {
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
            fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .any(|l| l == model)
                .then_some(())
        },
    )
    .await;
    let cp = ControlPlane::start_leading(&tmp.path().join("cp")).await;
    let _agent = Agent::start(&tmp.path().join("agent"), &cp.endpoint(), "late-agent").await;
    let a = wait_for(
        "the startup scan to report the held model",
        Duration::from_secs(15),
        || async { cp.alerts().await.into_iter().find(|a| pid_of(a) == pid) },
    )
    .await;
    assert_eq!(object_of(&a), model.to_str().unwrap());
    assert_eq!(signal_of(&a), SignalKind::ModelFile);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_argv_and_maximum_length_paths_are_reported_not_fatal() {
    use std::os::unix::ffi::OsStrExt;
    if !privileged("invalid_utf8_argv_and_maximum_length_paths_are_reported_not_fatal") {
        return;
    }
    let h = AgentHost::start("signals-bad-input").await;

    // An argv element that is not UTF-8: cat fails on it, then opens the model.
    let model = h.dir.join("argv.onnx");
    std::fs::write(&model, b"\x08\x07").unwrap();
    let mut child = Command::new("/bin/cat")
        .arg(std::ffi::OsStr::from_bytes(b"\xff\xfe-not-utf8"))
        .arg(&model)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let a = h
        .alert("a finding for the invalid-UTF-8 argv", |a| pid_of(a) == pid)
        .await;
    let argv = a.finding.unwrap().process.unwrap().argv;
    assert!(
        argv.iter()
            .any(|x| x.starts_with("\u{fffd}\u{fffd}-not-utf8")),
        "{argv:?}"
    );

    // A model file at close to the longest path the kernel accepts (4095 bytes).
    let mut deep = h.dir.clone();
    while deep.as_os_str().len() < 4095 - 250 - 16 {
        deep = deep.join("d".repeat(200));
    }
    std::fs::create_dir_all(&deep).unwrap();
    let room = 4095 - deep.as_os_str().len() - 1 - ".onnx".len();
    let long = deep.join(format!("{}.onnx", "m".repeat(room.min(250))));
    std::fs::write(&long, b"\x08\x07").unwrap();
    let want = long.to_str().unwrap().to_string();
    assert!(want.len() > 3800, "path of {} bytes", want.len());
    let pid = run(Command::new("/bin/cat").arg(&long).stdout(Stdio::null()));
    let a = h
        .alert("a finding for the longest path", |a| pid_of(a) == pid)
        .await;
    assert_eq!(object_of(&a), want);
    let log = std::fs::read_to_string(&h.agent.log).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_process_storm_every_record_the_kernel_emitted_was_received() {
    if !privileged("after_a_process_storm_every_record_the_kernel_emitted_was_received") {
        return;
    }
    let h = AgentHost::start("signals-storm").await;
    let started = std::time::Instant::now();
    run(Command::new("sh").args([
        "-c",
        "i=0; while [ $i -lt 2000 ]; do /bin/true; i=$((i+1)); done",
    ]));
    let rate = 2000.0 / started.elapsed().as_secs_f64();
    let counters = wait_for(
        "emitted == received at the control plane",
        Duration::from_secs(20),
        || async {
            let c = h.cp.agent_summary("signals-storm").await.ok()??.counters?;
            (c.emitted >= 4000 && c.emitted == c.received).then_some(c)
        },
    )
    .await;
    eprintln!(
        "{rate:.0} processes/s: emitted {} received {} dropped {} filtered {}",
        counters.emitted, counters.received, counters.dropped, counters.filtered
    );
    assert_eq!(
        counters.dropped, 0,
        "the ring buffer overflowed at {rate:.0} processes/s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_ring_buffer_counts_every_lost_record_and_the_agent_goes_on() {
    if !privileged("an_overflowing_ring_buffer_counts_every_lost_record") {
        return;
    }
    // A one-page ring buffer: a storm overflows it between two drains.
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_leading(&tmp.path().join("cp")).await;
    let agent = Agent::start_with(
        &tmp.path().join("agent"),
        &cp.endpoint(),
        "signals-overflow",
        &["--ring-buffer-kib", "4"],
    )
    .await;
    let counters_now = || async { cp.agent_summary("signals-overflow").await.ok()??.counters };
    let before = wait_for("the first heartbeat", Duration::from_secs(15), counters_now).await;
    // Two storms at once, as fast as this host forks.
    let started = std::time::Instant::now();
    let storms: Vec<Child> = (0..2)
        .map(|_| {
            Command::new("sh")
                .args([
                    "-c",
                    "i=0; while [ $i -lt 2000 ]; do /bin/true; i=$((i+1)); done",
                ])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut s in storms {
        assert!(s.wait().unwrap().success());
    }
    let rate = 4000.0 / started.elapsed().as_secs_f64();
    // Every exec and exit of the storm was either sent or counted as dropped,
    // and everything sent was received.
    let after = wait_for(
        "the storm accounted for at the control plane",
        Duration::from_secs(20),
        || async {
            let c = counters_now().await?;
            let accounted = (c.emitted + c.dropped) - (before.emitted + before.dropped);
            (accounted >= 8000 && c.emitted == c.received).then_some(c)
        },
    )
    .await;
    eprintln!(
        "{rate:.0} processes/s into a 4 KiB ring: emitted {} received {} dropped {}",
        after.emitted - before.emitted,
        after.received - before.received,
        after.dropped - before.dropped
    );
    assert!(
        after.dropped > before.dropped,
        "a 4 KiB ring at {rate:.0} processes/s should overflow"
    );
    agent
        .wait_for_log(
            "the agent's warning about lost records",
            Duration::from_secs(5),
            "sensor records lost",
        )
        .await;
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(!log.contains("panicked"), "{log}");
    // The agent goes on: a model open after the storm is still found.
    let model = tmp.path().join("after-storm.gguf");
    std::fs::write(&model, b"GGUF\x03\x00\x00\x00").unwrap();
    let pid = run(Command::new("/bin/cat").arg(&model).stdout(Stdio::null()));
    wait_for(
        "the finding after the storm",
        Duration::from_secs(15),
        || async {
            cp.alerts()
                .await
                .into_iter()
                .find(|a| pid_of(a) == pid && signal_of(a) == SignalKind::ModelFile)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_keeps_the_signals_of_live_processes_and_repeats_none() {
    if !privileged("a_restarted_agent_keeps_the_signals_of_live_processes") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_leading(&tmp.path().join("cp")).await;
    let agent_dir = tmp.path().join("agent");
    let agent = Agent::start(&agent_dir, &cp.endpoint(), "restart-agent").await;

    let model = tmp.path().join("kept.gguf");
    std::fs::write(&model, b"GGUF\x03\x00\x00\x00").unwrap();
    let holder = Killed(
        python(&format!(
            "import time\nf = open({:?}, 'rb')\ntime.sleep(60)\n",
            model
        ))
        .spawn()
        .unwrap(),
    );
    let pid = holder.0.id();
    let count = |alerts: &[Alert]| alerts.iter().filter(|a| pid_of(a) == pid).count();
    wait_for(
        "the first alert for the holder",
        Duration::from_secs(15),
        || async { (count(&cp.alerts().await) == 1).then_some(()) },
    )
    .await;

    let mut agent = agent;
    assert!(
        agent.daemon.terminate().success(),
        "the agent stops cleanly on SIGTERM"
    );
    drop(agent);
    let agent = Agent::start(&agent_dir, &cp.endpoint(), "restart-agent").await;
    let log = std::fs::read_to_string(&agent.log).unwrap();
    let restored = log
        .lines()
        .rev()
        .find(|l| l.contains("restored the signals of processes still running"))
        .expect("the restarted agent restores signals");
    assert!(!restored.contains("processes=0"), "{restored}");

    // Once a finding made after the restart has arrived, the restarted
    // agent's start-up scan (which sees the model still held open) is done.
    let marker = tmp.path().join("after-restart.onnx");
    std::fs::write(&marker, b"\x08\x07").unwrap();
    let marker_pid = run(Command::new("/bin/cat").arg(&marker).stdout(Stdio::null()));
    wait_for(
        "the marker after the restart",
        Duration::from_secs(15),
        || async {
            cp.alerts()
                .await
                .into_iter()
                .find(|a| pid_of(a) == marker_pid)
        },
    )
    .await;
    assert_eq!(
        count(&cp.alerts().await),
        1,
        "the holder was reported again after the restart"
    );
}

/// AI servers by name: a program whose file name is a model server's
/// (`ollama`), one started under a model server's argv[0] (`exec -a`), and
/// `python3 -m vllm...` raise `ai_runtime` when they start; a look-alike
/// whose name only contains one (`ollama-docs`) raises nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_servers_are_known_by_name_at_exec_and_look_alikes_are_not() {
    if !privileged("ai_servers_are_known_by_name_at_exec_and_look_alikes_are_not") {
        return;
    }
    let h = AgentHost::start("signals-exec").await;
    let ollama = h.dir.join("ollama");
    let docs = h.dir.join("ollama-docs");
    for copy in [&ollama, &docs] {
        std::fs::copy("/bin/true", copy).unwrap();
    }
    let benign = run(&mut Command::new(&docs));
    let by_file = run(&mut Command::new(&ollama));
    let by_argv0 = run(Command::new("bash").args(["-c", "exec -a llama-server /bin/true"]));
    // A module dir named vllm on the path, so `-m vllm` runs (and exits).
    let module = h.dir.join("vllm");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::write(module.join("__main__.py"), "").unwrap();
    let by_module = run(Command::new("python3")
        .args(["-m", "vllm"])
        .current_dir(&h.dir));
    for (what, pid) in [
        ("ollama by file name", by_file),
        ("llama-server by argv[0]", by_argv0),
        ("python3 -m vllm", by_module),
    ] {
        let a = h
            .alert(what, |a| {
                signal_of(a) == SignalKind::AiRuntime && pid_of(a) == pid
            })
            .await;
        let summary = &a.finding.unwrap().summary;
        assert!(summary.contains("AI runtime"), "{what}: {summary}");
    }
    let alerts = h.cp.alerts().await;
    assert!(
        !alerts.iter().any(|a| pid_of(a) == benign),
        "ollama-docs raised an alert"
    );
}
