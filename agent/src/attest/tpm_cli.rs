//! `vigil-agent tpm ...`: sealing a file's secret to PCRs, unsealing it,
//! and writing a quote as files other tools read (tpm2_checkquote:
//! `quote.msg` TPMS_ATTEST, `quote.sig` TPMT_SIGNATURE, `ak.pub`
//! TPM2B_PUBLIC; `pcrs.bin` the values).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context};

use super::pcr_list::{PcrBank, PcrList};
use super::pcr_values::PcrValue;
use super::quote::MAX_NONCE_LEN;
use super::sealed_secret::SealedSecret;
use super::tpm_device::Tpm;
use super::tpm_selection::{TpmSelection, DEFAULT_TPM_DEVICE};

/// The TPM `--tpm` names, for a command that needs one.
pub fn command_tpm(selection: &TpmSelection) -> anyhow::Result<Tpm> {
    match selection.resolve() {
        Some(target) => Ok(Tpm::new(target)),
        None if *selection == TpmSelection::Off => {
            bail!("--tpm off: this command needs a TPM")
        }
        None => bail!(
            "no TPM: {DEFAULT_TPM_DEVICE} does not exist (name one with --tpm device:PATH or --tpm swtpm:host=H,port=P)"
        ),
    }
}

/// Seals the content of `input` to the sha256 `pcrs`' current values and
/// writes the sealed secret to `output`.
pub fn seal_file(tpm: &Tpm, pcrs: &PcrList, input: &Path, output: &Path) -> anyhow::Result<()> {
    let secret = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let sealed = tpm
        .seal(&secret, pcrs)
        .with_context(|| format!("sealing {} to sha256 PCRs {pcrs}", input.display()))?;
    std::fs::write(output, sealed.to_bytes())
        .with_context(|| format!("writing {}", output.display()))
}

/// Unseals the sealed secret in `input` and writes it to `output` (0600).
pub fn unseal_file(tpm: &Tpm, input: &Path, output: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let sealed = SealedSecret::from_bytes(&bytes).with_context(|| input.display().to_string())?;
    let secret = tpm
        .unseal(&sealed)
        .with_context(|| format!("unsealing {}", input.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(output)
        .with_context(|| format!("creating {}", output.display()))?;
    // An existing file keeps its mode through open(): set it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} 0600", output.display()))?;
    file.write_all(&secret)
        .with_context(|| format!("writing {}", output.display()))
}

/// Makes an AK, quotes `pcrs` with the nonce (hex) and writes `quote.msg`,
/// `quote.sig`, `ak.pub` and `pcrs.bin` into `out_dir`.
pub fn quote_to_dir(
    tpm: &Tpm,
    nonce_hex: &str,
    bank: PcrBank,
    pcrs: &PcrList,
    out_dir: &Path,
) -> anyhow::Result<()> {
    let nonce = hex::decode(nonce_hex.trim())
        .with_context(|| format!("--nonce {nonce_hex:?} is not hex"))?;
    if nonce.len() > MAX_NONCE_LEN {
        bail!(
            "--nonce: {} bytes; a quote takes at most {MAX_NONCE_LEN}",
            nonce.len()
        );
    }
    let ak = tpm
        .create_attestation_key()
        .context("making an attestation key")?;
    let answer = tpm
        .quote(&ak, &nonce, bank, pcrs)
        .with_context(|| format!("quoting {bank} PCRs {pcrs}"))?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    for (name, bytes) in [
        ("quote.msg", answer.attest),
        ("quote.sig", answer.signature),
        ("ak.pub", ak.public),
        ("pcrs.bin", encode_pcr_values(&answer.pcr_values)),
    ] {
        let path = out_dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `pcrs.bin`: for each value, its index (u32 BE), its length (u16 BE)
/// and the digest.
pub fn encode_pcr_values(values: &[PcrValue]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, digest) in values {
        out.extend_from_slice(&index.to_be_bytes());
        // Digests are at most 64 bytes.
        out.extend_from_slice(&(digest.len() as u16).to_be_bytes());
        out.extend_from_slice(digest);
    }
    out
}
