//! The host's TPM 2.0 and the agent's part of remote attestation: the EK
//! and its certificate, an attestation key made per process start,
//! credential activation, quotes with the measurement logs, and sealing
//! small secrets to PCR values (`vigil-agent tpm seal|unseal|quote`).
//!
//! A shared leaf: the shipper answers the control plane's challenges and
//! quote requests with an [`Attestor`], off the async runtime (every TPM
//! call blocks); `config` parses `--tpm` into a [`TpmSelection`].

pub mod attestation_key;
pub mod attestor;
pub mod endorsement;
pub mod event_logs;
pub mod pcr_list;
pub mod pcr_values;
pub mod quote;
pub mod sealed_secret;
mod sealing;
pub mod tpm_cli;
pub mod tpm_device;
pub mod tpm_error;
pub mod tpm_selection;
pub mod tpm_wire;

pub use attestation_key::AttestationKey;
pub use attestor::{AttestedQuote, Attestor, Enrollment};
pub use endorsement::Endorsement;
pub use event_logs::{EventLogPaths, EventLogs};
pub use pcr_list::{PcrBank, PcrList};
pub use quote::QuoteAnswer;
pub use sealed_secret::SealedSecret;
pub use tpm_device::Tpm;
pub use tpm_error::TpmError;
pub use tpm_selection::{TpmSelection, TpmTarget};
