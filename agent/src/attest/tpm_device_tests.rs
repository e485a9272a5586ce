//! `Tpm` against software TPMs (swtpm, manufactured with an RSA EK at
//! 0x81010001 and its certificate), checked with tpm2-tools and openssl.
//! They need no root; without swtpm or tpm2-tools they fail and say what
//! to install.

use std::path::Path;
use std::time::Instant;

use vigil_integration::swtpm::{require_swtpm, Swtpm, SwtpmCa, EK_CERT_NV_INDEX, EK_HANDLE};

use super::*;
use crate::attest::pcr_values::pcr_digest;
use crate::attest::tpm_cli;
use crate::attest::tpm_wire::split_tpm2b;
use crate::attest::{PcrBank, PcrList, SealedSecret, TpmError, TpmSelection};

/// A manufactured TPM and the agent's `Tpm` for it.
fn manufactured(test: &str) -> (SwtpmCa, Swtpm, Tpm) {
    require_swtpm(test);
    let ca = SwtpmCa::new();
    let swtpm = Swtpm::manufacture(&ca);
    let tpm = agent_tpm(&swtpm);
    (ca, swtpm, tpm)
}

/// The agent's `Tpm` for `swtpm`, as `--tpm` names it.
fn agent_tpm(swtpm: &Swtpm) -> Tpm {
    let selection: TpmSelection = swtpm.tcti().parse().unwrap();
    Tpm::new(selection.resolve().unwrap())
}

/// No transient object or session is left in the TPM (swtpm has no
/// resource manager: what the agent leaves stays).
fn assert_nothing_left(swtpm: &Swtpm, after: &str) {
    for what in [
        "handles-transient",
        "handles-loaded-session",
        "handles-saved-session",
    ] {
        let out = swtpm.tpm2("tpm2_getcap", &[what]);
        let listed = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(listed.is_empty(), "{what} after {after}: {listed}");
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// resetCount of a TPMS_ATTEST: magic(4) type(2) qualifiedSigner(TPM2B)
/// extraData(TPM2B) clock(8) resetCount(4) restartCount(4) safe(1).
fn reset_count(attest: &[u8]) -> u32 {
    assert_eq!(
        &attest[..4],
        [0xff, 0x54, 0x43, 0x47],
        "TPM_GENERATED_VALUE"
    );
    assert_eq!(&attest[4..6], [0x80, 0x18], "TPM_ST_ATTEST_QUOTE");
    let (_, rest) = split_tpm2b("qualifiedSigner", &attest[6..]).unwrap();
    let (_, rest) = split_tpm2b("extraData", rest).unwrap();
    u32::from_be_bytes(rest[8..12].try_into().unwrap())
}

fn extra_data(attest: &[u8]) -> Vec<u8> {
    let (_, rest) = split_tpm2b("qualifiedSigner", &attest[6..]).unwrap();
    split_tpm2b("extraData", rest).unwrap().0.to_vec()
}

/// The modulus of an RSA TPM2B_PUBLIC: its last TPM2B (unique), 256 bytes.
fn rsa_modulus(tpm2b_public: &[u8]) -> Vec<u8> {
    let n = tpm2b_public.len();
    assert_eq!(
        &tpm2b_public[n - 258..n - 256],
        [0x01, 0x00],
        "a 2048-bit unique"
    );
    tpm2b_public[n - 256..].to_vec()
}

fn comma_list(pcrs: &PcrList) -> String {
    pcrs.to_string()
}

#[test]
fn endorsement_is_the_persistent_ek_and_its_certificate() {
    let (_ca, swtpm, tpm) = manufactured("endorsement_is_the_persistent_ek_and_its_certificate");
    let endorsement = tpm.endorsement().unwrap();
    let dir = swtpm.dir();

    // Byte for byte what tpm2-tools reads from the persistent EK.
    swtpm.tpm2("tpm2_readpublic", &["-c", EK_HANDLE, "-o", "ek.pub"]);
    assert_eq!(
        endorsement.ek_public,
        std::fs::read(dir.join("ek.pub")).unwrap()
    );

    // The certificate: the NV content up to its DER length, for that key.
    swtpm.tpm2("tpm2_nvread", &[EK_CERT_NV_INDEX, "-o", "ek.nv"]);
    let nv = std::fs::read(dir.join("ek.nv")).unwrap();
    let cert = &endorsement.ek_certificate_der;
    assert!(nv.starts_with(cert) && cert.len() <= nv.len());
    write(dir, "ek.der", cert);
    let out = std::process::Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in"])
        .arg(dir.join("ek.der"))
        .args(["-noout", "-modulus"])
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl x509: {out:?}");
    let modulus = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        modulus,
        format!(
            "Modulus={}",
            hex::encode_upper(rsa_modulus(&endorsement.ek_public))
        )
    );
    assert_nothing_left(&swtpm, "endorsement");
}

#[test]
fn the_ek_made_from_the_template_is_the_persistent_one() {
    let (_ca, swtpm, tpm) = manufactured("the_ek_made_from_the_template_is_the_persistent_one");
    let persistent = tpm.endorsement().unwrap();
    // Without the persistent EK the agent makes it from the TCG template:
    // the same key (the endorsement seed decides it).
    swtpm.tpm2("tpm2_evictcontrol", &["-C", "o", "-c", EK_HANDLE]);
    let made = tpm.endorsement().unwrap();
    assert_eq!(made, persistent);
    // ... and an AK made under it is used the same way.
    let ak = tpm.create_attestation_key().unwrap();
    tpm.quote(&ak, b"n", PcrBank::Sha256, &"0".parse().unwrap())
        .unwrap();
    assert_nothing_left(&swtpm, "endorsement, AK and quote with a transient EK");
}

#[test]
fn a_quote_checks_out_with_tpm2_checkquote() {
    let (_ca, swtpm, tpm) = manufactured("a_quote_checks_out_with_tpm2_checkquote");
    let dir = swtpm.dir();
    swtpm.extend_pcr(3, &"ab".repeat(32));
    swtpm.extend_pcr(12, &"cd".repeat(32));
    // 16 PCRs: TPM2_PCR_Read answers 8 at a time.
    let pcrs: PcrList = "0-15".parse().unwrap();
    let nonce = hex::encode(b"fresh nonce from the verifier 01");
    let out_dir = dir.join("quote");
    tpm_cli::quote_to_dir(&tpm, &nonce, PcrBank::Sha256, &pcrs, &out_dir).unwrap();
    assert_nothing_left(&swtpm, "quote");

    // pcrs.bin: index (u32 BE), length (u16 BE), digest; as tpm2_pcrread
    // reads them.
    let encoded = std::fs::read(out_dir.join("pcrs.bin")).unwrap();
    assert_eq!(encoded.len(), 16 * (4 + 2 + 32));
    let mut values = Vec::new();
    for (i, record) in encoded.chunks(38).enumerate() {
        assert_eq!(record[..4], (i as u32).to_be_bytes());
        assert_eq!(record[4..6], [0, 32]);
        values.extend_from_slice(&record[6..]);
    }
    swtpm.tpm2(
        "tpm2_pcrread",
        &[
            &format!("sha256:{}", comma_list(&pcrs)),
            "-o",
            "pcrread.values",
        ],
    );
    assert_eq!(values, std::fs::read(dir.join("pcrread.values")).unwrap());
    let digests: Vec<&[u8]> = values.chunks(32).collect();
    write(
        dir,
        "quote.pcrs",
        &tpm2_tools_pcrs_file(PcrBank::Sha256, pcrs.indices(), &digests),
    );

    let mut changed = digests[5].to_vec();
    changed[0] ^= 1;
    let mut wrong = digests.clone();
    wrong[5] = &changed;
    write(
        dir,
        "wrong.pcrs",
        &tpm2_tools_pcrs_file(PcrBank::Sha256, pcrs.indices(), &wrong),
    );

    let quote = |path: &str| format!("quote/{path}");
    let check = |nonce: &str, pcrs_file: &str| {
        swtpm.try_tpm2(
            "tpm2_checkquote",
            &[
                "-u",
                &quote("ak.pub"),
                "-m",
                &quote("quote.msg"),
                "-s",
                &quote("quote.sig"),
                "-f",
                pcrs_file,
                "-g",
                "sha256",
                "-q",
                nonce,
            ],
        )
    };
    let good = check(&nonce, "quote.pcrs");
    assert!(
        good.status.success(),
        "tpm2_checkquote: {}",
        String::from_utf8_lossy(&good.stderr)
    );
    let other_nonce = hex::encode(b"another nonce");
    assert!(!check(&other_nonce, "quote.pcrs").status.success());
    assert!(!check(&nonce, "wrong.pcrs").status.success());
}

#[test]
fn a_quote_carries_the_nonce_and_the_quoted_values() {
    let (_ca, swtpm, tpm) = manufactured("a_quote_carries_the_nonce_and_the_quoted_values");
    let ak = tpm.create_attestation_key().unwrap();
    swtpm.extend_pcr(7, &"11".repeat(32));
    let pcrs: PcrList = "0-7".parse().unwrap();
    let started = Instant::now();
    let answer = tpm.quote(&ak, &[7; 32], PcrBank::Sha256, &pcrs).unwrap();
    eprintln!("one quote of 8 PCRs against swtpm: {:?}", started.elapsed());
    assert_eq!(extra_data(&answer.attest), [7; 32]);
    let indices: Vec<u32> = answer.pcr_values.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, (0..8).collect::<Vec<_>>());
    assert_ne!(answer.pcr_values[7].1, [0; 32]);
    // The quote's pcrDigest (the last TPM2B of a TPMS_ATTEST quote) is
    // the digest of the values.
    let digest = &answer.attest[answer.attest.len() - 32..];
    assert_eq!(digest, pcr_digest(&answer.pcr_values));
    // TPMT_SIGNATURE: RSASSA (0x0014) with sha256 (0x000b), 256 bytes.
    assert_eq!(answer.signature[..6], [0x00, 0x14, 0x00, 0x0b, 0x01, 0x00]);

    // What the TPM cannot do is an error that says so, and leaves nothing.
    let e = tpm
        .quote(&ak, &[0; 65], PcrBank::Sha256, &pcrs)
        .unwrap_err()
        .to_string();
    assert!(e.contains("the quote's nonce: 65 bytes; at most 64"), "{e}");
    // This TPM has the sha256 bank only.
    let e = tpm.quote(&ak, &[1], PcrBank::Sha1, &pcrs).unwrap_err();
    assert!(
        matches!(e, TpmError::NoPcrBank { .. }),
        "{e}: a quote of a bank the TPM lacks"
    );
    let broken = AttestationKey {
        public: ak.public.clone(),
        private: vec![0, 4, 1, 2, 3, 4],
    };
    let e = tpm
        .quote(&broken, &[1], PcrBank::Sha256, &pcrs)
        .unwrap_err()
        .to_string();
    assert!(e.contains("TPM2_Load of the AK"), "{e}");
    assert_nothing_left(&swtpm, "quotes that failed");
}

/// The PCR file tpm2_quote writes and tpm2_checkquote reads (tpm2-tools
/// 5.4, "serialized": its C structures as they lie in memory, little-
/// endian): TPML_PCR_SELECTION (count, 16 TPMS_PCR_SELECTION of hash,
/// sizeofSelect, pcrSelect[4] and a pad byte), the number of TPML_DIGEST
/// that follow, each a count and 8 TPM2B_DIGEST (size, 64-byte buffer).
/// tpm2_checkquote's `-f values -l` form fails in 5.4 ("Failed to hash
/// PCR values related to quote").
fn tpm2_tools_pcrs_file(bank: PcrBank, indices: &[u32], digests: &[&[u8]]) -> Vec<u8> {
    let mut out = 1u32.to_le_bytes().to_vec();
    let mut select = [0u8; 4];
    for i in indices {
        select[(*i / 8) as usize] |= 1 << (i % 8);
    }
    out.extend_from_slice(&bank.alg_id().to_le_bytes());
    out.push(3);
    out.extend_from_slice(&select);
    out.push(0);
    out.resize(4 + 16 * 8, 0);
    let lists: Vec<&[&[u8]]> = digests.chunks(8).collect();
    out.extend_from_slice(&(lists.len() as u32).to_le_bytes());
    for list in lists {
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for slot in 0..8 {
            let digest = list.get(slot).copied().unwrap_or_default();
            out.extend_from_slice(&(digest.len() as u16).to_le_bytes());
            let mut buffer = [0u8; 64];
            buffer[..digest.len()].copy_from_slice(digest);
            out.extend_from_slice(&buffer);
        }
    }
    out
}

/// tpm2-tools' credential file: 0xBADCC0DE, version 1, TPM2B_ID_OBJECT,
/// TPM2B_ENCRYPTED_SECRET.
fn read_credential(path: &Path) -> (Vec<u8>, Vec<u8>) {
    let file = std::fs::read(path).unwrap();
    assert_eq!(file[..4], 0xBADC_C0DEu32.to_be_bytes(), "tpm2-tools magic");
    assert_eq!(file[4..8], 1u32.to_be_bytes(), "version");
    let (id_object, rest) = split_tpm2b("TPM2B_ID_OBJECT", &file[8..]).unwrap();
    let (secret, rest) = split_tpm2b("TPM2B_ENCRYPTED_SECRET", rest).unwrap();
    assert!(rest.is_empty());
    let frame = |b: &[u8]| crate::attest::tpm_wire::tpm2b("x", b).unwrap();
    (frame(id_object), frame(secret))
}

#[test]
fn activate_credential_recovers_the_secret_made_for_this_ak_only() {
    let (_ca, swtpm, tpm) =
        manufactured("activate_credential_recovers_the_secret_made_for_this_ak_only");
    let dir = swtpm.dir();
    let endorsement = tpm.endorsement().unwrap();
    write(dir, "ek.pub", &endorsement.ek_public);
    let ak = tpm.create_attestation_key().unwrap();
    let secret = b"the control plane's 32-byte key!";
    write(dir, "secret.bin", secret);
    let make = |name: &[u8], out: &str| {
        swtpm.tpm2(
            "tpm2_makecredential",
            &[
                "--tcti",
                "none",
                "-e",
                "ek.pub",
                "-s",
                "secret.bin",
                "-n",
                &hex::encode(name),
                "-o",
                out,
            ],
        );
        read_credential(&dir.join(out))
    };
    let (id_object, encrypted) = make(&ak.name().unwrap(), "cred.out");
    let started = Instant::now();
    let recovered = tpm
        .activate_credential(&ak, &id_object, &encrypted)
        .unwrap();
    eprintln!(
        "one credential activation against swtpm: {:?}",
        started.elapsed()
    );
    assert_eq!(recovered, secret);
    assert_nothing_left(&swtpm, "activate_credential");

    // The same credential does not open with another AK ...
    let other = tpm.create_attestation_key().unwrap();
    assert_ne!(other.name().unwrap(), ak.name().unwrap());
    let e = tpm
        .activate_credential(&other, &id_object, &encrypted)
        .unwrap_err()
        .to_string();
    assert!(e.contains("TPM2_ActivateCredential"), "{e}");
    // ... nor one made for another AK's name with this one.
    let (id_other, encrypted_other) = make(&other.name().unwrap(), "cred-other.out");
    assert!(tpm
        .activate_credential(&ak, &id_other, &encrypted_other)
        .is_err());
    // Malformed challenges are errors, never panics.
    for (id, enc) in [
        (&[][..], &encrypted[..]),
        (&id_object[..], &[0, 9, 1][..]),
        (&id_object[..5], &encrypted[..]),
        (&[0, 0][..], &[0, 0][..]),
    ] {
        assert!(tpm.activate_credential(&ak, id, enc).is_err());
    }
    assert_nothing_left(&swtpm, "activations that failed");
}

#[test]
fn a_sealed_secret_unseals_until_a_pcr_changes() {
    let (_ca, swtpm, tpm) = manufactured("a_sealed_secret_unseals_until_a_pcr_changes");
    let dir = swtpm.dir();
    swtpm.extend_pcr(7, &"22".repeat(32));
    let pcrs: PcrList = "0,1,2,3,4,5,6,7".parse().unwrap();
    let secret = b"disk key: 0123456789abcdef";
    write(dir, "key.bin", secret);
    tpm_cli::seal_file(&tpm, &pcrs, &dir.join("key.bin"), &dir.join("key.sealed")).unwrap();
    let sealed = SealedSecret::from_bytes(&std::fs::read(dir.join("key.sealed")).unwrap()).unwrap();
    assert_eq!(sealed.pcrs, pcrs);
    assert_eq!(tpm.unseal(&sealed).unwrap(), secret);
    tpm_cli::unseal_file(&tpm, &dir.join("key.sealed"), &dir.join("key.out")).unwrap();
    assert_eq!(std::fs::read(dir.join("key.out")).unwrap(), secret);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("key.out"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A PCR it is not sealed to may change.
    swtpm.extend_pcr(9, &"33".repeat(32));
    assert_eq!(tpm.unseal(&sealed).unwrap(), secret);
    assert_nothing_left(&swtpm, "seal and unseal");

    swtpm.extend_pcr(7, &"44".repeat(32));
    let e = tpm.unseal(&sealed).unwrap_err();
    assert!(matches!(e, TpmError::PcrsChanged { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("PCR values differ from those the secret was sealed to"),
        "{e}"
    );
    let e =
        tpm_cli::unseal_file(&tpm, &dir.join("key.sealed"), &dir.join("key.again")).unwrap_err();
    assert!(format!("{e:#}").contains("PCR values differ"), "{e:#}");
    assert_nothing_left(&swtpm, "an unseal that failed");

    // What a TPM cannot seal.
    for secret in [&[][..], &[0; 129][..]] {
        let e = tpm.seal(secret, &pcrs).unwrap_err().to_string();
        assert!(e.contains("a TPM seals 1 to 128"), "{e}");
    }
    // Another TPM cannot unseal it.
    let (_ca2, other_swtpm, other) = manufactured("a_sealed_secret_unseals_until_a_pcr_changes");
    let e = other.unseal(&sealed).unwrap_err().to_string();
    assert!(e.contains("TPM2_Load of the sealed object"), "{e}");
    assert_nothing_left(&other_swtpm, "an unseal in another TPM");
}

#[test]
fn quotes_go_on_after_a_tpm_reset_with_a_higher_reset_count() {
    let (_ca, mut swtpm, tpm) =
        manufactured("quotes_go_on_after_a_tpm_reset_with_a_higher_reset_count");
    let ak = tpm.create_attestation_key().unwrap();
    let pcrs: PcrList = "0-7".parse().unwrap();
    swtpm.extend_pcr(0, &"55".repeat(32));
    let before = tpm.quote(&ak, b"before", PcrBank::Sha256, &pcrs).unwrap();
    assert_ne!(before.pcr_values[0].1, [0; 32]);

    swtpm.restart();
    // The same AK, loaded again under the persistent EK of the reset TPM.
    let tpm = agent_tpm(&swtpm);
    let after = tpm.quote(&ak, b"after", PcrBank::Sha256, &pcrs).unwrap();
    assert!(
        reset_count(&after.attest) > reset_count(&before.attest),
        "resetCount {} then {}",
        reset_count(&before.attest),
        reset_count(&after.attest)
    );
    assert_eq!(after.pcr_values[0].1, [0; 32], "PCRs reset");
    assert_nothing_left(&swtpm, "a quote after a reset");
}

#[test]
fn a_tpm_that_is_not_there_is_an_error_that_names_it() {
    let tpm = Tpm::new(TpmTarget::Device("/nonexistent/tpmrm0".into()));
    let e = tpm.endorsement().unwrap_err().to_string();
    assert_eq!(
        e,
        "opening the TPM at device:/nonexistent/tpmrm0: No such file or directory (os error 2)"
    );
    // Nothing listens on port 1.
    let tpm = Tpm::new(TpmTarget::Swtpm {
        host: "127.0.0.1".into(),
        port: 1,
    });
    let e = tpm.endorsement().unwrap_err().to_string();
    assert!(
        e.starts_with("opening the TPM at swtpm:host=127.0.0.1,port=1: "),
        "{e}"
    );
}
