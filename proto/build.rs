//! Compiles `proto/vigil/**.proto` with protox (pure Rust, no protoc) and
//! generates tonic clients and servers, plus a descriptor set for reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "vigil/types/v1/types.proto",
    "vigil/agent/v1/agent.proto",
    "vigil/admin/v1/admin.proto",
    "vigil/siem/v1/siem.proto",
    "vigil/raft/v1/raft.proto",
];

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
    Ok(())
}
