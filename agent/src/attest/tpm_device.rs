//! The host's TPM 2.0, through tpm2-tss's ESAPI (tss-esapi): blocking
//! calls, one at a time.
//!
//! Each call opens its own connection (a tss-esapi `Context`) and closes
//! it when done. A TPM without a resource manager (swtpm, `/dev/tpm0`)
//! keeps the transient objects and sessions a client left behind, and
//! swtpm serves one connection at a time: every call flushes what it
//! made, on error paths too (explicitly, and again when the `Context` is
//! dropped, which flushes the handles it still tracks), and holds no
//! connection between calls.

use std::str::FromStr;
use std::sync::{Arc, Mutex};

use tss_esapi::handles::ObjectHandle;
use tss_esapi::tcti_ldr::{DeviceConfig, TctiNameConf};
use tss_esapi::Context;

use super::attestation_key::{self, AttestationKey};
use super::endorsement::{self, Endorsement};
use super::pcr_list::{PcrBank, PcrList};
use super::quote::{self, QuoteAnswer};
use super::sealed_secret::SealedSecret;
use super::sealing;
use super::tpm_error::TpmError;
use super::tpm_selection::TpmTarget;

/// A TPM the agent talks to. Clones share one lock: one operation at a
/// time, whoever asks.
#[derive(Debug, Clone)]
pub struct Tpm {
    target: TpmTarget,
    lock: Arc<Mutex<()>>,
}

impl Tpm {
    pub fn new(target: TpmTarget) -> Tpm {
        Tpm {
            target,
            lock: Arc::new(Mutex::new(())),
        }
    }

    pub fn target(&self) -> &TpmTarget {
        &self.target
    }

    /// The RSA EK's certificate (NV 0x01c00002) and public area.
    pub fn endorsement(&self) -> Result<Endorsement, TpmError> {
        self.with_context(endorsement::read)
    }

    /// A new attestation key under the EK (restricted RSA-2048 signing
    /// key, RSASSA-SHA256), to keep and pass to the calls below.
    pub fn create_attestation_key(&self) -> Result<AttestationKey, TpmError> {
        self.with_context(|ctx| {
            let ek = endorsement::load_ek(ctx)?;
            let created = attestation_key::create(ctx, ek.handle);
            ek.release(ctx);
            created
        })
    }

    /// TPM2_ActivateCredential: the secret the control plane made for
    /// this EK and `ak`'s name (`id_object` a TPM2B_ID_OBJECT,
    /// `encrypted_secret` a TPM2B_ENCRYPTED_SECRET, each with its size).
    pub fn activate_credential(
        &self,
        ak: &AttestationKey,
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        self.with_context(|ctx| {
            attestation_key::activate_credential(ctx, ak, id_object, encrypted_secret)
        })
    }

    /// TPM2_Quote of `pcrs` in `bank`, signed by `ak`, with `nonce` as
    /// qualifyingData, and the values of those PCRs.
    pub fn quote(
        &self,
        ak: &AttestationKey,
        nonce: &[u8],
        bank: PcrBank,
        pcrs: &PcrList,
    ) -> Result<QuoteAnswer, TpmError> {
        self.with_context(|ctx| quote::quote(ctx, ak, nonce, bank, pcrs))
    }

    /// Seals `secret` (at most 128 bytes) to the current values of the
    /// sha256 `pcrs`.
    pub fn seal(&self, secret: &[u8], pcrs: &PcrList) -> Result<SealedSecret, TpmError> {
        self.with_context(|ctx| sealing::seal(ctx, secret, pcrs))
    }

    /// The secret, while the PCRs hold the values it was sealed to.
    pub fn unseal(&self, sealed: &SealedSecret) -> Result<Vec<u8>, TpmError> {
        self.with_context(|ctx| sealing::unseal(ctx, sealed))
    }

    /// Runs `f` on a new connection, alone, and closes it.
    fn with_context<T>(
        &self,
        f: impl FnOnce(&mut Context) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        // A panic elsewhere while holding the lock leaves nothing to repair.
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let tcti = tcti(&self.target)?;
        let mut context = Context::new(tcti).map_err(|tss| TpmError::Open {
            target: self.target.to_string(),
            tss,
        })?;
        let out = f(&mut context);
        // Dropping the context flushes whatever it still tracks and
        // closes the connection.
        drop(context);
        out
    }
}

/// The TCTI configuration of a target.
fn tcti(target: &TpmTarget) -> Result<TctiNameConf, TpmError> {
    match target {
        TpmTarget::Device(path) => {
            // tpm2-tss says only "IO error" (0xa000a) for a device file
            // it cannot open: ask the OS first, for its reason.
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|io| TpmError::Device {
                    target: target.to_string(),
                    io,
                })?;
            let path = path.to_str().ok_or_else(|| TpmError::Invalid {
                what: "the TPM device path",
                problem: format!("{} is not UTF-8", path.display()),
            })?;
            DeviceConfig::from_str(path)
                .map(TctiNameConf::Device)
                .map_err(|tss| TpmError::Open {
                    target: target.to_string(),
                    tss,
                })
        }
        TpmTarget::Swtpm { .. } => {
            TctiNameConf::from_str(&target.to_string()).map_err(|tss| TpmError::Open {
                target: target.to_string(),
                tss,
            })
        }
    }
}

/// Flushes a transient object or session this call made; a failure is
/// logged (the context's drop tries again).
pub(crate) fn flush(ctx: &mut Context, handle: impl Into<ObjectHandle>, what: &str) {
    if let Err(e) = ctx.flush_context(handle.into()) {
        tracing::warn!(error = %e, "TPM2_FlushContext of the {what} failed");
    }
}

#[cfg(test)]
#[path = "tpm_device_tests.rs"]
mod tests;
