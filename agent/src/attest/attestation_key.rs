//! The attestation key (AK): a restricted RSA-2048 signing key
//! (RSASSA-SHA256, fixedTPM, fixedParent) under the EK, as tss-esapi's
//! `ak::create_ak` makes it. The agent makes one per process start and
//! keeps its public and (TPM-encrypted) private parts in memory; each use
//! loads it under the EK again, so it survives a TPM reset.
//!
//! TPM2_ActivateCredential proves to the control plane that this AK lives
//! in the TPM holding that EK: the EK is authorised by a policy session
//! with PolicySecret(TPM_RH_ENDORSEMENT) (the EK template's policy), the
//! AK by its (empty) password.

use sha2::{Digest as _, Sha256};
use tss_esapi::abstraction::ak;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, KeyHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{EncryptedSecret, IdObject, Private, Public, SymmetricDefinition};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::Context;

use super::endorsement::load_ek;
use super::tpm_device::flush;
use super::tpm_error::{at, TpmError};
use super::tpm_wire::{tpm2b, tpm2b_body};

/// TPM_ALG_SHA256, the AK's name algorithm.
const TPM_ALG_SHA256: u16 = 0x000b;

/// An attestation key as the TPM made it.
#[derive(Clone, PartialEq, Eq)]
pub struct AttestationKey {
    /// TPM2B_PUBLIC.
    pub public: Vec<u8>,
    /// TPM2B_PRIVATE: encrypted by the EK, usable only in this TPM.
    pub private: Vec<u8>,
}

impl std::fmt::Debug for AttestationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestationKey")
            .field("name", &self.name().map(hex::encode).unwrap_or_default())
            .finish_non_exhaustive()
    }
}

impl AttestationKey {
    /// The key's TPM name: its name algorithm (sha256) and the sha256 of
    /// its TPMT_PUBLIC, what MakeCredential binds the secret to.
    pub fn name(&self) -> Result<Vec<u8>, TpmError> {
        let tpmt = tpm2b_body("the AK's TPM2B_PUBLIC", &self.public)?;
        let name_alg = tpmt
            .get(2..4)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| TpmError::Invalid {
                what: "the AK's TPMT_PUBLIC",
                problem: format!("{} bytes, too short for a name algorithm", tpmt.len()),
            })?;
        if name_alg != TPM_ALG_SHA256 {
            return Err(TpmError::Invalid {
                what: "the AK's TPMT_PUBLIC",
                problem: format!("name algorithm 0x{name_alg:04x}, not sha256"),
            });
        }
        let mut name = TPM_ALG_SHA256.to_be_bytes().to_vec();
        name.extend_from_slice(&Sha256::digest(tpmt));
        Ok(name)
    }

    fn tss_public(&self) -> Result<Public, TpmError> {
        let tpmt = tpm2b_body("the AK's TPM2B_PUBLIC", &self.public)?;
        Public::unmarshall(tpmt).map_err(at("unmarshalling the AK's TPMT_PUBLIC"))
    }

    fn tss_private(&self) -> Result<Private, TpmError> {
        let body = tpm2b_body("the AK's TPM2B_PRIVATE", &self.private)?;
        Private::try_from(body.to_vec()).map_err(at("the AK's TPM2B_PRIVATE"))
    }
}

/// Makes an AK under the loaded EK.
pub(crate) fn create(ctx: &mut Context, ek: KeyHandle) -> Result<AttestationKey, TpmError> {
    let created = ak::create_ak(
        ctx,
        ek,
        HashingAlgorithm::Sha256,
        SignatureSchemeAlgorithm::RsaSsa,
        None,
        None,
    )
    .map_err(at(
        "TPM2_Create of the AK under the EK (PolicySecret on the endorsement hierarchy)",
    ))?;
    let public = created
        .out_public
        .marshall()
        .map_err(at("marshalling the AK's TPMT_PUBLIC"))?;
    Ok(AttestationKey {
        public: tpm2b("the AK's TPM2B_PUBLIC", &public)?,
        private: tpm2b("the AK's TPM2B_PRIVATE", created.out_private.value())?,
    })
}

/// Loads `key` under the loaded EK; the caller flushes the handle.
pub(crate) fn load(
    ctx: &mut Context,
    ek: KeyHandle,
    key: &AttestationKey,
) -> Result<KeyHandle, TpmError> {
    let public = key.tss_public()?;
    let private = key.tss_private()?;
    ak::load_ak(ctx, ek, None, private, public).map_err(at(
        "TPM2_Load of the AK under the EK (PolicySecret on the endorsement hierarchy)",
    ))
}

/// The EK and the AK loaded, each flushed after use.
pub(crate) fn activate_credential(
    ctx: &mut Context,
    key: &AttestationKey,
    id_object: &[u8],
    encrypted_secret: &[u8],
) -> Result<Vec<u8>, TpmError> {
    let id_object = IdObject::try_from(tpm2b_body("id_object (TPM2B_ID_OBJECT)", id_object)?)
        .map_err(at("id_object (TPM2B_ID_OBJECT)"))?;
    let encrypted_secret = EncryptedSecret::try_from(tpm2b_body(
        "encrypted_secret (TPM2B_ENCRYPTED_SECRET)",
        encrypted_secret,
    )?)
    .map_err(at("encrypted_secret (TPM2B_ENCRYPTED_SECRET)"))?;

    let ek = load_ek(ctx)?;
    let ak = match load(ctx, ek.handle, key) {
        Ok(ak) => ak,
        Err(e) => {
            ek.release(ctx);
            return Err(e);
        }
    };
    let secret = with_ek_policy_session(ctx, |ctx, ek_session| {
        ctx.execute_with_sessions(
            (Some(AuthSession::Password), Some(ek_session), None),
            |ctx| ctx.activate_credential(ak, ek.handle, id_object, encrypted_secret),
        )
        .map_err(at("TPM2_ActivateCredential with the AK and the EK"))
    });
    flush(ctx, ak, "AK");
    ek.release(ctx);
    Ok(secret?.value().to_vec())
}

/// Runs `f` with a policy session that satisfies the EK's policy
/// (PolicySecret on TPM_RH_ENDORSEMENT), flushed afterwards.
fn with_ek_policy_session<T>(
    ctx: &mut Context,
    f: impl FnOnce(&mut Context, AuthSession) -> Result<T, TpmError>,
) -> Result<T, TpmError> {
    let session = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(at("TPM2_StartAuthSession (policy session for the EK)"))?
        .ok_or_else(|| TpmError::Unexpected {
            what: "TPM2_StartAuthSession (policy session for the EK)",
            problem: "no session handle".into(),
        })?;
    let out = PolicySession::try_from(session)
        .map_err(at("the EK's policy session"))
        .and_then(|policy| {
            ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.policy_secret(
                    policy,
                    AuthHandle::Endorsement,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                    None,
                )
            })
            .map_err(at("TPM2_PolicySecret on the endorsement hierarchy"))
        })
        .and_then(|_| f(ctx, session));
    flush(ctx, SessionHandle::from(session), "EK policy session");
    out
}
