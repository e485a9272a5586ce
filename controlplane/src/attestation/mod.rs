//! TPM attestation, the verifier's side (the node holding an agent's
//! session runs it for that agent).

pub mod nonce_book;
pub mod stale_sweep;
pub mod tpm_roots;
pub mod verifier;

pub use verifier::{EnrolledTpm, PendingEnrollment, Refusal, Verifier, VerifierConfig};
