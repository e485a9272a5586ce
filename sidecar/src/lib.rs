//! vigil-sidecar: serves approved ONNX models through ONNX Runtime (ort,
//! the library loaded from an explicit path) over the KServe v2 gRPC
//! protocol, so that Triton clients work unchanged.
//!
//! Architecture invariants: a model is served only from bytes that hash to
//! the sha256 it was approved with, and the very bytes hashed are the ones
//! ONNX Runtime loads (`served_model.rs`, `model_bytes.rs`), and only
//! self-contained models, no tensor's data in an external file
//! (`self_contained.rs`); the control
//! socket is only the agent's (an inherited descriptor, never a name in the
//! file system); bad input on either socket is an error reply, never the
//! process's end.
//!
//! `unsafe` is denied except where descriptors are taken over
//! (`control_socket.rs`) and where SIGXFSZ is ignored
//! (`shared_memory.rs`), each with its SAFETY comment.

#![deny(unsafe_code)]

pub mod bounded_text;
pub mod config;
pub mod control_protocol;
pub mod control_session;
pub mod control_socket;
pub mod datatype;
pub mod infer_error;
pub mod inference_request;
pub mod inference_service;
pub mod input_budget;
pub mod listen_address;
pub mod model_bytes;
pub mod model_identity;
pub mod model_loader;
pub mod onnx_builder;
pub mod ort_runtime;
pub mod oversize_request;
pub mod self_contained;
pub mod served_model;
pub mod served_models;
pub mod server;
pub mod session_runner;
pub mod session_settings;
pub mod shared_memory;
pub mod tensor_data;
pub mod unix_socket_path;

#[cfg(test)]
mod test_runtime;
