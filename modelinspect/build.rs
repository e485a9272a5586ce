//! Compiles the vendored `proto/onnx/onnx.proto` (ONNX's schema, see
//! `proto/onnx/README.md`) with protox (pure Rust, no protoc) into
//! `$OUT_DIR/onnx.rs`, which `src/onnx.rs` includes.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["onnx/onnx.proto"], ["proto"])?;
    prost_build::Config::new()
        // The schema's comments hold indented text rustdoc would take for
        // doctests; the README points at the file instead.
        .disable_comments(["."])
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
