//! TPM 2.0 remote attestation, the verifier's side, with no I/O.
//!
//! An agent's TPM proves what booted and what ran: it signs a quote (a
//! TPMS_ATTEST over a digest of selected PCRs and the control plane's
//! nonce) with an attestation key (AK), a restricted signing key that only
//! signs structures the TPM made itself. This crate checks such proofs;
//! the daemons fetch and send the bytes.
//!
//! - [`TpmPublic`]: a key's public area, its Name, whether it may be an AK
//!   or an EK.
//! - [`verify_quote`]: signature, nonce, PCR selection and values of a
//!   quote, each refusal with a stable [`QuoteError::reason_code`].
//! - [`make_credential`]: TPM2_MakeCredential in software: a secret only
//!   the TPM holding the EK can recover, and only for a key whose Name it
//!   was made for: how an AK is proven to live in the TPM of a certified
//!   EK.
//! - [`EkCertificate`]: the EK certificate's chain to a manufacturer's
//!   root.
//! - [`EventLog`], [`ImaLog`]: the firmware's and the kernel's measurement
//!   logs, replayed into the PCR values a quote proves.
//! - [`tpm2_tools_files`]: the files tpm2-tools reads and writes.
//!
//! Architecture invariant: every parser here takes bytes that came off the
//! network; none panics, indexes out of bounds or allocates beyond its
//! input's size (logs are refused over their limits before parsing), and
//! every refusal names the structure, byte offset and field.

#![forbid(unsafe_code)]

mod attest;
mod credential;
mod ek_certificate;
mod event_log;
mod hash_alg;
mod ima_log;
mod pcr_selection;
mod pcr_values;
mod prepared_key;
mod quote_check;
mod signature;
pub mod tpm2_tools_files;
pub mod tpm_alg;
mod tpm_public;
mod wire;

#[cfg(test)]
mod fixtures_tests;
#[cfg(test)]
mod fuzz_tests;

pub use attest::{Attest, Attested, ClockInfo, QuoteInfo};
pub use credential::{make_credential, Credential, CredentialError};
pub use ek_certificate::{der_prefix, pem_certificates, EkCertError, EkCertificate, TpmInfo};
pub use event_log::{
    event_type, EventDigest, EventLog, EventLogBuilder, EventLogError, LogEvent, LogLimits,
};

pub use hash_alg::HashAlg;
pub use ima_log::{ima_ng_template_data, ImaEntry, ImaLog, ImaLogBuilder};

pub use pcr_selection::{BankSelection, PcrSelection};
pub use pcr_values::{check_values, pcr_digest, PcrBank, PcrError};
pub use prepared_key::PreparedKey;
pub use quote_check::{verify_quote, verify_quote_prepared, Hex, QuoteError, VerifiedQuote};
pub use signature::{verify, SignatureError, TpmtSignature};
pub use tpm_public::{
    AkError, AsymScheme, EccCurve, EkError, KdfScheme, KeyProblem, KeyType, ObjectAttributes,
    PublicKey, PublicParameters, PublicUnique, SymmetricDef, TpmPublic,
};
pub use wire::{ParseError, ParseErrorKind};
