use super::*;
use crate::fixtures_tests::fixture;

fn pem(name: &str) -> Vec<Vec<u8>> {
    pem_certificates(&fixture(name)).unwrap()
}

/// An hour after make-fixtures.sh made the certificates (not the wall
/// clock: the tests must pass on a machine whose clock is behind the one
/// that made them).
fn now() -> i64 {
    let der = fixture("ek.crt");
    let cert = x509_parser::parse_x509_certificate(&der).unwrap().1;
    cert.validity().not_before.timestamp() + 3600
}

#[test]
fn swtpms_ek_certificate_verifies_and_matches_its_ek() {
    let cert = EkCertificate::verify(
        &fixture("ek.crt"),
        &pem("ca-intermediate.pem"),
        &pem("ca-root.pem"),
        now(),
    )
    .unwrap();
    let ek = TpmPublic::parse(&fixture("ek.pub")).unwrap();
    assert!(cert.matches(&ek));
    assert_eq!(cert.chain().len(), 2);
    assert_eq!(cert.issuer(), "CN=swtpm-localca");
    assert_eq!(cert.tpm_info().model.as_deref(), Some("swtpm"));
    assert_eq!(cert.tpm_info().manufacturer.as_deref(), Some("id:00001014"));
    let ak = TpmPublic::parse(&fixture("ak.pub")).unwrap();
    assert!(!cert.matches(&ak));
    assert!(!cert.matches(&TpmPublic::parse(&fixture("ak-ecc.pub")).unwrap()));
}

#[test]
fn the_intermediate_may_be_the_configured_root() {
    EkCertificate::verify(&fixture("ek.crt"), &[], &pem("ca-intermediate.pem"), now()).unwrap();
}

#[test]
fn another_ca_is_untrusted() {
    let e = EkCertificate::verify(
        &fixture("ek.crt"),
        &pem("other-ca-intermediate.pem"),
        &pem("other-ca-root.pem"),
        now(),
    )
    .unwrap_err();
    assert_eq!(e.reason_code(), "untrusted-ca", "{e}");
    // The right intermediate, the wrong root.
    let e = EkCertificate::verify(
        &fixture("ek.crt"),
        &pem("ca-intermediate.pem"),
        &pem("other-ca-root.pem"),
        now(),
    )
    .unwrap_err();
    assert_eq!(e.reason_code(), "untrusted-ca", "{e}");
    assert_eq!(
        e.to_string(),
        "untrusted CA: no chain from \"CN=unknown\" (issued by \"CN=swtpm-localca\") to a configured root"
    );
    // No roots at all.
    let e = EkCertificate::verify(&fixture("ek.crt"), &pem("ca-intermediate.pem"), &[], now())
        .unwrap_err();
    assert_eq!(e.reason_code(), "untrusted-ca");
}

#[test]
fn a_tampered_certificate_is_signature() {
    let mut der = fixture("ek.crt");
    // A byte of the modulus, inside the signed part.
    let at = der
        .windows(3)
        .position(|w| w == [0x02, 0x82, 0x01])
        .unwrap()
        + 20;
    der[at] ^= 1;
    let e = EkCertificate::verify(
        &der,
        &pem("ca-intermediate.pem"),
        &pem("ca-root.pem"),
        now(),
    )
    .unwrap_err();
    assert_eq!(e.reason_code(), "signature", "{e}");
}

#[test]
fn validity_is_checked_at_the_time_given() {
    let der = fixture("ek.crt");
    let cert = x509_parser::parse_x509_certificate(&der).unwrap().1;
    let not_before = cert.validity().not_before.timestamp();
    let e = EkCertificate::verify(
        &fixture("ek.crt"),
        &pem("ca-intermediate.pem"),
        &pem("ca-root.pem"),
        not_before - 1,
    )
    .unwrap_err();
    assert_eq!(e.reason_code(), "not-yet-valid", "{e}");
    // swtpm's certificates run to 9999-12-31.
    let e = EkCertificate::verify(
        &fixture("ek.crt"),
        &pem("ca-intermediate.pem"),
        &pem("ca-root.pem"),
        253_402_300_800,
    )
    .unwrap_err();
    assert_eq!(e.reason_code(), "expired", "{e}");
}

#[test]
fn a_leaf_cannot_issue() {
    // The EK certificate offered as the AK's issuer: names do not match,
    // so no path; offered as a root for itself: not a CA.
    let ek = fixture("ek.crt");
    let e = EkCertificate::verify(&ek, &[], std::slice::from_ref(&ek), now()).unwrap_err();
    assert!(
        matches!(e.reason_code(), "untrusted-ca" | "not-a-ca"),
        "{e}"
    );
}

#[test]
fn the_vendors_own_intermediate_is_no_ek_certificate() {
    // It chains to the root and its RSA key would do, but it is a CA.
    let inter = pem("ca-intermediate.pem").remove(0);
    let e = EkCertificate::verify(&inter, &[], &pem("ca-root.pem"), now()).unwrap_err();
    assert_eq!(e.reason_code(), "not-an-ek-certificate", "{e}");
}

#[test]
fn der_prefix_cuts_nv_padding() {
    let der = fixture("ek.crt");
    let mut padded = der.clone();
    padded.extend_from_slice(&[0xff; 100]);
    assert_eq!(der_prefix(&padded), der.as_slice());
    let e = EkCertificate::verify(
        &padded,
        &pem("ca-intermediate.pem"),
        &pem("ca-root.pem"),
        now(),
    )
    .unwrap_err();
    assert_eq!(e.reason_code(), "malformed");
    assert!(
        e.to_string().contains("100 bytes after the certificate"),
        "{e}"
    );
    assert_eq!(der_prefix(&[0x30, 0x82, 0xff]), &[0x30, 0x82, 0xff]);
    assert_eq!(der_prefix(&[0x30, 0x01, 0x05, 0x00]), &[0x30, 0x01, 0x05]);
    assert_eq!(der_prefix(&[]), &[] as &[u8]);
}

#[test]
fn pem_helper_reads_blocks_and_refuses_junk() {
    assert_eq!(pem("ca-root.pem").len(), 1);
    let e = pem_certificates(b"nothing here").unwrap_err();
    assert_eq!(e.reason_code(), "malformed");
    let e = EkCertificate::verify(b"\x30\x03\x02\x01\x01", &[], &[], now()).unwrap_err();
    assert_eq!(e.reason_code(), "malformed");
}

#[test]
fn an_rsa_1024_key_is_key_type() {
    let e = EkCertificate::verify(
        &fixture("rsa1024-ek.crt"),
        &[],
        &[fixture("rsa1024-ek.crt")],
        now(),
    )
    .unwrap_err();
    assert_eq!(e.reason_code(), "key-type");
    assert_eq!(
        e.to_string(),
        "wrong key type: the EK certificate's key is RSA-1024 (RSA of 2048 bits or more, or ECC P-256/P-384, needed)"
    );
}

#[test]
fn an_issuer_that_is_not_a_ca_is_not_a_ca() {
    let e = EkCertificate::verify(
        &fixture("notca-leaf.crt"),
        &pem("notca-mid.pem"),
        &pem("notca-root.pem"),
        now(),
    )
    .unwrap_err();
    assert_eq!(e.reason_code(), "not-a-ca", "{e}");
    assert_eq!(
        e.to_string(),
        "not a CA: \"CN=notca-mid\" issues certificates but basicConstraints cA is false"
    );
}

/// A CA and a leaf it signs (ECDSA P-256), with `customize` applied to the
/// leaf's parameters: (leaf DER, root DER).
fn ca_and_leaf(customize: impl FnOnce(&mut rcgen::CertificateParams)) -> (Vec<u8>, Vec<u8>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "vendor-ek-ca");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "leaf");
    customize(&mut leaf);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    (leaf_cert.der().to_vec(), ca_cert.der().to_vec())
}

#[test]
fn a_tls_or_ca_certificate_from_the_ek_ca_is_not_an_ek_certificate() {
    use rcgen::{BasicConstraints, CustomExtension, ExtendedKeyUsagePurpose, IsCa};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // A TLS server certificate from the vendor's CA.
    let (leaf, root) = ca_and_leaf(|p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    });
    let e = EkCertificate::verify(&leaf, &[], &[root], now).unwrap_err();
    assert_eq!(e.reason_code(), "not-an-ek-certificate", "{e}");
    assert!(e.to_string().contains("TLS"), "{e}");
    // A CA certificate presented as an EK's.
    let (leaf, root) = ca_and_leaf(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained));
    let e = EkCertificate::verify(&leaf, &[], &[root], now).unwrap_err();
    assert_eq!(e.reason_code(), "not-an-ek-certificate", "{e}");
    // With tcg-kp-EKCertificate, or with no extended key usage at all
    // (some vendors issue none), it is taken.
    let (leaf, root) = ca_and_leaf(|p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![2, 23, 133, 8, 1])];
    });
    EkCertificate::verify(&leaf, &[], &[root], now).unwrap();
    let (leaf, root) = ca_and_leaf(|p| {
        p.custom_extensions = Vec::<CustomExtension>::new();
    });
    EkCertificate::verify(&leaf, &[], &[root], now).unwrap();
}
