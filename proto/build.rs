//! Compiles `proto/vigil/**.proto` with protox (pure Rust, no protoc) and
//! generates tonic clients and servers, plus a descriptor set for reflection;
//! and, apart, the vendored KServe v2 protocol (`proto/kserve/`) for the
//! inference sidecar; and the vendored OTLP logs service
//! (`proto/opentelemetry/`) for the SIEM forwarder.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "vigil/types/v1/types.proto",
    "vigil/agent/v1/agent.proto",
    "vigil/admin/v1/admin.proto",
    "vigil/siem/v1/siem.proto",
    "vigil/raft/v1/raft.proto",
];

/// The KServe v2 inference protocol as Triton ships it (`proto/kserve/`,
/// include path `kserve`, where its `import "model_config.proto"` resolves).
/// Compiled apart: not in the vigil descriptor set, whose every RPC the
/// control plane's authorization table must name.
const KSERVE_PROTOS: &[&str] = &["grpc_service.proto"];
const KSERVE_INCLUDE: &str = "kserve";

/// The OTLP logs service and the messages it imports, as OpenTelemetry
/// publishes them (`proto/opentelemetry/`): the client `vigilctl siem otlp`
/// pushes the SIEM export with, and the receiver the tests and benchmarks
/// run. Compiled apart, like KServe.
const OTLP_PROTOS: &[&str] =
    &["opentelemetry/opentelemetry/proto/collector/logs/v1/logs_service.proto"];
const OTLP_INCLUDE: &str = "opentelemetry";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["."])?;
    std::fs::write(
        out_dir.join("vigil_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=vigil");

    let kserve = protox::compile(KSERVE_PROTOS, [KSERVE_INCLUDE])?;
    let mut messages = tonic_prost_build::Config::new();
    // The messages' comments are Sphinx markup whose indented lines rustdoc
    // would take for doctests; read the .proto files instead.
    messages.disable_comments(["."]);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Tensor contents arrive as `Bytes` sliced from the receive buffer.
        .bytes(".")
        // A malformed request is the caller's error: INVALID_ARGUMENT.
        .codec_path("crate::kserve_codec::KserveCodec")
        .compile_fds_with_config(kserve, messages)?;
    println!("cargo:rerun-if-changed={KSERVE_INCLUDE}");

    let otlp = protox::compile(OTLP_PROTOS, [OTLP_INCLUDE])?;
    let mut messages = tonic_prost_build::Config::new();
    // The comments hold indented examples rustdoc would take for doctests.
    messages.disable_comments(["."]);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds_with_config(otlp, messages)?;
    println!("cargo:rerun-if-changed={OTLP_INCLUDE}");
    Ok(())
}
