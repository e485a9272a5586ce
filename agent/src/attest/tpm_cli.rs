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
    write_new_file(output, &sealed.to_bytes(), 0o600)
}

/// Writes `bytes` to `path` as a new file with `mode`: into a fresh file
/// beside it (created exclusively, never through a symlink), then renamed
/// over `path`. A symlink or a file someone else made at `path` is
/// replaced, never written through (root writes here, perhaps into a
/// directory other users can write to).
pub fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temp = dir.join(format!(
        ".{}.{}.{nanos:09}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp)
        .with_context(|| format!("creating {}", temp.display()))?;
    let written = file
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

/// Unseals the sealed secret in `input` and writes it to `output` (0600).
pub fn unseal_file(tpm: &Tpm, input: &Path, output: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let sealed = SealedSecret::from_bytes(&bytes).with_context(|| input.display().to_string())?;
    let secret = tpm
        .unseal(&sealed)
        .with_context(|| format!("unsealing {}", input.display()))?;
    write_new_file(output, &secret, 0o600)
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
        write_new_file(&out_dir.join(name), &bytes, 0o644)?;
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn a_secret_replaces_a_symlink_or_a_planted_file_and_never_writes_through_them() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("root-owned.conf");
        std::fs::write(&victim, b"keep me").unwrap();
        let out = dir.path().join("key.out");
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        write_new_file(&out, b"secret", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        let meta = std::fs::symlink_metadata(&out).unwrap();
        assert!(meta.is_file(), "the link itself was replaced");
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&out).unwrap(), b"secret");

        // A file planted at the path (with an open handle kept by its
        // planter) is replaced by a new inode: the planter's handle never
        // sees the secret.
        let planted = dir.path().join("planted");
        std::fs::write(&planted, b"").unwrap();
        let before = std::fs::metadata(&planted).unwrap().ino();
        write_new_file(&planted, b"secret", 0o600).unwrap();
        assert_ne!(std::fs::metadata(&planted).unwrap().ino(), before);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
