//! vigil's identities.
//!
//! Every connection to or between vigil daemons is mutual TLS, and who is
//! on the other end is read from the peer's certificate, never from what
//! it says in a message. This crate is the vocabulary and the arithmetic
//! of that, with no I/O:
//!
//! - [`Identity`]: an agent, a control-plane node or an operator with a
//!   role, written into a certificate as one SPIFFE-style URI
//!   (`spiffe://vigil/agent/<id>`) and read back from a verified peer
//!   certificate.
//! - [`CertificateAuthority`]: a fleet's CA (`vigilctl ca init`), which
//!   issues certificates for an identity, from a key it makes or from a
//!   certificate request whose own names it ignores.
//! - [`JoinToken`]: a one-time, expiring secret an agent enrolls with; the
//!   control plane keeps only its digest ([`TokenRecord`]) and decides with
//!   a time it is given, so replicas applying the same command agree.
//!
//! Architecture invariant: the identity a certificate names is decided by
//! the CA at issue time; nothing a requester puts in a request (subject,
//! names, extensions) reaches the certificate.

#![forbid(unsafe_code)]

mod authority;
mod certificate_info;
mod identity;
mod join_token;

pub use authority::{
    certificate_request, certificate_request_for, public_key_info_of, public_key_info_of_request,
    CertificateAuthority, IssuedCertificate, LeafRequest, PkiError,
};
pub use certificate_info::{CertificateInfo, CertificateInfoError};
pub use identity::{Identity, IdentityError, OperatorRole, TRUST_DOMAIN};
pub use join_token::{JoinToken, JoinTokenError, TokenRecord, TokenRefused};
