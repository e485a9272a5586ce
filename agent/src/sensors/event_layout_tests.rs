use super::*;
use std::process::Command;

fn as_bytes<T: IntoBytes + Immutable>(v: &T) -> Vec<u8> {
    v.as_bytes().to_vec()
}

fn header(kind: u32, size: usize) -> RawEventHeader {
    let mut comm = [0u8; COMM_LEN];
    comm[..7].copy_from_slice(b"python3");
    RawEventHeader {
        kind,
        size: size as u32,
        ktime_boot_ns: 5,
        pid: 11,
        tgid: 10,
        ppid: 1,
        uid: 1000,
        comm,
        ..Default::default()
    }
}

fn exec_record(filename: &[u8], args: &[u8]) -> Vec<u8> {
    let size = size_of::<RawExecFixed>() + filename.len() + args.len();
    let fixed = RawExecFixed {
        hdr: header(EVENT_EXEC, size),
        filename_len: filename.len() as u32,
        args_len: args.len() as u32,
    };
    let mut out = as_bytes(&fixed);
    out.extend_from_slice(filename);
    out.extend_from_slice(args);
    out
}

fn open_record(path: &[u8], matched: u32) -> Vec<u8> {
    let size = size_of::<RawOpenFixed>() + path.len();
    let fixed = RawOpenFixed {
        hdr: header(EVENT_OPEN, size),
        dfd: -100,
        flags: 0,
        matched,
        path_len: path.len() as u32,
        ret: 3,
        origin: OPEN_SYSCALL,
        dev: 0,
        ino: 0,
    };
    let mut out = as_bytes(&fixed);
    out.extend_from_slice(path);
    out
}

#[test]
fn c_header_and_rust_mirror_agree_on_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let names = rust_layout();
    let mut prog = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"vigil_event.h\"\nint main(void) {\n",
    );
    for (name, _) in &names {
        prog.push_str(&format!("  printf(\"%zu\\n\", (size_t){name});\n"));
    }
    prog.push_str("  return 0;\n}\n");
    let src = dir.path().join("layout.c");
    let bin = dir.path().join("layout");
    std::fs::write(&src, prog).unwrap();
    let ebpf = concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf");
    let cc = Command::new("cc")
        .arg(format!("-I{ebpf}"))
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .output()
        .expect("a C compiler (cc) is needed for the layout test");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let out = Command::new(&bin).output().unwrap();
    let c_values: Vec<usize> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    for ((name, rust), c) in names.iter().zip(c_values) {
        assert_eq!(*rust, c, "{name}: Rust says {rust}, C says {c}");
    }
}

#[test]
fn exec_record_decodes_argv_and_replaces_invalid_utf8() {
    let rec = exec_record(b"/usr/bin/python3\0", b"python3\0-c\0\xffbad\0");
    let SensorEvent::Exec {
        ctx,
        filename,
        argv,
    } = decode(&rec).unwrap()
    else {
        panic!("not an exec");
    };
    assert_eq!(filename, "/usr/bin/python3");
    assert_eq!(argv, vec!["python3", "-c", "\u{fffd}bad"]);
    assert_eq!(ctx.pid, 10);
    assert_eq!(ctx.tid, 11);
    assert_eq!(ctx.comm, "python3");
}

#[test]
fn open_record_of_maximum_path_length_decodes() {
    let mut path = vec![b'a'; PATH_MAX - 1];
    path[0] = b'/';
    path.extend_from_slice(b"\0");
    let rec = open_record(&path, MATCH_MODEL_FILE);
    let SensorEvent::Open {
        path: p,
        matched,
        dfd,
        ..
    } = decode(&rec).unwrap()
    else {
        panic!("not an open");
    };
    assert_eq!(p.len(), PATH_MAX - 1);
    assert_eq!(matched, PathMatch::ModelFile);
    assert_eq!(dfd, -100);
}

#[test]
fn open_records_carry_the_opened_file_as_stat_names_it() {
    let path = b"/models/m.gguf\0";
    let mut rec = open_record(path, MATCH_MODEL_FILE);
    let at = |field| offset_of!(RawOpenFixed, origin) + field;
    rec[at(0)..at(4)].copy_from_slice(&OPEN_IO_URING.to_ne_bytes());
    // The kernel's dev_t of 259:70000 (major << 20 | minor), inode 42.
    let kernel_dev: u64 = (259 << 20) | 70000;
    let dev_at = offset_of!(RawOpenFixed, dev);
    rec[dev_at..dev_at + 8].copy_from_slice(&kernel_dev.to_ne_bytes());
    let ino_at = offset_of!(RawOpenFixed, ino);
    rec[ino_at..ino_at + 8].copy_from_slice(&42u64.to_ne_bytes());
    let SensorEvent::Open {
        origin, file, ret, ..
    } = decode(&rec).unwrap()
    else {
        panic!("not an open");
    };
    assert_eq!(origin, OpenOrigin::IoUring);
    assert_eq!(origin.fd(ret), Some(3));
    let file = file.expect("an identity");
    assert_eq!(file.ino, 42);
    assert_eq!(libc::major(file.dev), 259);
    assert_eq!(libc::minor(file.dev), 70000);

    // A real file: stat's st_dev is what the kernel's s_dev encodes to.
    let f = tempfile::NamedTempFile::new().unwrap();
    let meta = f.as_file().metadata().unwrap();
    let id = FileIdentity::of(&meta);
    let (major, minor) = (libc::major(id.dev) as u64, libc::minor(id.dev) as u64);
    assert_eq!(
        FileIdentity::from_kernel((major << 20) | minor, id.ino),
        Some(id)
    );
    // No inode: the kernel did not know the file.
    assert_eq!(FileIdentity::from_kernel(kernel_dev, 0), None);

    // Results that are no fd.
    assert_eq!(OpenOrigin::IoUringFixed.fd(0), None);
    assert_eq!(OpenOrigin::IoUringSubmitted.fd(0), None);
    assert_eq!(OpenOrigin::Syscall.fd(-2), None);
    rec[at(0)..at(4)].copy_from_slice(&9u32.to_ne_bytes());
    assert_eq!(decode(&rec), Err(DecodeError::UnknownOpenOrigin(9)));
}

#[test]
fn net_records_decode_ipv4_and_ipv6_endpoints() {
    let mut ev = RawNetEvent {
        hdr: header(EVENT_NET, size_of::<RawNetEvent>()),
        family: 2,
        op: NET_CONNECT,
        sport: 40000,
        dport: 11434,
        ..Default::default()
    };
    ev.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    let SensorEvent::Net { op, remote, .. } = decode(&as_bytes(&ev)).unwrap() else {
        panic!("not a net event");
    };
    assert_eq!(op, NetOp::Connect);
    assert_eq!(remote, "127.0.0.1:11434".parse().unwrap());
    ev.family = 10;
    ev.op = NET_LISTEN;
    ev.saddr = std::net::Ipv6Addr::LOCALHOST.octets();
    let SensorEvent::Net { op, local, .. } = decode(&as_bytes(&ev)).unwrap() else {
        panic!("not a net event");
    };
    assert_eq!(op, NetOp::Listen);
    assert_eq!(local, "[::1]:40000".parse().unwrap());
    ev.op = 9;
    assert_eq!(decode(&as_bytes(&ev)), Err(DecodeError::UnknownNetOp(9)));
}

fn file_map_record(components: &[&str], complete: bool) -> Vec<u8> {
    let name = b"libonnxruntime.so.1.17\0";
    let size = size_of::<RawFileMapFixed>() + PATH_COMPONENTS * COMPONENT_MAX + name.len();
    let fixed = RawFileMapFixed {
        hdr: header(EVENT_FILE_MAP, size),
        fd: 3,
        matched: MATCH_AI_RUNTIME,
        name_len: name.len() as u32,
        prot: 5,
        length: 4096,
        dev: (8 << 20) | 1,
        ino: 42,
        component_count: components.len() as u32,
        path_complete: complete as u32,
    };
    let mut rec = as_bytes(&fixed);
    let mut block = vec![0u8; PATH_COMPONENTS * COMPONENT_MAX];
    for (i, c) in components.iter().enumerate() {
        block[i * COMPONENT_MAX..i * COMPONENT_MAX + c.len()].copy_from_slice(c.as_bytes());
    }
    rec.extend_from_slice(&block);
    rec.extend_from_slice(name);
    rec
}

#[test]
fn file_map_records_carry_the_library_name_and_walked_path() {
    let rec = file_map_record(&["libonnxruntime.so.1.17", "lib", "opt"], true);
    let SensorEvent::FileMap {
        fd,
        matched,
        name,
        path,
        file,
        ..
    } = decode(&rec).unwrap()
    else {
        panic!("not a file map");
    };
    assert_eq!(file, FileIdentity::from_kernel((8 << 20) | 1, 42));
    assert_eq!(file.unwrap().dev, libc::makedev(8, 1));
    assert_eq!(
        (fd, matched, name.as_str(), path.as_deref()),
        (
            3,
            PathMatch::AiRuntime,
            "libonnxruntime.so.1.17",
            Some("/opt/lib/libonnxruntime.so.1.17")
        )
    );
    let SensorEvent::FileMap { path, .. } =
        decode(&file_map_record(&["x.so", "deep"], false)).unwrap()
    else {
        panic!("not a file map");
    };
    assert_eq!(path.as_deref(), Some("/…/deep/x.so"));
    let SensorEvent::FileMap { path, .. } = decode(&file_map_record(&[], false)).unwrap() else {
        panic!("not a file map");
    };
    assert_eq!(path, None);
}

#[test]
fn malformed_records_are_errors_not_panics() {
    assert!(matches!(decode(&[1, 2, 3]), Err(DecodeError::Short { .. })));
    let mut rec = open_record(b"/m.onnx\0", MATCH_MODEL_FILE);
    rec.pop();
    assert!(matches!(
        decode(&rec),
        Err(DecodeError::SizeMismatch { .. })
    ));
    let rec = open_record(b"/m.onnx\0", 77);
    assert_eq!(decode(&rec), Err(DecodeError::UnknownMatch(77)));
    let mut rec = exec_record(b"/bin/x\0", b"");
    // Claim a filename longer than what follows.
    let off = offset_of!(RawExecFixed, filename_len);
    rec[off..off + 4].copy_from_slice(&9999u32.to_ne_bytes());
    assert!(matches!(
        decode(&rec),
        Err(DecodeError::Overrun {
            field: "filename",
            ..
        })
    ));
    let mut rec = exec_record(b"/bin/x\0", b"");
    rec[0..4].copy_from_slice(&42u32.to_ne_bytes());
    assert_eq!(decode(&rec), Err(DecodeError::UnknownKind(42)));
    // Every truncation of a valid record is an error, never a panic.
    let rec = exec_record(b"/usr/bin/python3\0", b"python3\0x\0");
    for n in 0..rec.len() {
        assert!(decode(&rec[..n]).is_err());
    }
}
