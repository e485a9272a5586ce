//! Checks against real TPM output: the files `fixtures/make-fixtures.sh`
//! makes with swtpm and tpm2-tools (an AK under the EK, quotes over
//! sha256:0-7 by RSASSA, RSAPSS and ECDSA AKs, the EK certificate and its
//! swtpm CA, and a second CA that did not issue it).

use crate::tpm2_tools_files::parse_pcrs_file;
use crate::*;

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(crate) struct Quote {
    pub ak: TpmPublic,
    pub msg: Vec<u8>,
    pub sig: Vec<u8>,
    pub pcrs: Vec<PcrBank>,
    pub nonce: Vec<u8>,
}

pub(crate) fn quote(suffix: &str) -> Quote {
    Quote {
        ak: TpmPublic::parse(&fixture(&format!("ak{suffix}.pub"))).unwrap(),
        msg: fixture(&format!("quote{suffix}.msg")),
        sig: fixture(&format!("quote{suffix}.sig")),
        pcrs: parse_pcrs_file(&fixture(&format!("quote{suffix}.pcrs"))).unwrap(),
        nonce: fixture("nonce.bin"),
    }
}

pub(crate) fn sha256_0_7() -> PcrSelection {
    PcrSelection::single(HashAlg::Sha256, &[0, 1, 2, 3, 4, 5, 6, 7]).unwrap()
}

impl Quote {
    pub(crate) fn verify(&self) -> Result<VerifiedQuote, QuoteError> {
        verify_quote(
            &self.ak,
            &self.msg,
            &self.sig,
            &self.nonce,
            &self.pcrs,
            &sha256_0_7(),
        )
    }
}

#[test]
fn the_ak_is_an_ak_and_its_name_is_the_tpms() {
    for (suffix, _) in QUOTES {
        let ak = TpmPublic::parse(&fixture(&format!("ak{suffix}.pub"))).unwrap();
        ak.check_attestation_key().unwrap();
        assert_eq!(
            ak.name(),
            fixture(&format!("ak{suffix}.name")),
            "ak{suffix}"
        );
        assert_eq!(ak.to_tpm2b(), fixture(&format!("ak{suffix}.pub")));
        let e = ak.check_endorsement_key().unwrap_err();
        assert_eq!(
            e.to_string(),
            "not an endorsement key: objectAttributes.decrypt is clear"
        );
    }
}

#[test]
fn the_ek_is_an_ek_and_not_an_ak() {
    let ek = TpmPublic::parse(&fixture("ek.pub")).unwrap();
    ek.check_endorsement_key().unwrap();
    assert_eq!(
        ek.check_attestation_key().unwrap_err().to_string(),
        "not an attestation key: objectAttributes.sign is clear"
    );
    assert_eq!(ek.key_type(), KeyType::Rsa);
    assert!(
        matches!(ek.public_key(), PublicKey::Rsa { exponent: 65537, ref modulus } if modulus.len() == 256)
    );
}

/// Every fixture quote: (suffix, the signature's hash).
pub(crate) const QUOTES: [(&str, HashAlg); 5] = [
    ("", HashAlg::Sha256),
    ("-rsapss", HashAlg::Sha256),
    ("-ecc", HashAlg::Sha256),
    ("-ecc-sha384", HashAlg::Sha384),
    ("-ecc384-sha256", HashAlg::Sha256),
];

#[test]
fn good_quotes_verify() {
    for (suffix, hash) in QUOTES {
        let q = quote(suffix);
        let v = q.verify().unwrap_or_else(|e| panic!("quote{suffix}: {e}"));
        assert_eq!(v.selection, sha256_0_7());
        assert_eq!(v.hash_alg, hash, "quote{suffix}");
        assert_eq!(v.pcr_digest.len(), hash.digest_size());
        assert!(v.safe);
        let attest = Attest::parse(&q.msg).unwrap();
        assert_eq!(attest.clock_info.clock, v.clock);
        assert_eq!(attest.to_bytes(), q.msg);
        assert_eq!(TpmtSignature::parse(&q.sig).unwrap().to_bytes(), q.sig);
    }
}

#[test]
fn every_bit_flip_in_message_or_signature_fails_signature() {
    for suffix in ["", "-ecc"] {
        let q = quote(suffix);
        for (which, len) in [("msg", q.msg.len()), ("sig", q.sig.len())] {
            for bit in 0..len * 8 {
                let mut msg = q.msg.clone();
                let mut sig = q.sig.clone();
                let target = if which == "msg" { &mut msg } else { &mut sig };
                target[bit / 8] ^= 1 << (bit % 8);
                let e =
                    verify_quote(&q.ak, &msg, &sig, &q.nonce, &q.pcrs, &sha256_0_7()).unwrap_err();
                // A flip in a length or type field makes the structure
                // unreadable before any signature check.
                assert!(
                    matches!(e.reason_code(), "signature" | "malformed"),
                    "quote{suffix} {which} bit {bit}: {e}"
                );
                // Flips inside the signature value itself (RSA's, or
                // ECDSA's r and s) are always "signature".
                let byte = bit / 8;
                let in_value = if suffix.is_empty() {
                    (6..262).contains(&byte)
                } else {
                    (6..38).contains(&byte) || (40..72).contains(&byte)
                };
                if which == "sig" && in_value {
                    assert_eq!(e.reason_code(), "signature", "{which} bit {bit}: {e}");
                }
            }
        }
    }
    // Flips in the message that keep it well-formed: all "signature".
    let q = quote("");
    let nonce_at = 4 + 2 + 2 + 34 + 2;
    for bit in nonce_at * 8..q.msg.len() * 8 {
        let mut msg = q.msg.clone();
        msg[bit / 8] ^= 1 << (bit % 8);
        if Attest::parse_any(&msg).is_ok() {
            let e =
                verify_quote(&q.ak, &msg, &q.sig, &q.nonce, &q.pcrs, &sha256_0_7()).unwrap_err();
            assert_eq!(e.reason_code(), "signature", "msg bit {bit}: {e}");
        }
    }
}

#[test]
fn a_wrong_nonce_is_nonce_mismatch() {
    let q = quote("");
    let mut nonce = q.nonce.clone();
    nonce[31] ^= 1;
    let e = verify_quote(&q.ak, &q.msg, &q.sig, &nonce, &q.pcrs, &sha256_0_7()).unwrap_err();
    assert_eq!(e.reason_code(), "nonce-mismatch", "{e}");
    let e = verify_quote(&q.ak, &q.msg, &q.sig, &nonce[..16], &q.pcrs, &sha256_0_7()).unwrap_err();
    assert_eq!(e.reason_code(), "nonce-mismatch", "{e}");
}

#[test]
fn changed_pcr_values_are_pcr_digest() {
    let q = quote("");
    for pcr in 0..8u8 {
        let mut pcrs = q.pcrs.clone();
        pcrs[0].values.get_mut(&pcr).unwrap()[0] ^= 0x80;
        let e = verify_quote(&q.ak, &q.msg, &q.sig, &q.nonce, &pcrs, &sha256_0_7()).unwrap_err();
        assert_eq!(e.reason_code(), "pcr-digest", "PCR {pcr}: {e}");
    }
}

#[test]
fn missing_pcr_values_are_pcr_missing() {
    let q = quote("");
    let mut pcrs = q.pcrs.clone();
    pcrs[0].values.remove(&4);
    let e = verify_quote(&q.ak, &q.msg, &q.sig, &q.nonce, &pcrs, &sha256_0_7()).unwrap_err();
    assert_eq!(e.reason_code(), "pcr-missing");
    assert_eq!(
        e.to_string(),
        "reported PCR values: sha256 PCR 4 is selected but has no reported value"
    );
    pcrs[0].values.insert(4, vec![0; 20]);
    let e = verify_quote(&q.ak, &q.msg, &q.sig, &q.nonce, &pcrs, &sha256_0_7()).unwrap_err();
    assert_eq!(e.reason_code(), "pcr-missing");
    let e = verify_quote(&q.ak, &q.msg, &q.sig, &q.nonce, &[], &sha256_0_7()).unwrap_err();
    assert_eq!(e.reason_code(), "pcr-missing");
}

#[test]
fn another_selection_is_pcr_selection() {
    let q = quote("");
    let requested = PcrSelection::single(HashAlg::Sha256, &[0, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let e = verify_quote(&q.ak, &q.msg, &q.sig, &q.nonce, &q.pcrs, &requested).unwrap_err();
    assert_eq!(e.reason_code(), "pcr-selection");
    assert_eq!(
        e.to_string(),
        "PCR selection: requested sha256:0,1,2,3,4,5,6,7,8, the quote covers sha256:0,1,2,3,4,5,6,7"
    );
}

#[test]
fn another_aks_quote_is_signature() {
    let q = quote("");
    let other = TpmPublic::parse(&fixture("ak-rsapss.pub")).unwrap();
    let e = verify_quote(&other, &q.msg, &q.sig, &q.nonce, &q.pcrs, &sha256_0_7()).unwrap_err();
    assert_eq!(e.reason_code(), "signature");
    assert_eq!(
        e.to_string(),
        "quote signature: the key signs with RSAPSS-sha256, the signature is RSASSA-sha256"
    );
    let ecc = TpmPublic::parse(&fixture("ak-ecc.pub")).unwrap();
    let e = verify_quote(&ecc, &q.msg, &q.sig, &q.nonce, &q.pcrs, &sha256_0_7()).unwrap_err();
    assert_eq!(e.reason_code(), "signature");
}

#[test]
fn the_ek_is_no_attestation_key() {
    let q = quote("");
    let ek = TpmPublic::parse(&fixture("ek.pub")).unwrap();
    let e = verify_quote(&ek, &q.msg, &q.sig, &q.nonce, &q.pcrs, &sha256_0_7()).unwrap_err();
    assert_eq!(e.reason_code(), "attestation-key");
}

#[test]
fn malformed_inputs_are_malformed() {
    let q = quote("");
    let mut long = q.msg.clone();
    long.push(0);
    let e = verify_quote(&q.ak, &long, &q.sig, &q.nonce, &q.pcrs, &sha256_0_7()).unwrap_err();
    assert_eq!(e.reason_code(), "malformed");
    assert_eq!(
        e.to_string(),
        "malformed quote: TPMS_ATTEST at byte 145: 1 trailing bytes after the end of the structure"
    );
    let e = verify_quote(
        &q.ak,
        &q.msg[..130],
        &q.sig,
        &q.nonce,
        &q.pcrs,
        &sha256_0_7(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "malformed quote: TPMS_ATTEST at byte 113: truncated: quote.pcrDigest needs 32 bytes, 17 left"
    );
    let e = verify_quote(
        &q.ak,
        &q.msg,
        &q.sig[..100],
        &q.nonce,
        &q.pcrs,
        &sha256_0_7(),
    )
    .unwrap_err();
    assert_eq!(e.reason_code(), "malformed");
}

#[test]
fn a_signed_non_quote_is_not_a_quote() {
    // The TPM signs only what it made; a software AK stands in to sign a
    // structure with the wrong magic and type.
    let (ak, sign) = software_ak();
    let q = quote("");
    let mut attest = Attest::parse(&q.msg).unwrap();
    let requested = sha256_0_7();
    attest.extra_data = q.nonce.clone();
    for (magic, typ, field) in [
        (0xff54_4348u32, 0x8018u16, "magic"),
        (0xff54_4347, 0x8017, "type"),
    ] {
        attest.magic = magic;
        attest.attest_type = typ;
        let mut bytes = attest.to_bytes();
        if typ != 0x8018 {
            // Another type's body: keep the bytes, they are not read.
            bytes = attest.to_bytes();
        }
        let sig = sign(&bytes);
        let e = verify_quote(&ak, &bytes, &sig, &q.nonce, &q.pcrs, &requested).unwrap_err();
        assert_eq!(e.reason_code(), "not-a-quote", "{e}");
        assert!(e.to_string().contains(field), "{e}");
    }
}

/// An RSA-2048 "AK" whose private key is in software (ring), for
/// structures no TPM would sign.
pub(crate) fn software_ak() -> (TpmPublic, impl Fn(&[u8]) -> Vec<u8>) {
    let der = fixture("test-rsa2048.der");
    let pair = ring::signature::RsaKeyPair::from_der(&der).unwrap();
    let modulus = pair.public().modulus_len();
    assert_eq!(modulus, 256);
    use ring::signature::KeyPair;
    let components: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public_key().into();
    let ak = TpmPublic::from_parts(
        HashAlg::Sha256,
        ObjectAttributes(
            ObjectAttributes::RESTRICTED
                | ObjectAttributes::SIGN
                | ObjectAttributes::FIXED_TPM
                | ObjectAttributes::FIXED_PARENT
                | ObjectAttributes::SENSITIVE_DATA_ORIGIN
                | ObjectAttributes::USER_WITH_AUTH,
        ),
        &[],
        PublicParameters::Rsa {
            symmetric: SymmetricDef::Null,
            scheme: AsymScheme::RsaSsa {
                hash: tpm_alg::SHA256,
            },
            key_bits: 2048,
            exponent: 0,
        },
        PublicUnique::Rsa {
            modulus: components.n,
        },
    )
    .unwrap();
    let sign = move |msg: &[u8]| {
        let mut sig = vec![0; 256];
        pair.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            msg,
            &mut sig,
        )
        .unwrap();
        TpmtSignature::RsaSsa {
            hash: HashAlg::Sha256,
            sig,
        }
        .to_bytes()
    };
    (ak, sign)
}

#[test]
fn a_prepared_key_accepts_and_refuses_exactly_what_ring_does() {
    for (suffix, _) in QUOTES {
        let q = quote(suffix);
        let prepared = PreparedKey::new(q.ak.clone());
        let check = |msg: &[u8], sig: &[u8], nonce: &[u8], pcrs: &[PcrBank]| {
            let slow = verify_quote(&q.ak, msg, sig, nonce, pcrs, &sha256_0_7());
            let fast = verify_quote_prepared(&prepared, msg, sig, nonce, pcrs, &sha256_0_7());
            assert_eq!(
                slow.as_ref().map_err(QuoteError::reason_code),
                fast.as_ref().map_err(QuoteError::reason_code),
                "quote{suffix}"
            );
            fast
        };
        check(&q.msg, &q.sig, &q.nonce, &q.pcrs).unwrap_or_else(|e| panic!("quote{suffix}: {e}"));
        // Every bit of the signature, and the message's bytes.
        for bit in 0..q.sig.len() * 8 {
            let mut sig = q.sig.clone();
            sig[bit / 8] ^= 1 << (bit % 8);
            assert!(check(&q.msg, &sig, &q.nonce, &q.pcrs).is_err());
        }
        for byte in 0..q.msg.len() {
            let mut msg = q.msg.clone();
            msg[byte] ^= 0x10;
            assert!(check(&msg, &q.sig, &q.nonce, &q.pcrs).is_err());
        }
        // Another AK's prepared key refuses this quote.
        let other_name = if suffix.is_empty() {
            "ak-rsapss.pub"
        } else {
            "ak.pub"
        };
        let other = PreparedKey::new(TpmPublic::parse(&fixture(other_name)).unwrap());
        assert!(
            verify_quote_prepared(&other, &q.msg, &q.sig, &q.nonce, &q.pcrs, &sha256_0_7())
                .is_err()
        );
    }
}
