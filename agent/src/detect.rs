//! The detect stage: sensor batches, GPU readings and approved workloads
//! in; findings ready for policy out (`Detections`, one per input).
//!
//! Inside: the process table, the detector (built-in rules, dedup), the
//! digests of executables and model files (hashed off the loop, once per
//! file version), listener probes, and the signal memory that survives a
//! restart. What runs off the loop is started and finished here.

mod detect_stage;
pub mod detector;
pub mod file_digest;
mod library_check;
pub mod model_examination;
pub mod process_table;
pub mod reported_signals;
pub mod serving_probe;
pub mod signal_memory;
pub mod untrusted_file;

pub use detect_stage::{DetectInputs, DetectOutputs, DetectStage, Detections, TimedFinding};
