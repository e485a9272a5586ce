//! An agent's half of attestation done with tpm2-tools against a software
//! TPM, so that tests can speak for an agent (honestly, or tampering with
//! what it sends) and so that quotes made by tpm2-tools are checked by
//! vigil's verifier (interop).

use vigil_proto::agent::v1 as pb;

use crate::swtpm::{Swtpm, EK_CERT_NV_INDEX, EK_HANDLE};

/// Reads the EK certificate (cut to its DER length) and the EK public, and
/// makes a new AK (`ak.ctx`, `ak.pub`, `ak.priv` in the TPM's directory).
pub fn tools_enrollment(tpm: &Swtpm) -> pb::TpmEnrollment {
    tpm.tpm2("tpm2_nvread", &[EK_CERT_NV_INDEX, "-o", "ek.crt"]);
    tpm.tpm2("tpm2_readpublic", &["-c", EK_HANDLE, "-o", "ek.pub"]);
    tpm.tpm2(
        "tpm2_createak",
        &[
            "-C", EK_HANDLE, "-c", "ak.ctx", "-G", "rsa", "-g", "sha256", "-s", "rsassa", "-u",
            "ak.pub", "-n", "ak.name", "-r", "ak.priv",
        ],
    );
    let read = |f: &str| std::fs::read(tpm.dir().join(f)).unwrap();
    let cert = read("ek.crt");
    pb::TpmEnrollment {
        ek_certificate: vigil_attestation::der_prefix(&cert).to_vec(),
        ek_public: read("ek.pub"),
        ak_public: read("ak.pub"),
    }
}

/// TPM2_ActivateCredential of `challenge` with the AK made by
/// [`tools_enrollment`] and the EK (a PolicySecret session); Err with
/// tpm2-tools' output when the TPM refuses.
pub fn tools_activate(tpm: &Swtpm, challenge: &pb::CredentialChallenge) -> Result<Vec<u8>, String> {
    let file = vigil_attestation::Credential {
        id_object: challenge.id_object.clone(),
        encrypted_secret: challenge.encrypted_secret.clone(),
    }
    .to_tpm2_tools_file();
    std::fs::write(tpm.dir().join("cred.in"), file).unwrap();
    // One shell, so the policy session lives across the three commands.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tpm2_startauthsession --policy-session -S s.ctx && tpm2_policysecret -S s.ctx -c e && \
             tpm2_activatecredential -c ak.ctx -C {EK_HANDLE} -i cred.in -o secret.out -P session:s.ctx; \
             rc=$?; tpm2_flushcontext s.ctx; tpm2_flushcontext -t; exit $rc"
        ))
        .current_dir(tpm.dir())
        .env("TPM2TOOLS_TCTI", tpm.tcti())
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(std::fs::read(tpm.dir().join("secret.out")).unwrap())
}

/// A quote by `tpm2_quote` answering `request`, with the PCR values it
/// wrote (its `-o` file, read back with vigil's reader).
pub fn tools_quote(tpm: &Swtpm, request: &pb::AttestRequest) -> pb::Quote {
    let pcrs = request
        .pcrs
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let nonce = hex::encode(&request.nonce);
    tpm.tpm2(
        "tpm2_quote",
        &[
            "-c",
            "ak.ctx",
            "-l",
            &format!("sha256:{pcrs}"),
            "-q",
            &nonce,
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-o",
            "quote.pcrs",
            "-g",
            "sha256",
        ],
    );
    let read = |f: &str| std::fs::read(tpm.dir().join(f)).unwrap();
    let banks = vigil_attestation::tpm2_tools_files::parse_pcrs_file(&read("quote.pcrs"))
        .expect("tpm2_quote's PCR file");
    pb::Quote {
        nonce: request.nonce.clone(),
        attest: read("quote.msg"),
        signature: read("quote.sig"),
        pcrs: banks
            .into_iter()
            .map(|b| pb::PcrBankValues {
                hash_alg: u32::from(b.hash_alg.tpm_id()),
                values: b
                    .values
                    .into_iter()
                    .map(|(index, digest)| pb::PcrValue {
                        index: u32::from(index),
                        digest,
                    })
                    .collect(),
            })
            .collect(),
        boot_event_log: Vec::new(),
        ima_log: Vec::new(),
    }
}
