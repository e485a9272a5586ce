//! The TPM manufacturers' certificate authorities the verifier trusts
//! (`--tpm-ca FILE`, repeatable): PEM files of root and intermediate
//! certificates. A self-signed certificate is a root; any other one may
//! only be a step of a chain to a root.

use std::path::Path;

use x509_parser::prelude::{FromDer, X509Certificate};

/// Roots and intermediates, DER.
#[derive(Debug, Clone, Default)]
pub struct TpmRoots {
    pub roots: Vec<Vec<u8>>,
    pub intermediates: Vec<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TpmRootsError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: PEM block {index}: {reason}")]
    Pem {
        path: String,
        index: usize,
        reason: String,
    },
    #[error("{path}: no CERTIFICATE in it")]
    Empty { path: String },
}

impl TpmRoots {
    /// Reads every `CERTIFICATE` block of each file.
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<TpmRoots, TpmRootsError> {
        let mut out = TpmRoots::default();
        for path in paths {
            let path = path.as_ref();
            let shown = path.display().to_string();
            let text = std::fs::read(path).map_err(|source| TpmRootsError::Read {
                path: shown.clone(),
                source,
            })?;
            out.add_pem(&shown, &text)?;
        }
        Ok(out)
    }

    pub fn add_pem(&mut self, path: &str, text: &[u8]) -> Result<(), TpmRootsError> {
        let mut found = 0;
        for (index, pem) in x509_parser::pem::Pem::iter_from_buffer(text).enumerate() {
            let pem = pem.map_err(|e| TpmRootsError::Pem {
                path: path.to_string(),
                index,
                reason: e.to_string(),
            })?;
            if pem.label != "CERTIFICATE" {
                continue;
            }
            let (_, cert) =
                X509Certificate::from_der(&pem.contents).map_err(|e| TpmRootsError::Pem {
                    path: path.to_string(),
                    index,
                    reason: format!("not an X.509 certificate: {e}"),
                })?;
            if cert.subject() == cert.issuer() {
                self.roots.push(pem.contents.clone());
            } else {
                self.intermediates.push(pem.contents.clone());
            }
            found += 1;
        }
        if found == 0 {
            return Err(TpmRootsError::Empty {
                path: path.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_or_with_garbage_is_refused_with_its_name() {
        let mut roots = TpmRoots::default();
        let e = roots.add_pem("ca.pem", b"nothing here").unwrap_err();
        assert_eq!(e.to_string(), "ca.pem: no CERTIFICATE in it");
        let e = roots
            .add_pem(
                "ca.pem",
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("ca.pem: PEM block 0: not an X.509 certificate"),
            "{e}"
        );
    }
}
