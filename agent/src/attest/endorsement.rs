//! The endorsement key: the RSA EK of the TCG default template (EK
//! Credential Profile, template L-1) and its certificate in NV index
//! 0x01c00002, which the TPM's maker signed.
//!
//! The EK is the persistent key at 0x81010001 where that is the key of
//! the default template (as provisioning tools leave it), else it is made
//! from the template in the endorsement hierarchy (the same key every
//! time: it derives from the TPM's endorsement seed) and flushed after
//! use.

use tss_esapi::abstraction::{ek, AsymmetricAlgorithmSelection};
use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::{KeyHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::AsymmetricAlgorithm;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{CapabilityData, Public};
use tss_esapi::traits::Marshall;
use tss_esapi::Context;

use super::tpm_device::flush;
use super::tpm_error::{at, TpmError};
use super::tpm_wire::{der_prefix, tpm2b};

/// Where provisioning persists the RSA EK (TCG EK Credential Profile).
pub const EK_PERSISTENT_HANDLE: u32 = 0x8101_0001;
/// The NV index of the RSA-2048 EK certificate.
pub const EK_CERTIFICATE_NV_INDEX: u32 = 0x01c0_0002;

/// What the TPM says about its endorsement key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endorsement {
    /// The EK certificate, DER, cut to its length.
    pub ek_certificate_der: Vec<u8>,
    /// TPM2B_PUBLIC of the EK.
    pub ek_public: Vec<u8>,
}

/// The EK, loaded for this connection.
pub(crate) struct LoadedEk {
    pub handle: KeyHandle,
    /// Made by this connection (flush it), not the persistent one.
    transient: bool,
}

impl LoadedEk {
    /// Flushes the EK if this connection made it.
    pub fn release(self, ctx: &mut Context) {
        if self.transient {
            flush(ctx, self.handle, "EK");
        }
    }
}

/// The EK of the default RSA template: the persistent one when it is that
/// key, else made from the template.
pub(crate) fn load_ek(ctx: &mut Context) -> Result<LoadedEk, TpmError> {
    let template = default_template()?;
    if let Some(handle) = persistent_ek(ctx, &template)? {
        return Ok(LoadedEk {
            handle,
            transient: false,
        });
    }
    let created = ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.create_primary(Hierarchy::Endorsement, template, None, None, None, None)
        })
        .map_err(at(
            "TPM2_CreatePrimary of the EK (TCG default RSA template) in the endorsement hierarchy",
        ))?;
    Ok(LoadedEk {
        handle: created.key_handle,
        transient: true,
    })
}

/// The EK's public area and its certificate, checked to be for that key.
pub(crate) fn read(ctx: &mut Context) -> Result<Endorsement, TpmError> {
    let ek = load_ek(ctx)?;
    let public = ctx
        .read_public(ek.handle)
        .map_err(at("TPM2_ReadPublic of the EK"));
    ek.release(ctx);
    let (public, _, _) = public?;
    let Public::Rsa { unique, .. } = &public else {
        return Err(TpmError::Unexpected {
            what: "TPM2_ReadPublic of the EK",
            problem: "not an RSA key".into(),
        });
    };
    let modulus = unique.value().to_vec();
    let ek_public = tpm2b(
        "the EK's TPM2B_PUBLIC",
        &public
            .marshall()
            .map_err(at("marshalling the EK's TPMT_PUBLIC"))?,
    )?;

    let nv = ek::retrieve_ek_pubcert(ctx, AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048))
        .map_err(at(
        "reading the EK certificate from NV index 0x01c00002 (TPM2_NV_ReadPublic, TPM2_NV_Read)",
    ))?;
    let certificate = der_prefix("the EK certificate in NV index 0x01c00002", &nv)?.to_vec();
    // The certificate's SubjectPublicKeyInfo holds the modulus verbatim;
    // the verifier checks the certificate properly, this only catches a
    // TPM whose certificate is for another key.
    if modulus.is_empty() || !certificate.windows(modulus.len()).any(|w| w == modulus) {
        return Err(TpmError::Unexpected {
            what: "the EK certificate in NV index 0x01c00002",
            problem: "it does not certify the EK of the TCG default RSA template".into(),
        });
    }
    Ok(Endorsement {
        ek_certificate_der: certificate,
        ek_public,
    })
}

fn default_template() -> Result<Public, TpmError> {
    ek::create_ek_public_from_default_template(AsymmetricAlgorithm::Rsa, None)
        .map_err(at("building the TCG default RSA EK template"))
}

/// The persistent EK, when there is one and it is the template's key.
fn persistent_ek(ctx: &mut Context, template: &Public) -> Result<Option<KeyHandle>, TpmError> {
    let (handles, _) = ctx
        .execute_without_session(|ctx| {
            ctx.get_capability(CapabilityType::Handles, EK_PERSISTENT_HANDLE, 1)
        })
        .map_err(at("TPM2_GetCapability of the persistent handles"))?;
    let CapabilityData::Handles(handles) = handles else {
        return Ok(None);
    };
    let present = handles
        .into_inner()
        .first()
        .is_some_and(|h| u32::from(*h) == EK_PERSISTENT_HANDLE);
    if !present {
        return Ok(None);
    }
    let tpm_handle = TpmHandle::try_from(EK_PERSISTENT_HANDLE)
        .map_err(at("the persistent EK handle 0x81010001"))?;
    let handle = ctx
        .execute_without_session(|ctx| ctx.tr_from_tpm_public(tpm_handle))
        .map_err(at("Esys_TR_FromTPMPublic of the persistent EK 0x81010001"))?;
    let key = KeyHandle::from(handle);
    let (public, _, _) = ctx
        .read_public(key)
        .map_err(at("TPM2_ReadPublic of the persistent EK 0x81010001"))?;
    if same_template(template, &public) {
        Ok(Some(key))
    } else {
        tracing::debug!("the persistent key at 0x81010001 is not the TCG default RSA EK; making it from the template");
        let mut handle = handle;
        let _ = ctx.tr_close(&mut handle);
        Ok(None)
    }
}

/// Whether `key` is a key of `template`: all but the unique field equal.
fn same_template(template: &Public, key: &Public) -> bool {
    match (template, key) {
        (
            Public::Rsa {
                object_attributes: a1,
                name_hashing_algorithm: n1,
                auth_policy: p1,
                parameters: r1,
                ..
            },
            Public::Rsa {
                object_attributes: a2,
                name_hashing_algorithm: n2,
                auth_policy: p2,
                parameters: r2,
                ..
            },
        ) => a1 == a2 && n1 == n2 && p1 == p2 && r1 == r2,
        _ => false,
    }
}
