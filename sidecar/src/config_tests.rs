use super::*;

fn parse(args: &[&str]) -> Result<SidecarConfig, clap::Error> {
    SidecarConfig::try_parse_from(std::iter::once("vigil-sidecar").chain(args.iter().copied()))
}

const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

#[test]
fn the_contract_flags_parse() {
    let model = format!("m:2:{DIGEST}:/models/m.onnx");
    let config = parse(&[
        "--ort-lib",
        "/opt/ort/libonnxruntime.so.1.32.0",
        "--listen",
        "unix:/run/vigil/s.sock",
        "--model",
        &model,
        "--model",
        &model.replace("m:2", "n:1"),
        "--control-fd",
        "3",
        "--intra-threads",
        "4",
        "--inter-threads",
        "2",
        "--opt-level",
        "extended",
        "--execution-provider",
        "cuda",
        "--max-request-bytes",
        "1048576",
        "--log-format",
        "json",
    ])
    .unwrap();
    assert_eq!(
        config.listen,
        ListenAddress::Unix("/run/vigil/s.sock".into())
    );
    assert_eq!(config.models.len(), 2);
    assert_eq!(config.models[1].identity.name, "n");
    assert_eq!(config.control_fd, Some(3));
    assert_eq!(config.max_request_bytes, 1 << 20);
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(
        config.session_settings(),
        SessionSettings {
            intra_threads: 4,
            inter_threads: 2,
            opt_level: OptLevel::Extended,
            execution_provider: ExecutionProviderChoice::Cuda,
        }
    );
}

#[test]
fn defaults_are_cpu_all_optimisations_and_64_mib() {
    let config = parse(&["--ort-lib", "/l.so", "--listen", "tcp:127.0.0.1:0"]).unwrap();
    assert_eq!(config.session_settings(), SessionSettings::default());
    assert_eq!(config.max_request_bytes, 64 << 20);
    assert!(config.models.is_empty());
    assert_eq!(config.control_fd, None);
}

#[test]
fn missing_or_malformed_flags_are_usage_errors() {
    for args in [
        &["--listen", "tcp:127.0.0.1:0"][..],
        &["--ort-lib", "/l.so"],
        &["--ort-lib", "/l.so", "--listen", "http://x"],
        &[
            "--ort-lib",
            "/l.so",
            "--listen",
            "tcp:h:1",
            "--opt-level",
            "max",
        ],
        &[
            "--ort-lib",
            "/l.so",
            "--listen",
            "tcp:h:1",
            "--execution-provider",
            "rocm",
        ],
        &[
            "--ort-lib",
            "/l.so",
            "--listen",
            "tcp:h:1",
            "--max-request-bytes",
            "10",
        ],
        &[
            "--ort-lib",
            "/l.so",
            "--listen",
            "tcp:h:1",
            "--model",
            "m:1:abc:/p",
        ],
    ] {
        let err = parse(args).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
    }
}

#[test]
fn tcp_clients_may_act_as_an_unprivileged_uid_but_never_as_root() {
    let base = ["--ort-lib", "/l.so", "--listen", "tcp:127.0.0.1:0"];
    let with = |uid: &str| {
        let mut args = base.to_vec();
        args.extend(["--tcp-shared-memory-uid", uid]);
        parse(&args)
    };
    assert_eq!(with("1000").unwrap().tcp_shared_memory_uid, Some(1000));
    assert_eq!(parse(&base).unwrap().tcp_shared_memory_uid, None);
    // Every TCP peer, remote ones included, would read and write root's
    // files in /dev/shm (other root daemons' shared memory).
    let err = with("0").unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    assert!(err.to_string().contains("root"), "{err}");
    for bad in ["-1", "x", "4294967296"] {
        assert_eq!(with(bad).unwrap_err().exit_code(), 2, "{bad}");
    }
}

#[test]
fn the_input_budget_defaults_to_four_requests_and_is_never_below_one() {
    let base = ["--ort-lib", "/l.so", "--listen", "tcp:127.0.0.1:0"];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend(extra);
        parse(&args).and_then(SidecarConfig::checked)
    };
    let config = with(&[]).unwrap();
    assert_eq!(config.max_input_bytes_in_flight, None);
    assert_eq!(config.input_budget_bytes(), Ok(256 << 20));
    let config = with(&["--max-request-bytes", "2097152"]).unwrap();
    assert_eq!(config.input_budget_bytes(), Ok(8 << 20));
    let config = with(&["--max-input-bytes-in-flight", "67108864"]).unwrap();
    assert_eq!(config.input_budget_bytes(), Ok(64 << 20));
    // Below one request's limit: a request let in could never run.
    let err = with(&["--max-input-bytes-in-flight", "67108863"]).unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    assert!(
        err.to_string()
            .contains("is below --max-request-bytes 67108864"),
        "{err}"
    );
    for bad in ["1048575", "1099511627777", "-1", "x"] {
        let err = with(&["--max-input-bytes-in-flight", bad]).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{bad}: {err}");
    }
}
