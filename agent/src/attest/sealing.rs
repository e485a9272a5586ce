//! Sealing a small secret to PCR values: a sealed data object (keyed
//! hash, no sign or decrypt) under a storage primary key made from the
//! TCG SRK template (RSA-2048, AES-128-CFB, in the owner hierarchy: the
//! same key every time), whose authPolicy is TPM2_PolicyPCR over sha256
//! PCRs at their values when sealed. Unsealing replays PolicyPCR in a
//! policy session: the TPM refuses (TPM_RC_POLICY_FAIL) once any of those
//! PCRs changed.
//!
//! The secret crosses to and from the TPM encrypted: the sessions are
//! salted with the SRK and encrypt the command's and response's first
//! parameter.

use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Digest, KeyedHashScheme, Private, Public, PublicBuilder, PublicKeyRsa,
    PublicKeyedHashParameters, PublicRsaParametersBuilder, RsaExponent, SensitiveData,
    SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::Context;

use super::pcr_list::{PcrBank, PcrList};
use super::pcr_values::{self, pcr_digest};
use super::sealed_secret::SealedSecret;
use super::tpm_device::flush;
use super::tpm_error::{at, TpmError};
use super::tpm_wire::{tpm2b, tpm2b_body};

/// The most a sealed data object holds (the TPM's MAX_SYM_DATA).
pub const MAX_SECRET_LEN: usize = 128;

pub(crate) fn seal(
    ctx: &mut Context,
    secret: &[u8],
    pcrs: &PcrList,
) -> Result<SealedSecret, TpmError> {
    if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
        return Err(TpmError::Invalid {
            what: "the secret to seal",
            problem: format!(
                "{} bytes; a TPM seals 1 to {MAX_SECRET_LEN} (seal a key that encrypts larger data)",
                secret.len()
            ),
        });
    }
    let data = SensitiveData::try_from(secret.to_vec()).map_err(at("the secret to seal"))?;
    let srk = create_srk(ctx)?;
    let sealed = seal_under(ctx, srk, data, pcrs);
    flush(ctx, srk, "storage primary key");
    sealed
}

fn seal_under(
    ctx: &mut Context,
    srk: KeyHandle,
    data: SensitiveData,
    pcrs: &PcrList,
) -> Result<SealedSecret, TpmError> {
    let values = pcr_values::read(ctx, PcrBank::Sha256, pcrs)?;
    let policy = pcr_policy_digest(ctx, pcrs, &pcr_digest(&values))?;
    let template = sealed_object_template(policy)?;
    let session = salted_session(ctx, srk, SessionType::Hmac)?;
    let created = ctx
        .execute_with_session(Some(session), |ctx| {
            ctx.create(srk, template, None, Some(data), None, None)
        })
        .map_err(at(
            "TPM2_Create of the sealed data object under the storage primary key",
        ));
    flush(ctx, SessionHandle::from(session), "sealing session");
    let created = created?;
    let public = created
        .out_public
        .marshall()
        .map_err(at("marshalling the sealed object's TPMT_PUBLIC"))?;
    Ok(SealedSecret {
        pcrs: pcrs.clone(),
        public: tpm2b("the sealed object's TPM2B_PUBLIC", &public)?,
        private: tpm2b(
            "the sealed object's TPM2B_PRIVATE",
            created.out_private.value(),
        )?,
    })
}

pub(crate) fn unseal(ctx: &mut Context, sealed: &SealedSecret) -> Result<Vec<u8>, TpmError> {
    let public = Public::unmarshall(tpm2b_body(
        "the sealed object's TPM2B_PUBLIC",
        &sealed.public,
    )?)
    .map_err(at("unmarshalling the sealed object's TPMT_PUBLIC"))?;
    let private = Private::try_from(tpm2b_body(
        "the sealed object's TPM2B_PRIVATE",
        &sealed.private,
    )?)
    .map_err(at("the sealed object's TPM2B_PRIVATE"))?;
    let srk = create_srk(ctx)?;
    let loaded = match ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.load(srk, private, public)
        })
        .map_err(at(
            "TPM2_Load of the sealed object under the storage primary key (sealed by another TPM, or its owner hierarchy was cleared?)",
        )) {
        Ok(object) => match salted_session(ctx, srk, SessionType::Policy) {
            Ok(session) => Ok((object, session)),
            Err(e) => {
                flush(ctx, object, "sealed object");
                Err(e)
            }
        },
        Err(e) => Err(e),
    };
    // The session is salted; the key is no longer needed.
    flush(ctx, srk, "storage primary key");
    let (object, session) = loaded?;
    let secret = unseal_with(ctx, object, session, &sealed.pcrs);
    flush(
        ctx,
        SessionHandle::from(session),
        "unsealing policy session",
    );
    flush(ctx, object, "sealed object");
    secret
}

fn unseal_with(
    ctx: &mut Context,
    object: KeyHandle,
    session: AuthSession,
    pcrs: &PcrList,
) -> Result<Vec<u8>, TpmError> {
    let policy = PolicySession::try_from(session).map_err(at("the unsealing policy session"))?;
    let selection = pcr_values::selection(PcrBank::Sha256, pcrs.indices().iter().copied())?;
    // An empty pcrDigest: the TPM takes the PCRs' current values.
    ctx.execute_without_session(|ctx| ctx.policy_pcr(policy, Digest::default(), selection))
        .map_err(at("TPM2_PolicyPCR"))?;
    match ctx.execute_with_session(Some(session), |ctx| ctx.unseal(object.into())) {
        Ok(data) => Ok(data.value().to_vec()),
        Err(tss) if TpmError::is_policy_fail(&tss) => Err(TpmError::PcrsChanged {
            step: "TPM2_Unseal",
            tss,
        }),
        Err(tss) => Err(TpmError::Command {
            step: "TPM2_Unseal",
            tss,
        }),
    }
}

/// The policy digest of PolicyPCR over `pcrs` at `digest` (a trial
/// session computes it).
fn pcr_policy_digest(
    ctx: &mut Context,
    pcrs: &PcrList,
    digest: &[u8; 32],
) -> Result<Digest, TpmError> {
    let session = start_session(ctx, None, SessionType::Trial, SymmetricDefinition::Null)?;
    let out = PolicySession::try_from(session)
        .map_err(at("the trial policy session"))
        .and_then(|policy| {
            let selection = pcr_values::selection(PcrBank::Sha256, pcrs.indices().iter().copied())?;
            let digest = Digest::try_from(digest.to_vec()).map_err(at("the PCR digest"))?;
            ctx.execute_without_session(|ctx| {
                ctx.policy_pcr(policy, digest, selection)?;
                ctx.policy_get_digest(policy)
            })
            .map_err(at(
                "TPM2_PolicyPCR, TPM2_PolicyGetDigest in a trial session",
            ))
        });
    flush(ctx, SessionHandle::from(session), "trial policy session");
    out
}

fn start_session(
    ctx: &mut Context,
    salt_key: Option<KeyHandle>,
    kind: SessionType,
    symmetric: SymmetricDefinition,
) -> Result<AuthSession, TpmError> {
    ctx.execute_without_session(|ctx| {
        ctx.start_auth_session(
            salt_key,
            None,
            None,
            kind,
            symmetric,
            HashingAlgorithm::Sha256,
        )
    })
    .map_err(at("TPM2_StartAuthSession"))?
    .ok_or_else(|| TpmError::Unexpected {
        what: "TPM2_StartAuthSession",
        problem: "no session handle".into(),
    })
}

/// A session salted with the SRK that encrypts the secret both ways.
fn salted_session(
    ctx: &mut Context,
    srk: KeyHandle,
    kind: SessionType,
) -> Result<AuthSession, TpmError> {
    let session = start_session(ctx, Some(srk), kind, SymmetricDefinition::AES_128_CFB)?;
    let (attributes, mask) = SessionAttributesBuilder::new()
        .with_continue_session(true)
        .with_decrypt(true)
        .with_encrypt(true)
        .build();
    if let Err(tss) = ctx.tr_sess_set_attributes(session, attributes, mask) {
        flush(ctx, SessionHandle::from(session), "session");
        return Err(TpmError::Command {
            step: "Esys_TRSess_SetAttributes (parameter encryption)",
            tss,
        });
    }
    Ok(session)
}

/// The storage primary key of the TCG SRK template (RSA-2048).
fn create_srk(ctx: &mut Context) -> Result<KeyHandle, TpmError> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .map_err(at("the SRK template's attributes"))?;
    let template = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Rsa)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_rsa_parameters(
            PublicRsaParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                RsaKeyBits::Rsa2048,
                RsaExponent::default(),
            )
            .build()
            .map_err(at("the SRK template's RSA parameters"))?,
        )
        .with_rsa_unique_identifier(PublicKeyRsa::default())
        .build()
        .map_err(at("the SRK template"))?;
    let created = ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
        })
        .map_err(at(
            "TPM2_CreatePrimary of the storage primary key (SRK template) in the owner hierarchy",
        ))?;
    Ok(created.key_handle)
}

/// A sealed data object that only PolicyPCR at `policy` can read.
fn sealed_object_template(policy: Digest) -> Result<Public, TpmError> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_no_da(true)
        .with_admin_with_policy(true)
        .with_user_with_auth(false)
        .build()
        .map_err(at("the sealed object's attributes"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_auth_policy(policy)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
        .map_err(at("the sealed object's template"))
}
