//! The agent's side of attestation, for the whole process: its TPM, the
//! one attestation key it makes (at the first session, then kept in
//! memory and reused across reconnects) and where the measurement logs
//! are. Every method blocks on the TPM: call them off the async runtime.

use std::sync::{Arc, Mutex};

use super::attestation_key::AttestationKey;
use super::endorsement::Endorsement;
use super::event_logs::{EventLogPaths, EventLogs};
use super::pcr_list::{PcrBank, PcrList};
use super::quote::QuoteAnswer;
use super::tpm_device::Tpm;
use super::tpm_error::TpmError;
use super::tpm_selection::TpmTarget;

/// What the agent enrolls with: the EK (certificate and public area) and
/// its AK's public area (TPM2B_PUBLIC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub endorsement: Endorsement,
    pub ak_public: Vec<u8>,
}

/// A quote and, when asked for, the logs that explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedQuote {
    pub quote: QuoteAnswer,
    pub logs: EventLogs,
}

#[derive(Clone)]
pub struct Attestor {
    inner: Arc<Inner>,
}

struct Inner {
    tpm: Tpm,
    logs: EventLogPaths,
    ak: Mutex<Option<AttestationKey>>,
    endorsement: Mutex<Option<Endorsement>>,
}

impl std::fmt::Debug for Attestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attestor")
            .field("tpm", &self.inner.tpm.target().to_string())
            .field("logs", &self.inner.logs)
            .finish_non_exhaustive()
    }
}

impl Attestor {
    pub fn new(tpm: Tpm, logs: EventLogPaths) -> Attestor {
        Attestor {
            inner: Arc::new(Inner {
                tpm,
                logs,
                ak: Mutex::new(None),
                endorsement: Mutex::new(None),
            }),
        }
    }

    pub fn target(&self) -> &TpmTarget {
        self.inner.tpm.target()
    }

    /// The EK and the AK's public area; makes the AK the first time.
    pub fn enrollment(&self) -> Result<Enrollment, TpmError> {
        let ak = self.attestation_key()?;
        let endorsement = {
            let mut cached = lock(&self.inner.endorsement);
            match &*cached {
                Some(e) => e.clone(),
                None => {
                    let e = self.inner.tpm.endorsement()?;
                    *cached = Some(e.clone());
                    e
                }
            }
        };
        Ok(Enrollment {
            endorsement,
            ak_public: ak.public,
        })
    }

    /// The control plane's challenge, answered with this process's AK.
    pub fn activate_credential(
        &self,
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        let ak = self.attestation_key()?;
        self.inner
            .tpm
            .activate_credential(&ak, id_object, encrypted_secret)
    }

    /// A quote by this process's AK and, when `want_event_logs`, the
    /// measurement logs.
    pub fn quote(
        &self,
        nonce: &[u8],
        bank: PcrBank,
        pcrs: &PcrList,
        want_event_logs: bool,
    ) -> Result<AttestedQuote, TpmError> {
        let ak = self.attestation_key()?;
        let quote = self.inner.tpm.quote(&ak, nonce, bank, pcrs)?;
        let logs = if want_event_logs {
            self.inner.logs.read()
        } else {
            EventLogs::default()
        };
        Ok(AttestedQuote { quote, logs })
    }

    /// This process's AK, made at the first call (a failed attempt is
    /// tried again at the next).
    fn attestation_key(&self) -> Result<AttestationKey, TpmError> {
        let mut ak = lock(&self.inner.ak);
        if let Some(ak) = &*ak {
            return Ok(ak.clone());
        }
        let made = self.inner.tpm.create_attestation_key()?;
        tracing::info!(tpm = %self.target(), ak = ?made, "made this process's TPM attestation key");
        *ak = Some(made.clone());
        Ok(made)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
