//! The software TPM harness itself: a manufactured TPM has its EK and EK
//! certificate, and a restart is a TPM reset.

use vigil_integration::swtpm::{require_swtpm, Swtpm, SwtpmCa, EK_CERT_NV_INDEX, EK_HANDLE};

#[test]
fn a_manufactured_tpm_has_an_ek_and_its_certificate_and_restarts() {
    require_swtpm("swtpm_harness");
    let ca = SwtpmCa::new();
    let mut tpm = Swtpm::manufacture(&ca);
    assert!(ca.root_pem_path().is_file());
    tpm.tpm2("tpm2_readpublic", &["-c", EK_HANDLE, "-o", "ek.pub"]);
    tpm.tpm2("tpm2_nvread", &[EK_CERT_NV_INDEX, "-o", "ek.crt"]);
    let cert = std::fs::read(tpm.dir().join("ek.crt")).unwrap();
    assert_eq!(cert.first(), Some(&0x30), "the EK certificate is DER");
    let reset_count = |tpm: &Swtpm| {
        let out = tpm.tpm2("tpm2_readclock", &[]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines()
            .find_map(|l| l.trim().strip_prefix("reset_count: "))
            .unwrap_or_else(|| panic!("no reset_count in {text}"))
            .parse::<u64>()
            .unwrap()
    };
    let before = reset_count(&tpm);
    tpm.restart();
    assert_eq!(reset_count(&tpm), before + 1);
}
