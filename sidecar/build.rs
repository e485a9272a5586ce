//! Compiles ONNX's schema (the copy vendored for `vigil-modelinspect`,
//! `modelinspect/proto/onnx/onnx.proto`) with protox into prost types, from
//! which `src/onnx_builder.rs` writes small models for tests and benchmarks.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let include = "../modelinspect/proto";
    let fds = protox::compile(["onnx/onnx.proto"], [include])?;
    prost_build::Config::new()
        // The schema's comments hold indented text rustdoc would take for
        // doctests.
        .disable_comments(["."])
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed={include}");
    Ok(())
}
